"""Turning a training checkpoint into a release weight: a checked ``.safetensors`` file and its
manifest entry (:func:`export_checkpoint`; ``ivfusion weights export`` on the command line)."""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch

from .._version import __version__
from ..io import write_atomic
from ..models import create_model
from ..pretrained import (
    DEFAULT_REPO_ID,
    CorruptWeightsError,
    WeightInfo,
    check_state_dict,
    load_state_dict_file,
    sha256_file,
)
from ..pretrained.io import format_keys
from ..pretrained.schema import WEIGHT_NAME_RE

__all__ = ["ExportResult", "export_checkpoint"]


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_checkpoint` wrote."""

    path: Path
    sha256: str
    size: int
    #: Manifest entry (JSON form) for the file, as complete as the inputs allow.
    entry: Dict[str, Any]
    #: Required manifest fields still missing from :attr:`entry` (fill them before publishing).
    missing: Tuple[str, ...]
    #: Header metadata written into the file.
    metadata: Dict[str, str]


_DTYPE_NAMES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
                "fp16": torch.float16, "half": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
_REQUIRED_ENTRY_FIELDS = ("method", "repo_id", "filename", "revision", "sha256", "size", "license", "default",
                          "training_data", "recipe", "metrics", "reproduce")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DataParallel/DDP and torch.compile wrappers


def _read_checkpoint(path: Path) -> Tuple[Dict[str, torch.Tensor], Optional[str], Dict[str, Any], Dict[str, Any]]:
    """``(state_dict, method, config, extra)`` from a training checkpoint or a safetensors file."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: no such file: {str(path)!r}")
    what = f"checkpoint {str(path)!r}"
    if path.suffix == ".safetensors":
        state, meta = load_state_dict_file(path, what="checkpoint")
        try:
            config = json.loads(meta["config"]) if "config" in meta else {}
        except json.JSONDecodeError:
            raise CorruptWeightsError(f"{what}: header field 'config' is not JSON") from None
        return state, meta.get("method"), config, {}
    try:
        # A local file the user made; weights_only refuses to run pickled code.
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CorruptWeightsError(f"{what} is not a readable training checkpoint "
                                  f"({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else '-'})"
                                  ) from exc
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), Mapping):
        keys = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CorruptWeightsError(f"{what}: expected a dict with a 'model' state dict "
                                  f"(the ivfusion trainer's format), got {keys}")
    config = ckpt.get("config") or {}
    if not isinstance(config, dict):
        raise CorruptWeightsError(f"{what}: 'config' must be a dict, got {type(config).__name__}")
    method = ckpt.get("method")
    if method is not None and not isinstance(method, str):
        raise CorruptWeightsError(f"{what}: 'method' must be a string, got {type(method).__name__}")
    extra = {k: ckpt[k] for k in ("step", "manifest") if k in ckpt}
    return dict(ckpt["model"]), method, config, extra


def _strip_wrapper_prefixes(state: Dict[str, Any]) -> Dict[str, Any]:
    for prefix in _WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def export_checkpoint(
    checkpoint: Union[str, os.PathLike],
    output: Union[str, os.PathLike],
    *,
    method: Optional[str] = None,
    dtype: Union[str, torch.dtype] = "float32",
    name: Optional[str] = None,
    entry: Optional[Mapping[str, Any]] = None,
) -> ExportResult:
    """Turn a training checkpoint into a release ``.safetensors`` file and its manifest entry.

    The checkpoint is either a ``torch.save`` file holding ``{"model": state_dict, "method": str,
    "config": dict, "step": int, ...}`` (read with ``weights_only=True``) or a plain
    ``.safetensors`` state dict. Constructor options are taken from ``config["model"]`` (a dict,
    optional). The network is built with ``create_model(method, **config["model"])`` and must
    accept the state dict with ``strict=True``; otherwise nothing is written.

    Args:
        checkpoint: input file.
        output: the ``.safetensors`` file to write (atomically: temporary file + rename).
        method: registered network; defaults to the checkpoint's ``method`` (they must agree).
        dtype: storage dtype of floating-point tensors, ``"float32"``/``"float16"``/``"bfloat16"``;
            integer buffers keep their dtype. Values that overflow float16 are an error.
        name: manifest name for the entry (``"<method>.<tag>"``); recorded in the header.
        entry: manifest fields to put into the entry (license, training_data, recipe, metrics,
            reproduce, repo_id, revision, default, description), on top of a ``"manifest"``
            dict stored in the checkpoint. ``sha256``, ``size``, ``method``, ``filename`` and
            ``dtype`` always come from the written file.

    Returns:
        :class:`ExportResult` with the path, SHA-256, size, the entry and its missing fields.
    """
    from safetensors.torch import save_file

    src = Path(checkpoint).expanduser()
    out = Path(output).expanduser()
    if out.suffix != ".safetensors":
        raise ValueError(f"output: expected a path ending in .safetensors, got {str(out)!r}")
    if isinstance(dtype, str):
        if dtype.lower() not in _DTYPE_NAMES:
            raise ValueError(f"dtype: expected one of float32, float16, bfloat16, got {dtype!r}")
        target = _DTYPE_NAMES[dtype.lower()]
    elif dtype in (torch.float32, torch.float16, torch.bfloat16):
        target = dtype
    else:
        raise TypeError(f"dtype: expected a string or torch.float32/float16/bfloat16, got {dtype!r}")
    if entry is not None and not isinstance(entry, Mapping):
        raise TypeError(f"entry: expected a mapping of manifest fields, got {type(entry).__name__}")

    state, ckpt_method, config, extra = _read_checkpoint(src)
    if method is None:
        method = ckpt_method
    elif ckpt_method is not None and ckpt_method != method:
        raise ValueError(f"method: {method!r} given but the checkpoint says {ckpt_method!r}")
    if method is None:
        raise ValueError("method: the checkpoint does not record its method; pass method=")
    if name is not None and (not WEIGHT_NAME_RE.match(name) or name.split(".", 1)[0] != method):
        raise ValueError(f"name: expected '{method}.<tag>' (lower case, digits, '_', '-'), got {name!r}")
    model_args = config.get("model", {})
    if not isinstance(model_args, dict):
        raise ValueError(f"checkpoint config['model'] must be a dict of constructor options, got {model_args!r}")

    model = create_model(method, **model_args)
    bad = sorted(k for k, v in state.items() if not isinstance(v, torch.Tensor))
    if bad:
        raise CorruptWeightsError(f"checkpoint {str(src)!r}: non-tensor state-dict entries {format_keys(bad)}")
    state = _strip_wrapper_prefixes(state)
    check_state_dict(model, state, what=f"checkpoint {str(src)!r}")
    model.load_state_dict(state, strict=True)

    tensors: Dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        value = value.detach().to("cpu")
        if value.is_floating_point():
            cast = value.to(target)
            overflow = torch.isinf(cast) & torch.isfinite(value)
            if bool(overflow.any()):
                raise ValueError(f"dtype: tensor {key!r} has values beyond the {str(target)[6:]} range "
                                 f"(max |x| = {value.abs().max().item():.4g}); export float32 instead")
            value = cast
        tensors[key] = value.contiguous().clone()  # clone: safetensors refuses shared storage

    dtype_name = str(target).replace("torch.", "")
    metadata = {"format": "pt", "method": method, "config": json.dumps(config, sort_keys=True),
                "model_config": json.dumps(model_args, sort_keys=True), "version": __version__,
                "dtype": dtype_name}
    if "step" in extra:
        metadata["step"] = str(extra["step"])
    if name is not None:
        metadata["name"] = name
    stored = extra.get("manifest") if isinstance(extra.get("manifest"), Mapping) else {}
    fields: Dict[str, Any] = {**stored, **(entry or {})}
    for key in ("training_data", "license"):  # weights inherit the terms of their data
        if key in fields:
            metadata[key] = json.dumps(fields[key], sort_keys=True) if key == "training_data" else str(fields[key])

    write_atomic(out, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    digest = sha256_file(out)
    size = out.stat().st_size

    record: Dict[str, Any] = {
        "method": method,
        "repo_id": DEFAULT_REPO_ID,
        "filename": out.name,
        "revision": f"v{__version__}",
        "default": False,
    }
    record.update(fields)
    # A Hub path may put the file in a folder; its base name must still be the written file's.
    hub_path = str(fields.get("filename", out.name))
    record.update({"method": method, "filename": hub_path if hub_path.rsplit("/", 1)[-1] == out.name else out.name,
                   "sha256": digest, "size": size, "dtype": dtype_name})
    if model_args and "config" not in record:
        record["config"] = dict(model_args)
    order = [f.name for f in dataclasses.fields(WeightInfo) if f.name != "name"]
    record = {k: record[k] for k in order if k in record} | {k: v for k, v in record.items() if k not in order}
    missing = tuple(k for k in _REQUIRED_ENTRY_FIELDS if k not in record)
    return ExportResult(path=out, sha256=digest, size=size, entry=record, missing=missing, metadata=metadata)
