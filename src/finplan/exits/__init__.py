"""The torch side of finplan: branchy model zoo, attach_exits, joint training, ONNX export.

This is the only finplan package that imports torch (the ``[torch]`` extra).
"""
from finplan.exits.attach import AttachedExits, AttachError, TokenHead, attach_exits, exit_head
from finplan.exits.branchy import INPUT_NAME, BranchyNet, make_exit_head
from finplan.exits.export import (DEFAULT_OPSET, MAX_ABS_DIFF, ExportMismatchError, ExportReport, export_onnx,
                                  max_difference, to_onnx)
from finplan.exits.train import EpochReport, ExitMetrics, default_exit_weights, evaluate, train
from finplan.exits.bert import TinyBert, b_bert
from finplan.exits.zoo import DEFAULT_INPUT_SHAPES, MODELS, TEXT_MODELS, b_alexnet, b_lenet, b_resnet, build_model, load_checkpoint, save_checkpoint

__all__ = [
    "AttachedExits", "AttachError", "TokenHead", "attach_exits", "exit_head",
    "INPUT_NAME", "BranchyNet", "make_exit_head",
    "DEFAULT_OPSET", "MAX_ABS_DIFF", "ExportMismatchError", "ExportReport", "export_onnx", "max_difference", "to_onnx",
    "EpochReport", "ExitMetrics", "default_exit_weights", "evaluate", "train",
    "TinyBert", "b_bert",
    "DEFAULT_INPUT_SHAPES", "MODELS", "TEXT_MODELS", "b_alexnet", "b_lenet", "b_resnet", "build_model", "load_checkpoint", "save_checkpoint",
]
