"""Where weight files come from: the resolution order, the Hugging Face cache and Hub, verification.

A weight name is resolved to a local file in this order (the first hit wins):

1. an explicit path to a ``.safetensors`` file (``weights="path/to/file.safetensors"``);
2. ``$IVFUSION_WEIGHTS_DIR/<basename of filename>``;
3. the copy bundled in the package, ``ivfusion/pretrained/files/<basename of filename>``
   (:data:`BUNDLED_DIR`);
4. the Hugging Face cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
   ``~/.cache/huggingface/hub``), without any network request;
5. the Hub, through :func:`huggingface_hub.hf_hub_download` at ``$HF_ENDPOINT`` unless
   ``HF_HUB_OFFLINE`` is set.

The environment variables are read at call time. Every manifest file found in steps 2-5 is
checked against the manifest's size and SHA-256 before it is used, and so is a path (step 1)
whose safetensors metadata names a manifest weight and whose header is that release's (a copy of
the released file); other paths are only checked to be well-formed. Digests are memoised by the
file's identity (path, inode, size, modification and change times), so a file is hashed once per
change, including a change in place with the modification time put back.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from .._version import __version__
from ..io import is_same_file
from .errors import ChecksumError, CorruptWeightsError, WeightNotFoundError
from .io import read_safetensors_header, verify_file
from .manifest import WeightInfo, get_manifest, get_weight_info

__all__ = [
    "BUNDLED_DIR",
    "VerifyResult",
    "is_offline",
    "hub_cache_dir",
    "hub_endpoint",
    "local_copies",
    "resolve_weight",
    "verify_all",
]

#: Folder of the weights shipped inside the package (a module variable so tests can move it).
BUNDLED_DIR: Path = Path(__file__).resolve().parent / "files"

_WEIGHTS_DIR_ENV = "IVFUSION_WEIGHTS_DIR"
_DEFAULT_ENDPOINT = "https://huggingface.co"


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def is_offline() -> bool:
    """Whether Hub downloads are disabled (``HF_HUB_OFFLINE``, read now)."""
    from huggingface_hub import constants

    # huggingface_hub reads the variable once at import; offline there means offline here too.
    return _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE") or bool(constants.HF_HUB_OFFLINE)


def hub_cache_dir() -> Path:
    """The Hugging Face cache folder, from ``HF_HUB_CACHE`` / ``HF_HOME`` / ``XDG_CACHE_HOME`` now."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(os.path.expandvars(explicit)).expanduser()
    home = os.environ.get("HF_HOME")
    if not home:
        home = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def hub_endpoint() -> str:
    """The Hub URL, from ``HF_ENDPOINT`` now (default ``https://huggingface.co``)."""
    return (os.environ.get("HF_ENDPOINT") or _DEFAULT_ENDPOINT).rstrip("/")


def _weights_dir() -> Optional[Path]:
    value = os.environ.get(_WEIGHTS_DIR_ENV)
    return Path(value).expanduser() if value else None


def _is_path_like(value: Union[str, os.PathLike]) -> bool:
    if isinstance(value, os.PathLike):
        return True
    return value.endswith(".safetensors") or os.sep in value or "/" in value or os.path.isfile(value)


def local_copies(name: str, *, cache: bool = True) -> List[Tuple[str, Path]]:
    """Files on disk for manifest weight ``name``, in resolution order, without hashing them.

    Returns ``(location, path)`` pairs, location in ``{"env", "bundled", "cache"}``; ``cache=False``
    leaves out the Hugging Face cache (and does not import ``huggingface_hub``).
    """
    info = get_weight_info(name)
    found: List[Tuple[str, Path]] = []
    env_dir = _weights_dir()
    if env_dir is not None and (env_dir / info.basename).is_file():
        found.append(("env", env_dir / info.basename))
    if (Path(BUNDLED_DIR) / info.basename).is_file():
        found.append(("bundled", Path(BUNDLED_DIR) / info.basename))
    if not cache:
        return found
    from huggingface_hub import try_to_load_from_cache  # imports tqdm.auto: only when the cache is looked at

    cached = try_to_load_from_cache(info.repo_id, info.filename, cache_dir=str(hub_cache_dir()),
                                    revision=info.revision)
    if isinstance(cached, str) and os.path.isfile(cached):
        found.append(("cache", Path(cached)))
    return found


def _download(info: WeightInfo) -> Path:
    from huggingface_hub import hf_hub_download

    offline = is_offline()
    cache = hub_cache_dir()
    where = f"{info.repo_id}/{info.filename}@{info.revision}"
    manual = (f"download it elsewhere (`hf download {info.repo_id} {info.filename} --revision "
              f"{info.revision}`) and put {info.basename!r} in ${_WEIGHTS_DIR_ENV}")
    try:
        path = hf_hub_download(info.repo_id, info.filename, revision=info.revision, cache_dir=str(cache),
                               endpoint=hub_endpoint(), local_files_only=offline,
                               library_name="ivfusion", library_version=__version__)
    except Exception as exc:  # every hub/network failure becomes one actionable error
        if offline:
            why = ("HF_HUB_OFFLINE is set" if _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE")
                   else "huggingface_hub was imported with HF_HUB_OFFLINE set (restart without it)")
            raise WeightNotFoundError(
                f"weight {info.name!r} is not available offline: {why} and {where} is not "
                f"in the Hugging Face cache {str(cache)!r}. Unset HF_HUB_OFFLINE to download it, or "
                f"{manual}.") from exc
        raise WeightNotFoundError(
            f"weight {info.name!r}: could not download {where} from {hub_endpoint()} "
            f"({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else '-'}). "
            f"Check the network and HF_ENDPOINT, or {manual}.") from exc
    return Path(path)


def resolve_weight(name_or_path: Union[str, os.PathLike]) -> Path:
    """A local, verified file for a manifest weight name or an explicit ``.safetensors`` path.

    Manifest names go through ``$IVFUSION_WEIGHTS_DIR``, the bundled folder, the Hugging Face
    cache and the Hub (see the module docstring) and are checked against the manifest's size and
    SHA-256. An explicit path is checked to be a well-formed safetensors file; when its metadata
    names a manifest weight and its header is that release's, it is checked against the manifest's
    size and SHA-256 too (:func:`_verify_claimed_weight`).

    Raises:
        ValueError: unknown weight name (the message lists the known ones).
        FileNotFoundError: an explicit path that does not exist.
        IsADirectoryError: an explicit path that is a directory.
        WeightNotFoundError: not on disk and not downloadable.
        ChecksumError: the first copy found differs from the manifest (it is not used, and later
            locations are not tried: a bad file is reported, never silently skipped); an explicit
            path that claims to be a manifest weight's file and is not.
        CorruptWeightsError: an explicit path that is not a valid safetensors file.
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"weights: expected a weight name or a path, got {type(name_or_path).__name__}")
    if isinstance(name_or_path, str) and name_or_path in get_manifest().weights:
        info = get_weight_info(name_or_path)
        copies = local_copies(info.name, cache=False) or local_copies(info.name)
        path = copies[0][1] if copies else _download(info)
        verify_file(path, info)
        return path
    if not _is_path_like(name_or_path):
        get_weight_info(str(name_or_path))  # raises the unknown-name error
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        raise IsADirectoryError(f"weights: {str(path)!r} is a directory, not a .safetensors file")
    if not path.is_file():
        raise FileNotFoundError(f"weights: no such file: {str(path)!r}")
    header = read_safetensors_header(path)
    _verify_claimed_weight(path, header)
    return path


def _release_header(info: WeightInfo, exclude: Path) -> Optional[Tuple[Dict[str, Any], Dict[str, str]]]:
    """The safetensors header of manifest weight ``info``'s released file, read from its first local
    copy (``$IVFUSION_WEIGHTS_DIR``, bundled, Hugging Face cache; no download) that verifies against
    the manifest and is not ``exclude``; None when there is none."""
    for _, copy in local_copies(info.name):
        if is_same_file(copy, exclude):
            continue
        try:
            verify_file(copy, info)
            return read_safetensors_header(copy, what=f"weight {info.name!r}")
        except (ChecksumError, CorruptWeightsError, OSError):
            continue
    return None


def _verify_claimed_weight(path: Path, header: Tuple[Dict[str, Any], Dict[str, str]]) -> None:
    """Check a weight file given by path against the manifest entry its metadata names.

    A file whose ``__metadata__["name"]`` is a manifest weight and whose header is that release's
    (compared with a verified local copy; or any header when no verified copy is on disk) claims to be
    the released file, so it must have its size and SHA-256: otherwise :class:`ChecksumError` naming
    the file and the expected digest. A file naming no manifest weight, or one whose header differs
    from the release's (another export under the same name: a training candidate before it is
    published, whose config and step differ), loads as it is.
    """
    name = header[1].get("name")
    weights = get_manifest().weights
    if name not in weights:
        return
    info = weights[name]
    release = _release_header(info, exclude=path)
    if release is not None and release != header:
        return
    verify_file(path, info, advice=(
        f"Its safetensors metadata names manifest weight {name!r}, whose file it would be, but it is not "
        f"that file (damaged or modified); it is not used. Pass weights={name!r} to load the verified "
        f"copy, or restore the file."))


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of checking one file on disk."""

    #: Manifest name, or ``None`` for a bundled file the manifest does not list.
    name: Optional[str]
    #: ``"env"`` (``$IVFUSION_WEIGHTS_DIR``), ``"bundled"`` or ``"cache"``.
    location: str
    path: Path
    #: ``"ok"``, ``"mismatch"`` (size or SHA-256), ``"corrupt"`` or ``"unlisted"``.
    status: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def verify_all() -> List[VerifyResult]:
    """Re-hash every local copy of every manifest weight (``$IVFUSION_WEIGHTS_DIR``, bundled,
    Hugging Face cache) and report bundled ``*.safetensors`` files the manifest does not list.
    Makes no network request; the digest memo is bypassed."""
    results: List[VerifyResult] = []
    manifest = get_manifest()
    listed = set()
    for name, info in manifest.weights.items():
        listed.add(info.basename)
        for location, path in local_copies(name):
            try:
                verify_file(path, info, memo=False)
                read_safetensors_header(path, what=f"weight {name!r}")
            except ChecksumError as exc:
                results.append(VerifyResult(name, location, path, "mismatch", str(exc)))
            except CorruptWeightsError as exc:
                results.append(VerifyResult(name, location, path, "corrupt", str(exc)))
            else:
                results.append(VerifyResult(name, location, path, "ok", info.sha256))
    bundled = Path(BUNDLED_DIR)
    if bundled.is_dir():
        for path in sorted(bundled.glob("*.safetensors")):
            if path.name not in listed:
                results.append(VerifyResult(None, "bundled", path, "unlisted",
                                            f"{path.name} is bundled but not in the manifest {manifest.source}"))
    return results

