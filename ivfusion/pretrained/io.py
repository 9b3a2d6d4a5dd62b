"""Reading and checking weight files: SHA-256 digests, the safetensors header, state dicts.

Files are read with :func:`safetensors.torch.load_file` only after their header has been checked;
nothing is ever unpickled.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .errors import ChecksumError, CorruptWeightsError, StateDictMismatchError
from .manifest import WeightInfo

__all__ = [
    "file_identity",
    "sha256_file",
    "verify_file",
    "read_safetensors_header",
    "load_state_dict_file",
    "check_state_dict",
    "format_keys",
]

_HASH_CHUNK = 1 << 20
_MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit for the JSON header
_LIST_LIMIT = 5  # offending keys quoted in a state-dict mismatch message
_DIGESTS: Dict[Tuple[Any, ...], str] = {}
_LOCK = threading.Lock()


def file_identity(path: Union[str, os.PathLike]) -> Tuple[Any, ...]:
    """What identifies a file's content without reading it: its resolved path, device, inode, size,
    and modification and change times in ns. The change time (``st_ctime_ns``) moves on every write
    and on every ``utime``, so a file rewritten in place with its modification time put back gets a
    new identity."""
    real = os.path.realpath(path)
    st = os.stat(real)
    return (real, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def sha256_file(path: Union[str, os.PathLike], *, memo: bool = True) -> str:
    """SHA-256 hex digest of a file. With ``memo``, a digest is reused while the file's identity
    (:func:`file_identity`: path, inode, size, modification and change times) is unchanged."""
    key = file_identity(path)
    real = key[0]
    if memo:
        with _LOCK:
            hit = _DIGESTS.get(key)
        if hit is not None:
            return hit
    digest = _hash_file(real)
    with _LOCK:
        _DIGESTS[key] = digest
    return digest


def _hash_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_HASH_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_file(path: Path, info: WeightInfo, *, memo: bool = True, advice: Optional[str] = None) -> None:
    """Raise :class:`ChecksumError` unless ``path`` has the manifest's size and SHA-256; ``advice``
    replaces the default last sentence of the message (delete the copy and fetch a fresh one)."""
    real = Path(os.path.realpath(path))
    fix = advice or (f"The file is not used. Delete {str(path)!r}"
                     + (f" (a link to {str(real)!r}; delete both)" if real != Path(path) else "")
                     + " and retry to fetch a fresh copy, or fix the manifest if the file is right.")
    size = real.stat().st_size
    if size != info.size:
        raise ChecksumError(f"weight {info.name!r}: {str(path)!r} has {size} bytes, the manifest says "
                            f"{info.size} (truncated or a different file). {fix}")
    digest = sha256_file(real, memo=memo)
    if digest != info.sha256:
        raise ChecksumError(f"weight {info.name!r}: SHA-256 mismatch for {str(path)!r}: got {digest}, "
                            f"the manifest says {info.sha256}. {fix}")


def read_safetensors_header(path: Union[str, os.PathLike], *, what: str = "weights file"
                            ) -> Tuple[Dict[str, Dict[str, Any]], Dict[str, str]]:
    """Parse and check the header of a safetensors file without reading the tensors.

    Returns ``(tensors, metadata)``: tensor name -> ``{"dtype", "shape", "data_offsets"}`` and the
    ``__metadata__`` string map (empty if absent). Raises :class:`CorruptWeightsError` when the
    file is too short, its header is not safetensors JSON, or its data section is truncated or
    has trailing bytes.
    """
    path = Path(path)
    size = path.stat().st_size
    advice = ("Re-download or re-export it; pickled .pt/.pth checkpoints are never loaded, convert "
              "them with `ivfusion weights export`.")

    def bad(reason: str) -> CorruptWeightsError:
        return CorruptWeightsError(f"{what}: {str(path)!r} is not a valid safetensors file: {reason}. {advice}")

    with open(path, "rb") as fh:
        prefix = fh.read(8)
        if len(prefix) < 8:
            raise bad(f"only {size} bytes")
        n = int.from_bytes(prefix, "little")
        if n > min(size - 8, _MAX_HEADER_BYTES):
            raise bad(f"its header claims {n} bytes but the file has {size} (truncated, or another format)")
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise bad("the header is not JSON") from None
    if not isinstance(header, dict):
        raise bad("the header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise bad("__metadata__ is not a string map")
    end = 0
    for key, entry in header.items():
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
                and 0 <= offsets[0] <= offsets[1] and "dtype" in entry and "shape" in entry):
            raise bad(f"malformed entry for tensor {key!r}")
        end = max(end, offsets[1])
    data_bytes = size - 8 - n
    if end > data_bytes:
        raise bad(f"truncated: the tensors need {8 + n + end} bytes, the file has {size}")
    if end < data_bytes:
        raise bad(f"{data_bytes - end} unexpected bytes after the last tensor")
    return header, dict(metadata)


def load_state_dict_file(path: Union[str, os.PathLike], *, what: str = "weights file"
                         ) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """Load a safetensors file on the CPU: ``(state_dict, header metadata)``.

    The header is checked first (:func:`read_safetensors_header`); any failure is a
    :class:`CorruptWeightsError` naming ``what`` and the path.
    """
    from safetensors.torch import load_file

    _, metadata = read_safetensors_header(path, what=what)
    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as exc:  # SafetensorError and friends: report as a corrupt file
        raise CorruptWeightsError(f"{what}: cannot read {str(path)!r} as safetensors ({exc}). "
                                  f"Re-download or re-export it.") from exc
    return tensors, metadata


def format_keys(keys: Sequence[str]) -> str:
    shown = ", ".join(keys[:_LIST_LIMIT])
    return shown + (f", ... ({len(keys) - _LIST_LIMIT} more)" if len(keys) > _LIST_LIMIT else "")


def check_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, what: str = "state dict") -> None:
    """Raise :class:`StateDictMismatchError` unless ``state_dict`` has exactly the model's keys
    with the same shapes (dtypes may differ: ``load_state_dict`` casts). The message lists the
    first missing, unexpected and wrongly shaped keys (file shape vs model shape)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [f"{k} {tuple(state_dict[k].shape)} in the file vs {tuple(v.shape)} in the model"
             for k, v in expected.items() if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)]
    if not (missing or unexpected or wrong):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s): {format_keys(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {format_keys(unexpected)}")
    if wrong:
        parts.append(f"{len(wrong)} wrong shape(s): {format_keys(wrong)}")
    raise StateDictMismatchError(
        f"{what} does not fit {type(model).__name__}: {'; '.join(parts)}. Check that the weight was made "
        f"for this method and constructor configuration.")

