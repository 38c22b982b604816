"""Tiny branchy ONNX models built with onnx.helper (no torch), for fast tests.

``tiny_branchy_model`` is a 3-block conv net with exits after blocks 1 and 3; with
``residual=True`` block 2 holds a skip connection inside it, and ``skip_across=True`` makes
a skip connection jump from block 1's input over the block-1/block-2 boundary.
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


def tiny_branchy_model(*, residual: bool = False, skip_across: bool = False, channels: int = 4,
                       size: int = 8, classes: int = 3, seed: int = 0, with_contract: bool = True) -> onnx.ModelProto:
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
    b3 = _conv(nodes, inits, rng, "b3", "block2", channels, channels * 2)
    nodes.append(helper.make_node("MaxPool", [b3], ["block3"], kernel_shape=[2, 2], strides=[2, 2], name="b3/Pool"))
    _head(nodes, inits, rng, "exit1", "block1", channels, classes)
    _head(nodes, inits, rng, "exit2", "block3", channels * 2, classes)
    graph = helper.make_graph(
        nodes, "tiny_branchy",
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, size, size])],
        outputs=[helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", classes]) for n in ("exit1", "exit2")],
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
