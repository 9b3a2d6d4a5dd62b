"""Model registry: every fusion network registers itself here with its metadata.

Modelled on timm: ``register_model`` decorates a :class:`FusionNet` subclass, ``list_models``
and ``create_model`` are the public entry points.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple, Type, Union

import torch
from torch import nn

from .._names import unknown_name
from ..tiling import pad_to_multiple

__all__ = [
    "FusionNet",
    "ModelInfo",
    "register_model",
    "list_models",
    "get_model_info",
    "count_parameters",
    "measure_flops",
]


class FusionNet(nn.Module):
    """Base class of the fusion networks.

    Input convention: ``forward(ir, vis_y)`` with two luminance tensors ``(B, 1, H, W)`` in [0, 1]
    (infrared first, visible Y second). Output: fused luminance ``(B, 1, H, W)`` in [0, 1].
    Any ``H x W`` is accepted: the input is reflect-padded at the bottom/right to
    :attr:`size_multiple` and the output cropped back (MODELS.md 1.4).

    Subclasses implement :meth:`fuse_aligned`, which may assume sides divisible by
    ``size_multiple``. Extra keyword options (e.g. DIDFuse's ``rule``) pass through.
    """

    #: Total stride of the network; set by :func:`register_model`.
    size_multiple: int = 1
    #: Prefixes of parameter names that take no part in ``forward`` by design (kept only so that
    #: official weights load with ``strict=True``); they get no gradient.
    unused_parameter_prefixes: Tuple[str, ...] = ()

    def forward(self, ir: torch.Tensor, vis_y: torch.Tensor, **options: Any) -> torch.Tensor:
        if ir.ndim != 4 or ir.shape[1] != 1 or vis_y.shape != ir.shape:
            raise ValueError(
                f"{type(self).__name__} expects ir and vis_y of the same shape (B, 1, H, W), got "
                f"{tuple(ir.shape)} and {tuple(vis_y.shape)}"
            )
        m = self.size_multiple
        if m > 1:
            ir, (h, w) = pad_to_multiple(ir, m)
            vis_y, _ = pad_to_multiple(vis_y, m)
            return self.fuse_aligned(ir, vis_y, **options)[..., :h, :w]
        return self.fuse_aligned(ir, vis_y, **options)

    def fuse_aligned(self, ir: torch.Tensor, vis_y: torch.Tensor, **options: Any) -> torch.Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class ModelInfo:
    """Metadata of a registered network (what timm calls a pretrained config)."""

    name: str
    cls: Type[FusionNet]
    #: Full citation of the paper the network implements (authors, title, venue, year).
    paper: str
    #: Total stride: inputs are padded to a multiple of this.
    size_multiple: int = 1
    #: One-line description for ``ivfusion list``: plain words first, the paper's terms after.
    description: str = ""
    #: DOI or arXiv link of the paper.
    paper_url: str = ""
    #: Pixels of context needed for exact tiling; ``None`` when the network uses image-global
    #: statistics (global pooling, FFTs, attention over the whole grid).
    tiling_halo: Optional[int] = None
    #: Whether the network may run under float16 autocast on CUDA.
    half_precision: bool = True
    #: Whether ``fuse`` runs it under bfloat16 autocast by default on CPUs with native bf16: its
    #: error against float32 on the validation pairs stays below one grey level
    #: (``benchmarks/precision.py``: 99th percentile of ``|bf16 - fp32|`` over all pixels).
    cpu_bf16: bool = False
    #: Peak working memory of one fp32 CPU forward pass per input pixel (bytes), measured (peak RSS
    #: over the loaded model, 512^2 and 1024^2 inputs, rounded up ~10 %); what ``fuse()`` tiles by on the CPU.
    cpu_bytes_per_pixel: Optional[float] = None
    #: Keyword options accepted by ``forward`` (documented per network), with their defaults.
    forward_options: Dict[str, Any] = field(default_factory=dict)
    #: Default constructor configuration.
    default_config: Dict[str, Any] = field(default_factory=dict)


_MODELS: Dict[str, ModelInfo] = {}


def register_model(
    name: str,
    *,
    paper: str,
    paper_url: str = "",
    size_multiple: int = 1,
    description: str = "",
    tiling_halo: Optional[int] = None,
    half_precision: bool = True,
    cpu_bf16: bool = False,
    cpu_bytes_per_pixel: Optional[float] = None,
    forward_options: Optional[Dict[str, Any]] = None,
    default_config: Optional[Dict[str, Any]] = None,
) -> Callable[[Type[FusionNet]], Type[FusionNet]]:
    """Class decorator registering a :class:`FusionNet` subclass under ``name``."""

    def decorator(cls: Type[FusionNet]) -> Type[FusionNet]:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        if not issubclass(cls, FusionNet):
            raise TypeError(f"{cls.__name__} must subclass FusionNet")
        cls.size_multiple = size_multiple
        _MODELS[name] = ModelInfo(
            name=name,
            cls=cls,
            paper=paper,
            paper_url=paper_url,
            size_multiple=size_multiple,
            description=description,
            tiling_halo=tiling_halo,
            half_precision=half_precision,
            cpu_bf16=cpu_bf16,
            cpu_bytes_per_pixel=cpu_bytes_per_pixel,
            forward_options=dict(forward_options or {}),
            default_config=dict(default_config or {}),
        )
        return cls

    return decorator


def list_models() -> List[str]:
    """Names of the registered networks, sorted."""
    return sorted(_MODELS)


def get_model_info(name: str) -> ModelInfo:
    """Metadata of a registered network; ``ValueError`` listing the known names otherwise."""
    try:
        return _MODELS[name]
    except KeyError:
        raise ValueError(unknown_name("model", name, list_models())) from None


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of parameter values of ``model`` (only those with ``requires_grad`` by default).

    Buffers (BatchNorm running statistics, fixed permutations) are not parameters and never counted.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def measure_flops(
    name_or_model: Union[str, FusionNet],
    height: int = 480,
    width: int = 640,
    *,
    batch_size: int = 1,
    **forward_options: Any,
) -> float:
    """GFLOPs of one forward pass on ``(batch_size, 1, height, width)`` inputs, as counted by
    :class:`torch.utils.flop_counter.FlopCounterMode`.

    Torch counts convolutions and matrix products at 2 FLOPs per multiply-accumulate (so the result is
    ``2 x MACs / 1e9``); element-wise ops, pooling, interpolation, normalisation and FFTs are not
    counted. The pass runs on shape-only ``meta`` tensors (no compute, no memory) when the network
    supports it, otherwise on a copy on the model's device. ``forward_options`` go to ``forward``.
    """
    import copy

    from torch.utils.flop_counter import FlopCounterMode

    if isinstance(name_or_model, str):
        info = get_model_info(name_or_model)
        model: nn.Module = info.cls(**info.default_config)
    elif isinstance(name_or_model, nn.Module):
        model = name_or_model
    else:
        raise TypeError(f"name_or_model must be a model name or an nn.Module, got {type(name_or_model).__name__}")
    for arg, value in (("height", height), ("width", width), ("batch_size", batch_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{arg} must be a positive int, got {value!r}")

    def count(net: nn.Module, device: torch.device) -> int:
        x = torch.zeros(batch_size, 1, height, width, device=device)
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            net(x, x, **forward_options)
        return counter.get_total_flops()

    was_training = model.training
    try:
        flops = count(copy.deepcopy(model).eval().to("meta"), torch.device("meta"))
    except (NotImplementedError, RuntimeError):
        # Data-dependent ops (``.item()``, ...) have no meta kernel: count on real tensors instead.
        device = next(model.parameters()).device
        model.eval()
        try:
            flops = count(model, device)
        finally:
            model.train(was_training)
    return flops / 1e9
