"""ONNX export of the fusion networks (:func:`export_onnx`) and the metadata it writes.

The graph is produced by ``torch.onnx.export(..., dynamo=True)`` (``torch.export`` then the
onnxscript translator); the TorchScript exporter is not used. Inputs ``ir`` and ``vis_y``
``(N, 1, H, W)`` float32 in [0, 1], output ``fused`` ``(N, 1, H, W)`` in [0, 1]. With ``dynamic=True``
``N``, ``H`` and ``W`` are symbolic and the padding to the network's size multiple (RefineFuse: 8)
happens inside the graph, so any size runs. What the graph is (method, weight, its SHA-256, options,
versions) is stored in the model's ``metadata_props`` under ``ivfusion.*`` keys and read back by
:func:`read_onnx_info`.

Parts of the networks that the exporter cannot express exactly follow an exportable code path
while :func:`torch.compiler.is_exporting` is true (see :func:`ivfusion.models.blocks.adaptive_avg_pool2d`
and :func:`ivfusion.tiling.pad_to_multiple`); the tests prove both paths equal.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple, Union

import torch
from torch import nn

from .._version import __version__
from ..io import is_same_file, write_atomic
from ..models import create_model, create_random_model, get_model_info, list_models
from ..pretrained import default_weight, get_manifest, resolve_weight, sha256_file

__all__ = [
    "ONNX_INPUTS",
    "ONNX_OUTPUT",
    "DEFAULT_OPSET",
    "OnnxGraphInfo",
    "export_onnx",
    "read_onnx_info",
    "resolve_forward_options",
]

#: Input names of every exported graph, in call order.
ONNX_INPUTS: Tuple[str, str] = ("ir", "vis_y")
#: Output name of every exported graph.
ONNX_OUTPUT = "fused"
#: Default ONNX opset (18: the lowest the dynamo exporter targets; has ``DFT`` for FISCNet).
DEFAULT_OPSET = 18
_META = "ivfusion."
# The example input traced with dynamic shapes: batch 2 (a batch of 1 makes ``torch.export``
# specialise the batch axis to 1) and sides that are not multiples of any stride.
_EXAMPLE_DYNAMIC = (2, 1, 100, 140)


@dataclass(frozen=True)
class OnnxGraphInfo:
    """What :func:`export_onnx` recorded in a graph's metadata."""

    method: str
    #: Manifest name of the weight, the file name of an explicit ``.safetensors``, or ``"random"``.
    weights: str
    #: SHA-256 of the weight file (empty for ``"random"``).
    weights_sha256: str
    #: The forward options baked into the graph, defaults filled in (e.g. DIDFuse's ``rule``).
    options: Dict[str, Any] = field(default_factory=dict)
    dynamic: bool = True
    opset: int = DEFAULT_OPSET
    ivfusion_version: str = ""
    torch_version: str = ""

    def to_metadata(self) -> Dict[str, str]:
        return {
            f"{_META}method": self.method,
            f"{_META}weights": self.weights,
            f"{_META}weights_sha256": self.weights_sha256,
            f"{_META}options": json.dumps(self.options, sort_keys=True),
            f"{_META}dynamic": json.dumps(self.dynamic),
            f"{_META}opset": str(self.opset),
            f"{_META}version": self.ivfusion_version,
            f"{_META}torch_version": self.torch_version,
        }

    @classmethod
    def from_metadata(cls, meta: Dict[str, str], where: str) -> "OnnxGraphInfo":
        if f"{_META}method" not in meta:
            raise ValueError(
                f"{where}: the graph has no ivfusion metadata (ivfusion.method); it was not written by "
                "ivfusion.export_onnx / `ivfusion export onnx`"
            )
        try:
            return cls(
                method=meta[f"{_META}method"],
                weights=meta.get(f"{_META}weights", ""),
                weights_sha256=meta.get(f"{_META}weights_sha256", ""),
                options=json.loads(meta.get(f"{_META}options", "{}")),
                dynamic=json.loads(meta.get(f"{_META}dynamic", "true")),
                opset=int(meta.get(f"{_META}opset", DEFAULT_OPSET)),
                ivfusion_version=meta.get(f"{_META}version", ""),
                torch_version=meta.get(f"{_META}torch_version", ""),
            )
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{where}: malformed ivfusion metadata ({exc})") from None


def resolve_forward_options(method: str, options: Dict[str, Any]) -> Dict[str, Any]:
    """``options`` checked against the method's forward options, with the defaults filled in."""
    info = get_model_info(method)
    unknown = sorted(set(options) - set(info.forward_options))
    if unknown:
        accepted = ", ".join(info.forward_options) or "none"
        raise ValueError(f"method {method!r} does not accept option(s) {', '.join(unknown)}; accepted: {accepted}")
    return {**info.forward_options, **options}


class _GraphModule(nn.Module):
    """``forward(ir, vis_y)`` of a network with its forward options fixed (what is exported)."""

    def __init__(self, net: nn.Module, options: Dict[str, Any]) -> None:
        super().__init__()
        self.net = net
        self.options = dict(options)

    def forward(self, ir: torch.Tensor, vis_y: torch.Tensor) -> torch.Tensor:
        return self.net(ir, vis_y, **self.options)


def _weights_or_default(method: str, weights: Optional[Union[str, os.PathLike]]) -> Union[str, os.PathLike]:
    """``weights``, or the method's default weight name when it is ``None`` (``ValueError`` if none)."""
    if weights is None:
        weights = default_weight(method)
        if weights is None:
            raise ValueError(f"weights: method {method!r} has no default pretrained weight; pass weights=")
    return weights


def _network_and_identity(method: str, weights: Optional[Union[str, os.PathLike]]) -> Tuple[nn.Module, str, str]:
    """The float32 CPU network to export, the weight's name and its SHA-256."""
    weights = _weights_or_default(method, weights)
    if weights == "random":
        return create_random_model(method), "random", ""
    path = resolve_weight(weights)
    named = isinstance(weights, str) and weights in get_manifest().weights
    model = create_model(method, pretrained=True, weights=weights)
    return model, (weights if named else Path(path).name), sha256_file(path)


def _check_size(size: Any) -> Tuple[int, int]:
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 16 for v in size)):
        raise ValueError(f"static_size: expected (height, width), two ints >= 16, got {size!r}")
    return int(size[0]), int(size[1])


def export_onnx(
    method: str,
    path: Union[str, os.PathLike],
    *,
    weights: Optional[Union[str, os.PathLike]] = None,
    opset: int = DEFAULT_OPSET,
    dynamic: bool = True,
    static_size: Tuple[int, int] = (480, 640),
    overwrite: bool = False,
    **options: Any,
) -> Path:
    """Export a fusion network with its weights to a self-contained ONNX file.

    Args:
        method: a network from :func:`ivfusion.list_models`.
        path: the ``.onnx`` file to write (atomically; weights embedded, no external data file).
        weights: ``None`` (the method's pretrained default), a manifest weight name, a path to a
            ``.safetensors`` file, or ``"random"`` (the seeded untrained network; tests only).
        opset: ONNX opset version, at least 18.
        dynamic: symbolic batch, height and width (any ``N x 1 x H x W`` runs); ``False`` fixes the
            input to ``1 x 1 x static_size`` (what some runtimes, e.g. TensorRT engines, prefer).
        static_size: ``(H, W)`` of a static graph.
        overwrite: replace an existing file (otherwise ``FileExistsError``).
        options: forward options baked into the graph, e.g. ``rule="average"`` for DIDFuse.

    Returns:
        ``path``. The graph's metadata (:func:`read_onnx_info`) names the method, the weight and its
        SHA-256, the options, the opset and the ivfusion and torch versions.

    Raises:
        ValueError: unknown or classical method, bad option, opset or size.
        FileExistsError: ``path`` exists and ``overwrite`` is false.
        ImportError: the ``onnx`` / ``onnxscript`` packages are missing (``pip install 'ivfusion[onnx]'``).
    """
    if method not in list_models():
        raise ValueError(
            f"method: {method!r} is not a network; exportable: {', '.join(list_models())} "
            "(classical methods run in numpy/torch and have no graph to export)"
        )
    if not isinstance(opset, int) or isinstance(opset, bool) or opset < DEFAULT_OPSET:
        raise ValueError(f"opset: expected an int >= {DEFAULT_OPSET}, got {opset!r}")
    if not isinstance(dynamic, bool):
        raise TypeError(f"dynamic: expected a bool, got {type(dynamic).__name__}")
    height, width = _check_size(static_size)
    options = resolve_forward_options(method, options)
    out = Path(path)
    if out.suffix.lower() != ".onnx":
        raise ValueError(f"path: expected a file name ending in .onnx, got {str(out)!r}")
    if out.exists() and not overwrite:
        raise FileExistsError(f"path: {str(out)!r} exists; pass overwrite=True (CLI: --overwrite)")
    onnx = _require("onnx")
    _require("onnxscript")

    net, weight_name, sha = _network_and_identity(method, weights)
    if isinstance(weights, (str, os.PathLike)) and weights != "random" and is_same_file(out, weights):
        raise ValueError(f"path: {str(out)!r} is the weight file itself; choose another output")
    module = _GraphModule(net.float().eval(), options)
    shape = _EXAMPLE_DYNAMIC if dynamic else (1, 1, height, width)
    gen = torch.Generator().manual_seed(0)
    example = (torch.rand(shape, generator=gen), torch.rand(shape, generator=gen))
    axes = {0: "batch", 2: "height", 3: "width"}
    with torch.inference_mode():
        module(*example)  # bad option values raise the network's own error here, not inside the exporter
    with _quiet_exporter(), torch.inference_mode(False), torch.no_grad():
        program = torch.onnx.export(
            module,
            example,
            None,
            dynamo=True,
            input_names=list(ONNX_INPUTS),
            output_names=[ONNX_OUTPUT],
            opset_version=opset,
            dynamic_shapes={"ir": axes, "vis_y": axes} if dynamic else None,
            verbose=False,
        )
    proto = program.model_proto
    info = OnnxGraphInfo(
        method=method,
        weights=weight_name,
        weights_sha256=sha,
        options=options,
        dynamic=dynamic,
        opset=opset,
        ivfusion_version=__version__,
        torch_version=torch.__version__,
    )
    for key, value in info.to_metadata().items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "ivfusion"
    proto.producer_version = __version__
    proto.doc_string = f"ivfusion {method} ({weight_name}): fused = f(ir, vis_y), (N, 1, H, W) float32 in [0, 1]"
    return write_atomic(out, lambda tmp: onnx.save_model(proto, tmp, save_as_external_data=False), suffix=".part.onnx")


def read_onnx_info(path: Union[str, os.PathLike]) -> OnnxGraphInfo:
    """The :class:`OnnxGraphInfo` stored in an exported graph (``ValueError`` if it has none).

    Reads only the metadata: the graph itself is not checked (see :func:`ivfusion.deploy.load_onnx`).
    """
    onnx = _require("onnx")
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"onnx: no such file: {str(p)!r}")
    try:
        proto = onnx.load_model(str(p), load_external_data=False)
    except Exception as exc:  # protobuf raises its own DecodeError
        raise ValueError(f"onnx: {str(p)!r} is not an ONNX model ({exc})") from None
    return OnnxGraphInfo.from_metadata({m.key: m.value for m in proto.metadata_props}, f"onnx file {str(p)!r}")


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's warnings and log lines (axis renaming, pytree internals, optional
    torchvision operators): none of them concerns the user. Errors still raise."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _require(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"ONNX export and the onnxruntime backend need the {module!r} package: pip install 'ivfusion[onnx]' "
            f"(importing it failed: {exc})"
        ) from None
