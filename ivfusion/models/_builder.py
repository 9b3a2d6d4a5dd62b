"""Building networks, with or without their pretrained weights: the one place that joins the
registry (:mod:`._registry`, which only registers) and the pretrained-weights package
(:mod:`ivfusion.pretrained`, which knows nothing of networks)."""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Union

import torch
from torch import nn

from ..pretrained import (
    StateDictMismatchError,
    WeightNotFoundError,
    check_state_dict,
    default_weight,
    get_manifest,
    get_weight_info,
    list_weights,
    load_state_dict_file,
    resolve_weight,
)
from ._registry import FusionNet, get_model_info

__all__ = ["create_model", "create_random_model", "load_model", "load_weights", "weight_config"]


def create_model(
    name: str,
    pretrained: bool = False,
    *,
    weights: Optional[Union[str, "object"]] = None,
    device: Optional[Union[str, torch.device]] = None,
    **config: Any,
) -> FusionNet:
    """Build a registered network, optionally with pretrained weights, in eval mode.

    Args:
        name: a name from :func:`list_models`.
        pretrained: load the method's default weight (resolved by :mod:`ivfusion.pretrained`).
        weights: a weight name from the manifest or a path to a ``.safetensors`` file; implies
            ``pretrained``.
        device: where to put the model.
        config: constructor options overriding the registered defaults.
    """
    info = get_model_info(name)
    if pretrained or weights is not None:
        model = info.cls(**{**info.default_config, **weight_config(name, weights), **config})
        load_weights(model, name, weights)
    else:
        model = info.cls(**{**info.default_config, **config})
    model.eval()
    if device is not None:
        model.to(device)
    return model


def create_random_model(name: str, seed: int = 0) -> FusionNet:
    """An untrained network in eval mode, initialised from ``seed`` without touching the global RNG.

    The same ``(name, seed)`` gives the same parameters in every process: what ``weights="random"``
    means throughout ivfusion (tests and export checks only; its output is not a meaningful fusion).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_model(name)


def load_weights(model: FusionNet, method: str, weights: Optional[Union[str, os.PathLike]]) -> FusionNet:
    """Load pretrained weights into ``model`` (in place) and return it.

    Args:
        model: a network built for ``method``.
        method: its registered name.
        weights: ``None`` for the method's default weight in the manifest, a manifest name, or a
            path to a ``.safetensors`` file.

    Raises:
        ValueError: unknown method or weight name, or a weight of another method.
        WeightsError: no default weight, resolution/integrity failure, or a state dict that does
            not fit (:class:`StateDictMismatchError`).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    get_model_info(method)  # ValueError for an unknown method
    if weights is None:
        weights = default_weight(method)
        if weights is None:
            others = list_weights(method)
            raise WeightNotFoundError(
                f"no default pretrained weight for method {method!r} in the manifest"
                + (f" (its weights: {', '.join(others)}; pass weights=NAME)" if others else "")
                + "; pass weights='path/to/file.safetensors' to load your own.")
    if isinstance(weights, str) and weights in get_manifest().weights:
        info = get_weight_info(weights)
        if info.method != method:
            raise ValueError(f"weights: {weights!r} is a weight for method {info.method!r}, not {method!r}")
        what = f"weight {weights!r}"
    else:
        what = f"weights file {str(weights)!r}"
    path = resolve_weight(weights)
    state_dict, metadata = load_state_dict_file(path, what=what)
    file_method = metadata.get("method")
    if file_method is not None and file_method != method:
        raise StateDictMismatchError(f"{what} was exported for method {file_method!r}, not {method!r}")
    check_state_dict(model, state_dict, what=what)
    model.load_state_dict(state_dict, strict=True)
    return model


def weight_config(method: str, weights: Optional[Union[str, os.PathLike]] = None) -> Dict[str, Any]:
    """Constructor options a manifest weight was trained with (its entry's ``config``), so that
    :func:`ivfusion.create_model` builds the matching network. ``{}`` for file paths and for
    weights trained with the registered defaults."""
    name = default_weight(method) if weights is None else weights
    if isinstance(name, str) and name in get_manifest().weights:
        return dict(get_weight_info(name).config)
    return {}


def load_model(name: str, weights: Optional[Union[str, os.PathLike]] = None,
               device: Optional[Union[str, torch.device]] = None) -> FusionNet:
    """``create_model(name, pretrained=True, weights=weights, device=device)``: a network with its
    pretrained weights (the default weight of ``name`` unless ``weights`` says otherwise), in eval
    mode."""
    return create_model(name, pretrained=True, weights=weights, device=device)
