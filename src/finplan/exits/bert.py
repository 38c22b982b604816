"""B-BERT: a tiny BERT-style encoder with an exit after each encoder layer (DeeBERT's layout).

Plain torch (no transformers needed): token + position embeddings, post-LayerNorm encoder
layers that each read the int64 ``attention_mask`` input, and a classifier on the first ([CLS])
token. The exporter computes the mask's additive bias once (every layer's is the same
expression), so what crosses each cut beside the hidden state is that float bias (N x 1 x 1 x T):
the contract's live sets find it. The exits are put on by ``attach_exits`` by submodule name, exactly as a user's
own model would get them; the last layer's exit is the model's own classifier.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from finplan import textdata
from finplan.exits.attach import AttachedExits, attach_exits

DEFAULT_SHAPE = (textdata.SEQ_LEN,)
DEFAULT_WIDTHS = (32, 4, 2)  # hidden width, encoder layers, attention heads
MASKED = -1e4  # added to the attention scores of padding (exp underflows to 0 in float32)


class EncoderLayer(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.norm1 = nn.LayerNorm(width)
        self.ffn = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
        self.norm2 = nn.LayerNorm(width)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        batch, length, width = hidden.shape
        head_width = width // self.heads
        q, k, v = self.qkv(hidden).reshape(batch, length, 3, self.heads, head_width).permute(2, 0, 3, 1, 4)
        # each layer derives its bias from the mask; the exporter shares the identical expression
        bias = (1.0 - attention_mask[:, None, None, :].to(hidden.dtype)) * MASKED
        scores = q @ k.transpose(-1, -2) / math.sqrt(head_width) + bias
        attended = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(batch, length, width)
        hidden = self.norm1(hidden + self.out(attended))
        return self.norm2(hidden + self.ffn(hidden))


class TinyBert(nn.Module):
    """``forward(input_ids, attention_mask) -> logits`` (N, num_classes)."""

    def __init__(self, vocab_size: int, seq_len: int, width: int, layers: int, heads: int, num_classes: int):
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, width)
        self.positions = nn.Parameter(torch.randn(1, seq_len, width) * 0.02)
        self.norm = nn.LayerNorm(width)
        self.layers = nn.ModuleList(EncoderLayer(width, heads) for _ in range(layers))
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.norm(self.tokens(input_ids) + self.positions)
        for layer in self.layers:
            hidden = layer(hidden, attention_mask)
        return self.classifier(hidden[:, 0])


def b_bert(input_shape: Sequence[int] = DEFAULT_SHAPE, num_classes: int = textdata.NUM_CLASSES,
           channels: Sequence[int] | None = None) -> AttachedExits:
    """B-BERT over ``input_shape`` = (sequence length,) int64 token ids and mask; ``channels`` =
    (hidden width, encoder layers, attention heads), default 32, 4, 2; exits after every layer."""
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 1 or shape[0] < textdata.SEQ_LEN // 4:
        raise ValueError(f"input shape {'x'.join(map(str, shape))} must be one sequence length (e.g. 16) of at "
                         f"least {textdata.SEQ_LEN // 4}")
    widths = DEFAULT_WIDTHS if channels is None else tuple(int(c) for c in channels)
    if len(widths) != 3 or any(c <= 0 for c in widths) or widths[0] % widths[2] or widths[1] < 2:
        raise ValueError(f"b-bert takes 3 positive widths (hidden width, layers >= 2, heads; the width a multiple "
                         f"of the heads; default {','.join(map(str, DEFAULT_WIDTHS))}), got {','.join(map(str, widths))}")
    width, layers, heads = widths
    model = TinyBert(textdata.VOCAB_SIZE, shape[0], width, layers, heads, num_classes)
    example = textdata.keywords(2, seed=0, seq_len=shape[0])
    branchy = attach_exits(model, after=[f"layers.{i}" for i in range(layers - 1)],
                           example_input={name: torch.from_numpy(example[name]) for name in textdata.INPUT_NAMES})
    branchy.spec = {"model": "b-bert", "channels": list(widths)}
    return branchy
