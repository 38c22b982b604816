"""``keywords``: a text-like classification task that ships with finplan as code (numpy only, no download).

Each sample is a token sequence of varying length, padded to ``seq_len``, with an attention mask::

    input_ids       int64 [N, seq_len]   CLS, then tokens, then PAD (0) up to seq_len
    attention_mask  int64 [N, seq_len]   1 on CLS and the tokens, 0 on padding
    y               int64 [N]            the class

The class says which keywords occur: with ``KEYWORDS`` = (A, B), class = [A occurs] + 2 * [B
occurs], so 4 classes; but a keyword right after the ``NOT`` token does not count. Every other
token is filler drawn from the rest of the vocabulary. About half of the samples carry a negated
keyword (NOT then a keyword the class does not have): telling it apart takes the token before,
so they are the harder inputs that a shallow exit is less sure of. The same seed gives the same
arrays, byte for byte; this module needs only numpy, so the profiler and runtime side can make
and read the data without torch.
"""
from __future__ import annotations

import io
import os

import numpy as np

PAD, CLS = 0, 1
KEYWORDS = (2, 3)
NOT = 4                  # a keyword right after it does not count
FIRST_FILLER = 5
VOCAB_SIZE = 32
SEQ_LEN = 16
NUM_CLASSES = 2 ** len(KEYWORDS)
INPUT_NAMES = ("input_ids", "attention_mask")


def keywords(count: int, *, seed: int = 0, seq_len: int = SEQ_LEN, vocab_size: int = VOCAB_SIZE
             ) -> dict[str, np.ndarray]:
    """``count`` samples of the keyword task: {"input_ids", "attention_mask", "y"}.

    Raises ValueError when ``seq_len`` cannot hold CLS and every keyword or ``vocab_size`` leaves
    no filler tokens.
    """
    if count < 1:
        raise ValueError(f"count is {count}; expected at least one sample")
    if seq_len < len(KEYWORDS) + 4:
        raise ValueError(f"seq_len is {seq_len}; expected at least {len(KEYWORDS) + 4}")
    if vocab_size <= FIRST_FILLER + 1:
        raise ValueError(f"vocab_size is {vocab_size}; expected more than {FIRST_FILLER + 1}")
    rng = np.random.default_rng(seed)
    ids = np.zeros((count, seq_len), dtype=np.int64)
    y = rng.integers(0, NUM_CLASSES, size=count).astype(np.int64)
    lengths = rng.integers(len(KEYWORDS) + 2, seq_len + 1, size=count)  # CLS included
    for row in range(count):
        length = int(lengths[row])
        body = rng.integers(FIRST_FILLER, vocab_size, size=length - 1)
        # which keywords this class needs, each at a random position of the body
        wanted = [kw for bit, kw in enumerate(KEYWORDS) if (y[row] >> bit) & 1]
        absent = [kw for kw in KEYWORDS if kw not in wanted]
        # a negated absent keyword takes two adjacent positions; the wanted ones any others
        negate = bool(absent) and length - 1 >= len(wanted) + 2 and rng.random() < 0.5
        slots = np.arange(length - 1)
        if negate:
            start = int(rng.integers(0, length - 2))
            body[start], body[start + 1] = NOT, rng.choice(absent)
            slots = slots[(slots != start) & (slots != start + 1)]
        if wanted:
            positions = rng.choice(slots, size=len(wanted), replace=False)
            body[positions] = wanted
        ids[row, 0] = CLS
        ids[row, 1:length] = body
    mask = (np.arange(seq_len)[None, :] < lengths[:, None]).astype(np.int64)
    return {"input_ids": ids, "attention_mask": mask, "y": y}


def split(arrays: dict[str, np.ndarray], fraction: float, *, seed: int = 0
          ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(train, held-out) rows of ``arrays``, the held-out share ``fraction``, order from ``seed``."""
    count = len(arrays["y"])
    order = np.random.default_rng(seed).permutation(count)
    held = max(1, int(round(count * fraction)))
    return ({k: v[order[held:]] for k, v in arrays.items()}, {k: v[order[:held]] for k, v in arrays.items()})


def save(arrays: dict[str, np.ndarray], path: str | os.PathLike):
    """Write the arrays to a compressed .npz (arrays named after the graph inputs, plus y), atomically."""
    from finplan.fileio import atomic_write_bytes

    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return atomic_write_bytes(path, buffer.getvalue())
