"""Parts chain to the whole model; FLOPs match hand counts and onnx-tool."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from finplan.contract import load_branchy_model
from finplan.onnx_parts import split_branchy
from finplan.profiler.flops import activation_bytes, count_flops


def _run(model, feed):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feed)


def _chain_equals_whole(path, x):
    model, contract = load_branchy_model(path)
    blocks, exits = split_branchy(model, contract)
    values = {contract.input: x}
    for part in blocks:
        values[part.outputs[0]] = _run(part.model, {part.inputs[0]: values[part.inputs[0]]})[0]
    whole_session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in whole_session.get_outputs()]
    whole = dict(zip(names, whole_session.run(None, {contract.input: x})))
    checked = 0
    for part in exits:
        chained = _run(part.model, {part.inputs[0]: values[part.inputs[0]]})[0]
        if part.outputs[0] in whole:
            assert np.max(np.abs(chained - whole[part.outputs[0]])) <= 1e-5
            checked += 1
    assert checked == len(exits)


def test_tiny_parts_chained_equal_the_whole_model(tiny_path):
    x = np.random.default_rng(0).standard_normal((5, 1, 8, 8)).astype(np.float32)
    _chain_equals_whole(tiny_path, x)


def test_embedded_parts_chained_equal_the_whole_model_on_real_inputs(embedded_path):
    from finplan.data import load_data

    data = load_data("embedded", (1, 32, 32), limit=32)
    _chain_equals_whole(embedded_path, data.x)


def _single_node_model(node, inputs, output, inits):
    graph = helper.make_graph([node], "g", inputs, [output], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model


def test_conv_flops_match_a_hand_count():
    # 3 -> 8 channels, 3x3 kernel, stride 1, pad 1 on 10x10: 8*10*10 outputs of 3*3*3 multiply-adds, plus bias.
    w = numpy_helper.from_array(np.zeros((8, 3, 3, 3), np.float32), "w")
    b = numpy_helper.from_array(np.zeros(8, np.float32), "b")
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])
    model = _single_node_model(node, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 10, 10])],
                               helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 10, 10]), [w, b])
    assert count_flops(model).flops == 2 * 800 * 27 + 800
    # Grouped (depthwise) conv: each output sees one input channel.
    w2 = numpy_helper.from_array(np.zeros((4, 1, 3, 3), np.float32), "w")
    node2 = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], group=4, strides=[2, 2])
    model2 = _single_node_model(node2, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 8, 8])],
                                helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 4, 4]), [w2])
    assert count_flops(model2).flops == 2 * (4 * 4 * 4) * 9


def test_gemm_and_matmul_flops_match_a_hand_count():
    w = numpy_helper.from_array(np.zeros((10, 64), np.float32), "w")
    b = numpy_helper.from_array(np.zeros(10, np.float32), "b")
    node = helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)
    model = _single_node_model(node, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
                               helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10]), [w, b])
    assert count_flops(model).flops == 2 * 64 * 10 + 10
    m = numpy_helper.from_array(np.zeros((16, 5), np.float32), "m")
    node = helper.make_node("MatMul", ["x", "m"], ["y"])
    model = _single_node_model(node, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16])],
                               helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 5]), [m])
    assert count_flops(model).flops == 2 * 3 * 5 * 16


def test_unknown_ops_are_listed_not_silently_zero():
    node = helper.make_node("Einsum", ["x", "x"], ["y"], equation="ij,ij->i")
    model = _single_node_model(node, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                               helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N"]), [])
    counted = count_flops(model)
    assert counted.unknown_ops == ["Einsum"] and counted.flops == 0


def test_activation_bytes_is_the_peak_of_live_tensors(tiny_path):
    model, contract = load_branchy_model(tiny_path)
    blocks, _ = split_branchy(model, contract)
    # block1: x (1x8x8) -> conv (4x8x8) -> relu (4x8x8) -> pool (4x4x4); peak holds conv and relu outputs.
    assert activation_bytes(blocks[0].model) == (4 * 64 + 4 * 64) * 4


def _onnx_tool_macs(model, input_shape, tmp_path):
    onnx_tool = pytest.importorskip("onnx_tool", reason="onnx-tool is not installed")
    path = tmp_path / "fixed.onnx"
    onnx.save(model, str(path))
    tool = onnx_tool.Model(str(path))
    tool.graph.shape_infer({model.graph.input[0].name: np.zeros(input_shape, np.float32)})
    tool.graph.profile()
    return {node.name: (node.op_type, node.macs[0]) for node in tool.graph.nodemap.values()}


@pytest.mark.parametrize("which", ["tiny", "embedded"])
def test_conv_and_gemm_flops_agree_with_onnx_tool(which, tiny_path, tmp_path, request):
    path = tiny_path if which == "tiny" else request.getfixturevalue("embedded_path")
    model = onnx.load(str(path))
    shape = [1] + [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]]
    tool = _onnx_tool_macs(model, shape, tmp_path)
    ours = count_flops(model)
    from finplan.profiler.flops import with_batch_one
    from finplan.onnx_parts import tensor_shape

    inferred = with_batch_one(model)
    compared = 0
    for name, op, flops in ours.per_node:
        if op not in ("Conv", "Gemm", "MatMul") or name not in tool:
            continue
        # onnx-tool counts a multiply-add as 1 MAC and the bias as 1 more per output; we count 2 per multiply-add.
        node = next(n for n in inferred.graph.node if (n.name or n.output[0]) == name)
        outputs = int(np.prod(tensor_shape(inferred, node.output[0])))
        bias = outputs if len(node.input) > 2 and node.input[2] else 0
        assert flops == 2 * (tool[name][1] - bias) + bias, name
        compared += 1
    assert compared >= 3
    assert ours.unknown_ops == []
