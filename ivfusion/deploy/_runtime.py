"""The ONNX Runtime backend: exported graphs as fusion functions (``fuse(..., backend="onnxruntime")``).

A graph comes from an explicit ``.onnx`` path or, for a weight name / ``.safetensors`` path, from
an export cached under ``$IVFUSION_CACHE_DIR/onnx`` (default ``~/.cache/ivfusion/onnx``, or
``$XDG_CACHE_HOME/ivfusion/onnx``), keyed by the weight's SHA-256, the options, the opset and the
ivfusion and torch versions, so it is exported once per machine.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch

from .._version import __version__
from ..pretrained import resolve_weight, sha256_file
from ._export import (
    DEFAULT_OPSET,
    ONNX_INPUTS,
    ONNX_OUTPUT,
    OnnxGraphInfo,
    _require,
    _weights_or_default,
    export_onnx,
    read_onnx_info,
    resolve_forward_options,
)

__all__ = ["onnx_cache_dir", "cached_onnx_export", "OnnxFusion", "load_onnx", "ort_providers"]

#: Environment variable naming ONNX Runtime execution providers to use, comma separated (e.g.
#: ``TensorrtExecutionProvider,CUDAExecutionProvider,CPUExecutionProvider``); overrides the choice
#: made from ``device``.
PROVIDERS_ENV = "IVFUSION_ORT_PROVIDERS"


def onnx_cache_dir() -> Path:
    """Folder of the cached exports: ``$IVFUSION_CACHE_DIR/onnx``, else ``$XDG_CACHE_HOME/ivfusion/onnx``,
    else ``~/.cache/ivfusion/onnx``."""
    root = os.environ.get("IVFUSION_CACHE_DIR")
    if not root:
        root = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "ivfusion")
    return Path(root) / "onnx"


def cached_onnx_export(
    method: str, weights: Optional[Union[str, os.PathLike]] = None, *, opset: int = DEFAULT_OPSET, **options: Any
) -> Path:
    """A dynamic-shape export of ``method`` with ``weights`` (see :func:`export_onnx`), from the cache
    or exported into it now (tens of seconds on a CPU, once)."""
    options = resolve_forward_options(method, options)
    weights = _weights_or_default(method, weights)
    sha = "random" if weights == "random" else sha256_file(resolve_weight(weights))
    key = json.dumps([method, sha, options, opset, __version__, torch.__version__], sort_keys=True)
    path = onnx_cache_dir() / f"{method}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.onnx"
    if not path.is_file():
        export_onnx(method, path, weights=weights, opset=opset, overwrite=True, **options)
    return path


def ort_providers(device: Optional[Union[str, torch.device]]) -> List[Union[str, Tuple[str, Dict[str, Any]]]]:
    """Execution providers for ``device``: ``$IVFUSION_ORT_PROVIDERS`` when set; ``"cpu"`` -> CPU;
    ``"cuda[:i]"`` -> CUDA (device ``i``) then CPU; ``None`` -> CUDA when onnxruntime has it, else CPU."""
    ort = _require("onnxruntime")
    available = ort.get_available_providers()
    env = os.environ.get(PROVIDERS_ENV)
    if env:
        names = [p.strip() for p in env.split(",") if p.strip()]
        missing = [p for p in names if p not in available]
        if missing:
            raise ValueError(f"{PROVIDERS_ENV}: provider(s) {', '.join(missing)} not available; "
                             f"this onnxruntime has {', '.join(available)}")
        return list(names)
    if device is None:
        device = "cuda" if "CUDAExecutionProvider" in available else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device: not a valid device: {device!r}") from exc
    if dev.type == "cpu":
        return ["CPUExecutionProvider"]
    if dev.type == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise ValueError(
                "device: CUDA was requested but this onnxruntime has no CUDAExecutionProvider "
                f"(it has {', '.join(available)}); install onnxruntime-gpu or use device='cpu'"
            )
        return [("CUDAExecutionProvider", {"device_id": dev.index or 0}), "CPUExecutionProvider"]
    raise ValueError(f"device: the onnxruntime backend runs on 'cpu' or 'cuda', got {device!r}")


class OnnxFusion:
    """An exported fusion graph in an ONNX Runtime session.

    ``fusion(ir, vis_y)`` takes ``(N, 1, H, W)`` float tensors in [0, 1] (any device; they are copied
    to host memory) and returns the fused ``(N, 1, H, W)`` float32 CPU tensor. ``info`` is the
    graph's :class:`OnnxGraphInfo`. Intra-op threads follow ``torch.get_num_threads()`` at load time.
    """

    def __init__(self, path: Union[str, os.PathLike], providers: List[Any], threads: int) -> None:
        ort = _require("onnxruntime")
        self.path = Path(path)
        self.info: OnnxGraphInfo = read_onnx_info(self.path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=providers)
        inputs = [(i.name, i.shape) for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if [n for n, _ in inputs] != list(ONNX_INPUTS) or outputs != [ONNX_OUTPUT] or any(
            len(s) != 4 or s[1] != 1 for _, s in inputs
        ):
            raise ValueError(
                f"onnx file {str(self.path)!r}: inputs {inputs} and outputs {outputs} are not a fusion graph's "
                f"({', '.join(ONNX_INPUTS)} (N, 1, H, W) -> {ONNX_OUTPUT})"
            )
        self.static_shape = None if self.info.dynamic else tuple(inputs[0][1])

    def __call__(self, ir: torch.Tensor, vis_y: torch.Tensor) -> torch.Tensor:
        if self.static_shape is not None and tuple(ir.shape) != self.static_shape:
            raise ValueError(
                f"onnx file {str(self.path)!r} is a static graph for inputs {self.static_shape}, got "
                f"{tuple(ir.shape)}; export with dynamic=True or pass tile_size to fuse in tiles of that size"
            )
        feed = {
            ONNX_INPUTS[0]: ir.detach().float().cpu().contiguous().numpy(),
            ONNX_INPUTS[1]: vis_y.detach().float().cpu().contiguous().numpy(),
        }
        return torch.from_numpy(self.session.run([ONNX_OUTPUT], feed)[0])


@functools.lru_cache(maxsize=8)
def _session(path: str, mtime_ns: int, providers: str, threads: int) -> OnnxFusion:
    # JSON turned the ``(name, options)`` tuples into lists; onnxruntime wants tuples.
    return OnnxFusion(path, [tuple(p) if isinstance(p, list) else p for p in json.loads(providers)], threads)


def load_onnx(
    method: str,
    weights: Optional[Union[str, os.PathLike]] = None,
    *,
    device: Optional[Union[str, torch.device]] = None,
    options: Optional[Dict[str, Any]] = None,
) -> OnnxFusion:
    """The ONNX Runtime session that ``fuse(..., method, weights=weights, backend="onnxruntime")`` uses.

    ``weights`` is an exported ``.onnx`` file (its metadata must name ``method`` and the same
    ``options``), or anything :func:`export_onnx` takes (the export is then cached, see
    :func:`cached_onnx_export`). Sessions are cached per file, providers and thread count.
    """
    _require("onnxruntime")  # before any export: a missing extra fails fast
    options = resolve_forward_options(method, dict(options or {}))
    if weights is not None and str(weights).lower().endswith(".onnx"):
        path = Path(weights).expanduser()
        info = read_onnx_info(path)
        if info.method != method:
            raise ValueError(f"weights: {str(path)!r} was exported for method {info.method!r}, not {method!r}")
        if info.options != options:
            raise ValueError(
                f"weights: {str(path)!r} was exported with options {info.options}, but {options} were asked for; "
                "export again with those options"
            )
    else:
        path = cached_onnx_export(method, weights, **options)
    providers = json.dumps(ort_providers(device))
    return _session(str(path.resolve()), path.stat().st_mtime_ns, providers, torch.get_num_threads())
