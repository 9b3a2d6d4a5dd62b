"""Deployment: ONNX export of the networks and an ONNX Runtime backend (extra ``ivfusion[onnx]``).

>>> import ivfusion
>>> ivfusion.export_onnx("f3net", "f3net.onnx")                      # doctest: +SKIP
>>> ivfusion.fuse(ir, vis, "f3net", backend="onnxruntime")          # doctest: +SKIP

``onnx``, ``onnxscript`` and ``onnxruntime`` are imported only when used.
"""
from ._export import (
    DEFAULT_OPSET,
    ONNX_INPUTS,
    ONNX_OUTPUT,
    OnnxGraphInfo,
    export_onnx,
    read_onnx_info,
    resolve_forward_options,
)
from ._runtime import OnnxFusion, cached_onnx_export, load_onnx, onnx_cache_dir, ort_providers

__all__ = [
    "DEFAULT_OPSET",
    "ONNX_INPUTS",
    "ONNX_OUTPUT",
    "OnnxGraphInfo",
    "OnnxFusion",
    "export_onnx",
    "read_onnx_info",
    "resolve_forward_options",
    "cached_onnx_export",
    "load_onnx",
    "onnx_cache_dir",
    "ort_providers",
]
