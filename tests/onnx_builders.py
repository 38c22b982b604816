"""Tiny branchy ONNX models built with onnx.helper (no torch), for fast tests.

``tiny_branchy_model`` is a 3-block conv net with exits after blocks 1 and 3; with
``residual=True`` block 2 holds a skip connection inside it, and ``skip_across=True`` makes
a skip connection jump from block 1's input over the block-1/block-2 boundary,
``skip_to_block3=True`` adds block 1's output into block 3 (crossing cuts 1 and 2), and
``feature_exit=True`` makes exit1 a pooled feature map ([batch, C, 1, 1], not class scores).

``tiny_text_model`` has two graph inputs, int64 token ids and an int64 attention mask that
every layer reads (or, with ``mask_inside=True``, a float mask computed once in block 1 and
read by every layer), and a reshape target computed from a Shape op in block 1.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from finplan.contract import Block, Contract, Exit, write_contract


def _conv(nodes, inits, rng, name, x, c_in, c_out):
    w = numpy_helper.from_array((rng.standard_normal((c_out, c_in, 3, 3)) * 0.3).astype(np.float32), f"{name}.w")
    b = numpy_helper.from_array((rng.standard_normal(c_out) * 0.1).astype(np.float32), f"{name}.b")
    inits += [w, b]
    nodes.append(helper.make_node("Conv", [x, w.name, b.name], [f"{name}.conv"], pads=[1, 1, 1, 1], name=f"{name}/Conv"))
    nodes.append(helper.make_node("Relu", [f"{name}.conv"], [f"{name}.relu"], name=f"{name}/Relu"))
    return f"{name}.relu"


def _head(nodes, inits, rng, name, x, c_in, classes):
    w = numpy_helper.from_array((rng.standard_normal((classes, c_in)) * 0.5).astype(np.float32), f"{name}.w")
    b = numpy_helper.from_array(np.zeros(classes, np.float32), f"{name}.b")
    inits += [w, b]
    nodes.append(helper.make_node("GlobalAveragePool", [x], [f"{name}.gap"], name=f"{name}/GAP"))
    nodes.append(helper.make_node("Flatten", [f"{name}.gap"], [f"{name}.flat"], axis=1, name=f"{name}/Flatten"))
    nodes.append(helper.make_node("Gemm", [f"{name}.flat", w.name, b.name], [name], transB=1, name=f"{name}/Gemm"))
    return name


def tiny_branchy_model(*, residual: bool = False, skip_across: bool = False, skip_to_block3: bool = False,
                       feature_exit: bool = False, channels: int = 4, size: int = 8, classes: int = 3, seed: int = 0,
                       with_contract: bool = True) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    b1 = _conv(nodes, inits, rng, "b1", "x", 1, channels)
    nodes.append(helper.make_node("MaxPool", [b1], ["block1"], kernel_shape=[2, 2], strides=[2, 2], name="b1/Pool"))
    h = _conv(nodes, inits, rng, "b2a", "block1", channels, channels)
    h = _conv(nodes, inits, rng, "b2b", h, channels, channels)
    if residual:
        nodes.append(helper.make_node("Add", [h, "block1"], ["block2"], name="b2/Add"))
    elif skip_across:
        nodes.append(helper.make_node("MaxPool", ["b1.relu"], ["b1.skip"], kernel_shape=[2, 2], strides=[2, 2], name="skip/Pool"))
        nodes.append(helper.make_node("Add", [h, "b1.skip"], ["block2"], name="b2/Add"))
    else:
        nodes.append(helper.make_node("Identity", [h], ["block2"], name="b2/Id"))
    b3_in = "block2"
    if skip_to_block3:
        nodes.append(helper.make_node("Add", ["block2", "block1"], ["b3.skip"], name="b3/SkipAdd"))
        b3_in = "b3.skip"
    b3 = _conv(nodes, inits, rng, "b3", b3_in, channels, channels * 2)
    nodes.append(helper.make_node("MaxPool", [b3], ["block3"], kernel_shape=[2, 2], strides=[2, 2], name="b3/Pool"))
    if feature_exit:
        nodes.append(helper.make_node("GlobalAveragePool", ["block1"], ["exit1"], name="exit1/GAP"))
    else:
        _head(nodes, inits, rng, "exit1", "block1", channels, classes)
    _head(nodes, inits, rng, "exit2", "block3", channels * 2, classes)
    exit1_shape = ["batch", channels, 1, 1] if feature_exit else ["batch", classes]
    graph = helper.make_graph(
        nodes, "tiny_branchy",
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, size, size])],
        outputs=[helper.make_tensor_value_info("exit1", TensorProto.FLOAT, exit1_shape),
                 helper.make_tensor_value_info("exit2", TensorProto.FLOAT, ["batch", classes])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    if with_contract:
        write_contract(model, tiny_contract())
    return model


def tiny_contract() -> Contract:
    return Contract(
        inputs=("x",),
        blocks=(Block("block1", "block1"), Block("block2", "block2"), Block("block3", "block3")),
        exits=(Exit("exit1", "block1", "exit1"), Exit("exit2", "block3", "exit2")),
    )


def tiny_text_model(*, layers: int = 3, tokens: int = 6, vocab: int = 11, width: int = 8, classes: int = 3,
                    mask_inside: bool = False, mask_dtype=TensorProto.INT64, seed: int = 0,
                    with_contract: bool = True) -> onnx.ModelProto:
    """A BERT-shaped toy: ids [batch, tokens] int64 and mask [batch, tokens] -> ``layers`` blocks, an exit each.

    Layer k: ``h = Relu(MatMul(h, W_k)) * mask`` then a Reshape whose target comes from
    ``Shape`` of the float mask (a SHAPE tensor a part recomputes). Exit k: masked mean over
    tokens, then Gemm to ``classes`` scores. Block k's contract tensor is ``layer{k}``.
    """
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array((rng.standard_normal((vocab, width)) * 0.5).astype(np.float32), "emb")]
    nodes = [helper.make_node("Gather", ["emb", "input_ids"], ["embedded"], axis=0, name="embeddings/Gather")]

    def mask_of(name: str) -> str:
        # [batch, tokens] -> float [batch, tokens, 1]
        nodes.append(helper.make_node("Cast", ["attention_mask"], [f"{name}.maskf"], to=TensorProto.FLOAT,
                                      name=f"{name}/Cast"))
        nodes.append(helper.make_node("Unsqueeze", [f"{name}.maskf", "axis2"], [f"{name}.mask3"], name=f"{name}/Unsq"))
        return f"{name}.mask3"

    inits.append(numpy_helper.from_array(np.array([2], np.int64), "axis2"))
    inits.append(numpy_helper.from_array(np.array([width], np.int64), "width"))
    shared_mask = mask_of("embeddings") if mask_inside else None
    # reshape target [batch, tokens, width] from the shape of the mask: a SHAPE tensor made in block 1
    nodes.append(helper.make_node("Shape", [shared_mask or "attention_mask"], ["mask_shape"], start=0, end=2,
                                  name="embeddings/Shape"))
    nodes.append(helper.make_node("Concat", ["mask_shape", "width"], ["target"], axis=0, name="embeddings/Concat"))
    h = "embedded"
    for k in range(1, layers + 1):
        name = f"layer{k}"
        w = numpy_helper.from_array((rng.standard_normal((width, width)) * 0.4).astype(np.float32), f"{name}.w")
        inits.append(w)
        mask = shared_mask or mask_of(name)
        nodes.append(helper.make_node("MatMul", [h, w.name], [f"{name}.mm"], name=f"{name}/MatMul"))
        nodes.append(helper.make_node("Relu", [f"{name}.mm"], [f"{name}.relu"], name=f"{name}/Relu"))
        nodes.append(helper.make_node("Mul", [f"{name}.relu", mask], [f"{name}.masked"], name=f"{name}/Mul"))
        nodes.append(helper.make_node("Reshape", [f"{name}.masked", "target"], [name], name=f"{name}/Reshape"))
        h = name
        head_w = numpy_helper.from_array((rng.standard_normal((classes, width)) * 0.5).astype(np.float32),
                                         f"exit{k}.w")
        head_b = numpy_helper.from_array(np.zeros(classes, np.float32), f"exit{k}.b")
        inits += [head_w, head_b]
        nodes.append(helper.make_node("ReduceMean", [name], [f"exit{k}.mean"], axes=[1], keepdims=0,
                                      name=f"exit{k}/Mean"))
        nodes.append(helper.make_node("Gemm", [f"exit{k}.mean", head_w.name, head_b.name], [f"exit{k}"], transB=1,
                                      name=f"exit{k}/Gemm"))
    graph = helper.make_graph(
        nodes, "tiny_text",
        inputs=[helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", tokens]),
                helper.make_tensor_value_info("attention_mask", mask_dtype, ["batch", tokens])],
        outputs=[helper.make_tensor_value_info(f"exit{k}", TensorProto.FLOAT, ["batch", classes])
                 for k in range(1, layers + 1)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    if with_contract:
        write_contract(model, text_contract(layers))
    return model


def text_contract(layers: int = 3) -> Contract:
    return Contract(
        inputs=("input_ids", "attention_mask"),
        blocks=tuple(Block(f"block{k}", f"layer{k}") for k in range(1, layers + 1)),
        exits=tuple(Exit(f"exit{k}", f"block{k}", f"exit{k}") for k in range(1, layers + 1)),
    )


def text_inputs(count: int, *, tokens: int = 6, vocab: int = 11, seed: int = 0, mask_dtype=np.int64) -> dict:
    """Random ids and a mask with a random number (>= 1) of leading ones per sample."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, tokens + 1, size=count)
    mask = (np.arange(tokens)[None, :] < lengths[:, None]).astype(mask_dtype)
    return {"input_ids": rng.integers(0, vocab, size=(count, tokens), dtype=np.int64), "attention_mask": mask}
