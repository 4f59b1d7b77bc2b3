"""ONNX <-> torch.fx conversion for an explicit operation set, and an onnxruntime cross-check."""

from robustlab._onnx.check import Agreement, check_against_onnxruntime, run_onnxruntime
from robustlab._onnx.exporter import torch_to_onnx
from robustlab._onnx.importer import SUPPORTED_OPS, onnx_to_torch

__all__ = [
    "SUPPORTED_OPS",
    "Agreement",
    "check_against_onnxruntime",
    "onnx_to_torch",
    "run_onnxruntime",
    "torch_to_onnx",
]
