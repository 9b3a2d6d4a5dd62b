"""Pretrained weights: manifest, resolution, integrity checks, loading and export.

Every published weight has an entry in ``weights_manifest.json`` (shipped inside the package; a
byte-identical copy sits at the repository root), validated when this module is imported. An
entry is named ``"<method>.<tag>"`` (e.g. ``refinefuse.ivif``) and pins a file on the Hugging Face
Hub (``repo_id``, ``filename``, ``revision``) together with its SHA-256 and size.

A weight name is resolved to a local file in this order (the first hit wins):

1. an explicit path to a ``.safetensors`` file (``weights="path/to/file.safetensors"``);
2. ``$IVFUSION_WEIGHTS_DIR/<basename of filename>``;
3. the copy bundled in the package, ``ivfusion/weights/<basename of filename>``
   (:data:`BUNDLED_DIR`);
4. the Hugging Face cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
   ``~/.cache/huggingface/hub``), without any network request;
5. the Hub, through :func:`huggingface_hub.hf_hub_download` at ``$HF_ENDPOINT`` unless
   ``HF_HUB_OFFLINE`` is set.

The environment variables are read at call time. Every manifest file found in steps 2-5 is
checked against the manifest's size and SHA-256 before it is used (verified ``(path, size,
mtime)`` triples are memoised, so a file is hashed once per change). Files are read with
:func:`safetensors.torch.load_file` and loaded with ``load_state_dict(strict=True)``; nothing
downloaded is ever unpickled.

The manifest in use can be replaced for a block of code with :func:`use_manifest`, or for a
process with the ``IVFUSION_MANIFEST`` environment variable (a path to another manifest file).
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
import json
import math
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from . import __version__
from .io import write_atomic
from .models._registry import FusionNet, create_model, get_model_info

__all__ = [
    "SCHEMA_VERSION",
    "BUNDLED_DIR",
    "PACKAGE_MANIFEST",
    "REPO_MANIFEST",
    "DEFAULT_REPO_ID",
    "ManifestError",
    "WeightsError",
    "WeightNotFoundError",
    "ChecksumError",
    "CorruptWeightsError",
    "StateDictMismatchError",
    "TrainingData",
    "Recipe",
    "WeightInfo",
    "Manifest",
    "VerifyResult",
    "ExportResult",
    "load_manifest",
    "get_manifest",
    "use_manifest",
    "list_weights",
    "default_weight",
    "get_weight_info",
    "local_copies",
    "resolve_weight",
    "read_safetensors_header",
    "load_state_dict_file",
    "check_state_dict",
    "load_weights",
    "weight_config",
    "load_model",
    "sha256_file",
    "verify_all",
    "export_checkpoint",
    "update_manifest",
    "hub_cache_dir",
    "hub_endpoint",
    "is_offline",
]

#: Version of the manifest layout this module reads and writes.
SCHEMA_VERSION = 1
#: Folder of the weights shipped inside the package (a module variable so tests can move it).
BUNDLED_DIR: Path = Path(__file__).resolve().parent / "weights"
#: The manifest shipped inside the package.
PACKAGE_MANIFEST: Path = Path(__file__).resolve().parent / "weights_manifest.json"
#: The copy at the repository root (exists in a source checkout only).
REPO_MANIFEST: Path = Path(__file__).resolve().parent.parent / "weights_manifest.json"
#: Hub repository used for new entries made by :func:`export_checkpoint` unless told otherwise.
DEFAULT_REPO_ID = "ivfusion/ivfusion-weights"

_MANIFEST_ENV = "IVFUSION_MANIFEST"
_WEIGHTS_DIR_ENV = "IVFUSION_WEIGHTS_DIR"
_DEFAULT_ENDPOINT = "https://huggingface.co"
_HASH_CHUNK = 1 << 20
_MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit for the JSON header
_LIST_LIMIT = 5  # offending keys quoted in a state-dict mismatch message


# ------------------------------------------------------------------------------ exceptions


class ManifestError(ValueError):
    """The weights manifest is malformed (raised at import time for the shipped one)."""


class WeightsError(RuntimeError):
    """A weight could not be resolved, verified or loaded."""


class WeightNotFoundError(WeightsError):
    """No usable copy of a weight: not on disk and not downloadable (offline, network, Hub)."""


class ChecksumError(WeightsError):
    """A file's size or SHA-256 differs from the manifest; the file is not used."""


class CorruptWeightsError(WeightsError):
    """A file is truncated, not a safetensors file, or not a readable training checkpoint."""


class StateDictMismatchError(WeightsError):
    """A state dict does not fit the model (missing/unexpected keys, wrong shapes, other method)."""


# -------------------------------------------------------------------------- manifest schema

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_]*\.[a-z0-9][a-z0-9_\-]*$")
_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
# A release tag: optional "v", a dotted number, optional suffixes ("v0.1.0", "1.2-rc1", "v2+ivif").
_TAG_RE = re.compile(r"^v?\d+(?:\.\d+)*(?:[-+_.][0-9A-Za-z]+)*$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_DTYPES = ("float32", "float16", "bfloat16")


def _type_name(types: Tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true/false",
             dict: "an object", list: "a list"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def _field(data: Mapping[str, Any], key: str, types: Tuple[type, ...], where: str,
           *, required: bool = True, default: Any = None) -> Any:
    """Fetch ``data[key]`` checking its JSON type (bools are not integers here)."""
    if key not in data:
        if required:
            raise ManifestError(f"{where}: missing field {key!r}")
        return default
    value = data[key]
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if float in types and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        raise ManifestError(f"{where}: field {key!r} must be {_type_name(types)}, got {value!r}")
    return value


def _no_unknown(data: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    extra = sorted(set(data) - set(allowed))
    if extra:
        raise ManifestError(f"{where}: unknown field(s) {extra}; allowed: {list(allowed)}")


def _nonempty(value: str, key: str, where: str) -> str:
    if not value.strip():
        raise ManifestError(f"{where}: field {key!r} must not be empty")
    return value


def _positive(value: Optional[int], key: str, where: str) -> Optional[int]:
    if value is not None and value <= 0:
        raise ManifestError(f"{where}: field {key!r} must be positive, got {value}")
    return value


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ManifestError(f"{where}: expected an object, got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class TrainingData:
    """One training folder of a weight and the terms its images come with."""

    #: Folder relative to the data root, e.g. ``"ivif/train/tno"``.
    folder: str
    #: Terms of use of the images (weights inherit them), e.g. ``"CC BY 4.0"``.
    terms: str
    #: Number of image pairs used from the folder.
    pairs: Optional[int] = None

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "TrainingData":
        data = _mapping(data, where)
        _no_unknown(data, [f.name for f in dataclasses.fields(cls)], where)
        return cls(
            folder=_nonempty(_field(data, "folder", (str,), where), "folder", where),
            terms=_nonempty(_field(data, "terms", (str,), where), "terms", where),
            pairs=_positive(_field(data, "pairs", (int,), where, required=False), "pairs", where),
        )


@dataclass(frozen=True)
class Recipe:
    """How a weight was trained (enough to reproduce the run)."""

    #: Crop side in pixels.
    crop: int
    #: Batch size.
    batch: int
    #: Initial learning rate.
    lr: float
    #: Hardware and time, e.g. ``"1x H100, 40 min"``.
    hardware: str
    #: Epochs and/or optimiser iterations; at least one is given.
    epochs: Optional[int] = None
    iterations: Optional[int] = None
    #: Optimiser and schedule, e.g. ``"SGD momentum 0.9, cosine 1e-3 -> 1e-5"``.
    optimizer: str = ""
    #: Random seed of the run.
    seed: Optional[int] = None
    #: Compute precision of the training run, e.g. ``"float32"``, ``"bfloat16 autocast"``.
    precision: str = ""
    #: How the run departs from the paper's recipe, and why.
    notes: str = ""

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "Recipe":
        data = _mapping(data, where)
        _no_unknown(data, [f.name for f in dataclasses.fields(cls)], where)
        recipe = cls(
            crop=_positive(_field(data, "crop", (int,), where), "crop", where),
            batch=_positive(_field(data, "batch", (int,), where), "batch", where),
            lr=float(_field(data, "lr", (float,), where)),
            hardware=_nonempty(_field(data, "hardware", (str,), where), "hardware", where),
            epochs=_positive(_field(data, "epochs", (int,), where, required=False), "epochs", where),
            iterations=_positive(_field(data, "iterations", (int,), where, required=False), "iterations", where),
            optimizer=_field(data, "optimizer", (str,), where, required=False, default=""),
            seed=_field(data, "seed", (int,), where, required=False),
            precision=_field(data, "precision", (str,), where, required=False, default=""),
            notes=_field(data, "notes", (str,), where, required=False, default=""),
        )
        if not (recipe.lr > 0 and math.isfinite(recipe.lr)):
            raise ManifestError(f"{where}: field 'lr' must be a positive number, got {recipe.lr!r}")
        if recipe.epochs is None and recipe.iterations is None:
            raise ManifestError(f"{where}: give 'epochs' or 'iterations' (or both)")
        return recipe


@dataclass(frozen=True)
class WeightInfo:
    """One manifest entry (all its fields; ``name`` is the manifest key)."""

    #: ``"<method>.<tag>"``.
    name: str
    #: Registered network the weight is for (the part of ``name`` before the dot).
    method: str
    #: Hub repository, ``"owner/name"``.
    repo_id: str
    #: Path of the ``*.safetensors`` file inside the Hub repository.
    filename: str
    #: Pinned Hub revision: a 40-hex commit or a release tag such as ``"v0.1.0"`` (never a branch).
    revision: str
    #: SHA-256 of the file, 64 lower-case hex digits.
    sha256: str
    #: File size in bytes.
    size: int
    #: Licence of the weight file (it also inherits the terms of its training data).
    license: str
    #: Whether ``create_model(method, pretrained=True)`` and ``fuse()`` use this weight.
    default: bool
    training_data: Tuple[TrainingData, ...]
    recipe: Recipe
    #: Validation metrics: evaluation folder -> metric name -> value.
    metrics: Mapping[str, Mapping[str, float]]
    #: Shell command that reproduces the file.
    reproduce: str
    #: Constructor options of the network the weight was trained with (empty = the defaults).
    config: Mapping[str, Any] = field(default_factory=dict)
    #: Storage dtype of the floating-point tensors in the file.
    dtype: str = "float32"
    description: str = ""

    @property
    def tag(self) -> str:
        """The part of :attr:`name` after the dot (``"ivif"`` for ``refinefuse.ivif``)."""
        return self.name.split(".", 1)[1]

    @property
    def basename(self) -> str:
        """File name looked up in ``$IVFUSION_WEIGHTS_DIR`` and :data:`BUNDLED_DIR`."""
        return self.filename.rsplit("/", 1)[-1]

    @classmethod
    def from_dict(cls, name: str, data: Any, where: str) -> "WeightInfo":
        """Validate one manifest entry; :class:`ManifestError` naming the field otherwise."""
        where = f"{where}: weight {name!r}"
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ManifestError(f"{where}: the name must look like '<method>.<tag>' "
                                f"(lower case letters, digits, '_' and '-')")
        data = _mapping(data, where)
        allowed = [f.name for f in dataclasses.fields(cls) if f.name != "name"]
        _no_unknown(data, allowed, where)
        method = _field(data, "method", (str,), where)
        if method != name.split(".", 1)[0]:
            raise ManifestError(f"{where}: 'method' is {method!r} but the name starts with "
                                f"{name.split('.', 1)[0]!r}")
        repo_id = _field(data, "repo_id", (str,), where)
        if not _REPO_ID_RE.match(repo_id):
            raise ManifestError(f"{where}: 'repo_id' must look like 'owner/name', got {repo_id!r}")
        filename = _field(data, "filename", (str,), where)
        parts = filename.split("/")
        if (not filename.endswith(".safetensors") or filename.startswith("/") or "\\" in filename
                or any(p in ("", ".", "..") for p in parts)):
            raise ManifestError(f"{where}: 'filename' must be a relative '*.safetensors' path inside "
                                f"the repository, got {filename!r}")
        revision = _field(data, "revision", (str,), where)
        if not (_COMMIT_RE.match(revision) or _TAG_RE.match(revision)):
            raise ManifestError(
                f"{where}: 'revision' must be pinned: a 40-hex commit or a release tag such as "
                f"'v0.1.0', got {revision!r} (branch names move and are not accepted)")
        sha256 = _field(data, "sha256", (str,), where)
        if not _SHA256_RE.match(sha256):
            raise ManifestError(f"{where}: 'sha256' must be 64 lower-case hex digits, got {sha256!r}")
        size = _positive(_field(data, "size", (int,), where), "size", where)
        raw_data = _field(data, "training_data", (list,), where)
        if not raw_data:
            raise ManifestError(f"{where}: 'training_data' must list at least one folder")
        training = tuple(TrainingData.from_dict(d, f"{where}.training_data[{i}]")
                         for i, d in enumerate(raw_data))
        metrics_raw = _field(data, "metrics", (dict,), where)
        metrics: Dict[str, Dict[str, float]] = {}
        for split, values in metrics_raw.items():
            values = _mapping(values, f"{where}.metrics[{split!r}]")
            metrics[split] = {k: float(_field(values, k, (float,), f"{where}.metrics[{split!r}]"))
                              for k in values}
        dtype = _field(data, "dtype", (str,), where, required=False, default="float32")
        if dtype not in _DTYPES:
            raise ManifestError(f"{where}: 'dtype' must be one of {list(_DTYPES)}, got {dtype!r}")
        config = _field(data, "config", (dict,), where, required=False, default={})
        return cls(
            name=name,
            method=method,
            repo_id=repo_id,
            filename=filename,
            revision=revision,
            sha256=sha256,
            size=size,
            license=_nonempty(_field(data, "license", (str,), where), "license", where),
            default=_field(data, "default", (bool,), where),
            training_data=training,
            recipe=Recipe.from_dict(_field(data, "recipe", (dict,), where), f"{where}.recipe"),
            metrics=metrics,
            reproduce=_nonempty(_field(data, "reproduce", (str,), where), "reproduce", where),
            config=dict(config),
            dtype=dtype,
            description=_field(data, "description", (str,), where, required=False, default=""),
        )

    def to_dict(self) -> Dict[str, Any]:
        """The manifest JSON form of the entry (without its name), in canonical field order."""
        out = dataclasses.asdict(self)
        del out["name"]
        out["training_data"] = [{k: v for k, v in d.items() if v is not None} for d in out["training_data"]]
        out["recipe"] = {k: v for k, v in out["recipe"].items() if v not in (None, "")}
        out["metrics"] = {k: dict(v) for k, v in self.metrics.items()}
        out["config"] = dict(self.config)
        if not self.description:
            del out["description"]
        return out


@dataclass(frozen=True)
class Manifest:
    """A validated manifest: weight name -> :class:`WeightInfo`."""

    weights: Mapping[str, WeightInfo]
    #: Where it was read from (for messages).
    source: str = "<memory>"
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def from_dict(cls, data: Any, source: str = "<memory>") -> "Manifest":
        """Validate the JSON form ``{"schema_version": 1, "weights": {name: entry}}``."""
        data = _mapping(data, source)
        _no_unknown(data, ["schema_version", "weights", "description"], source)
        version = _field(data, "schema_version", (int,), source)
        if version != SCHEMA_VERSION:
            raise ManifestError(f"{source}: schema_version {version} is not supported "
                                f"(this ivfusion reads version {SCHEMA_VERSION}); upgrade ivfusion")
        raw = _field(data, "weights", (dict,), source)
        weights = {name: WeightInfo.from_dict(name, entry, source) for name, entry in raw.items()}
        defaults: Dict[str, List[str]] = {}
        for info in weights.values():
            if info.default:
                defaults.setdefault(info.method, []).append(info.name)
        for method, names in defaults.items():
            if len(names) > 1:
                raise ManifestError(f"{source}: method {method!r} has {len(names)} default weights "
                                    f"{sorted(names)}; mark exactly one with \"default\": true")
        return cls(weights=dict(sorted(weights.items())), source=source, schema_version=version)

    def to_dict(self) -> Dict[str, Any]:
        return {"schema_version": self.schema_version,
                "weights": {name: info.to_dict() for name, info in sorted(self.weights.items())}}


def _dump_manifest(data: Mapping[str, Any]) -> bytes:
    return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


# --------------------------------------------------------------------- active manifest

_MANIFEST_CACHE: Dict[str, Tuple[Tuple[int, int], Manifest]] = {}
_OVERRIDES: List[Manifest] = []
_LOCK = threading.RLock()


def load_manifest(path: Union[str, os.PathLike]) -> Manifest:
    """Read and validate a manifest file; :class:`ManifestError` says what is wrong and where.

    Parsed manifests are cached by ``(path, mtime, size)``.
    """
    path = Path(path).expanduser().resolve()
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ManifestError(f"weights manifest {str(path)!r} does not exist") from None
    key = (st.st_mtime_ns, st.st_size)
    with _LOCK:
        hit = _MANIFEST_CACHE.get(str(path))
        if hit is not None and hit[0] == key:
            return hit[1]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"weights manifest {str(path)!r} is not valid JSON ({exc})") from None
    manifest = Manifest.from_dict(data, source=str(path))
    with _LOCK:
        _MANIFEST_CACHE[str(path)] = (key, manifest)
    return manifest


def get_manifest() -> Manifest:
    """The manifest in use: the innermost :func:`use_manifest`, else ``$IVFUSION_MANIFEST``, else
    the one shipped in the package."""
    with _LOCK:
        if _OVERRIDES:
            return _OVERRIDES[-1]
    env = os.environ.get(_MANIFEST_ENV)
    return load_manifest(env if env else PACKAGE_MANIFEST)


@contextlib.contextmanager
def use_manifest(manifest: Union[Manifest, Mapping[str, Any], str, os.PathLike]) -> Iterator[Manifest]:
    """Use another manifest (object, JSON-form mapping or file path) inside a ``with`` block.

    The switch is process-wide (all threads see it), like ``$IVFUSION_MANIFEST``.
    """
    if isinstance(manifest, Manifest):
        m = manifest
    elif isinstance(manifest, Mapping):
        m = Manifest.from_dict(manifest)
    elif isinstance(manifest, (str, os.PathLike)):
        m = load_manifest(manifest)
    else:
        raise TypeError(f"manifest: expected a Manifest, a mapping or a path, got {type(manifest).__name__}")
    with _LOCK:
        _OVERRIDES.append(m)
    try:
        yield m
    finally:
        with _LOCK:
            _OVERRIDES.remove(m)


def list_weights(method: Optional[str] = None) -> List[str]:
    """Names of the weights in the manifest, sorted; only ``method``'s when given."""
    return [n for n, info in get_manifest().weights.items() if method is None or info.method == method]


def default_weight(method: str) -> Optional[str]:
    """Name of the weight ``create_model(method, pretrained=True)`` loads, or ``None`` if none."""
    if not isinstance(method, str):
        raise TypeError(f"method: expected a string, got {type(method).__name__}")
    for name, info in get_manifest().weights.items():
        if info.method == method and info.default:
            return name
    return None


def get_weight_info(name: str) -> WeightInfo:
    """The manifest entry ``name``; ``ValueError`` listing the known weights otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"weights: expected a weight name, got {type(name).__name__}")
    manifest = get_manifest()
    try:
        return manifest.weights[name]
    except KeyError:
        pass
    known = list(manifest.weights)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(
        f"unknown weight {name!r}.{hint} Known weights: {', '.join(known) if known else 'none yet'} "
        f"(manifest {manifest.source}); or pass a path to a .safetensors file") from None


# --------------------------------------------------------------------------- environment


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


# ------------------------------------------------------------------------------ integrity

_DIGESTS: Dict[Tuple[str, int, int], str] = {}


def sha256_file(path: Union[str, os.PathLike], *, memo: bool = True) -> str:
    """SHA-256 hex digest of a file. With ``memo``, a digest is reused while the file's resolved
    path, size and mtime are unchanged."""
    real = os.path.realpath(path)
    st = os.stat(real)
    key = (real, st.st_size, st.st_mtime_ns)
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


def _verify(path: Path, info: WeightInfo, *, memo: bool = True) -> None:
    """Raise :class:`ChecksumError` unless ``path`` has the manifest's size and SHA-256."""
    real = Path(os.path.realpath(path))
    fix = (f"The file is not used. Delete {str(path)!r}"
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


# ------------------------------------------------------------------------------ resolution


def _is_path_like(value: Union[str, os.PathLike]) -> bool:
    if isinstance(value, os.PathLike):
        return True
    return value.endswith(".safetensors") or os.sep in value or "/" in value or os.path.isfile(value)


def local_copies(name: str) -> List[Tuple[str, Path]]:
    """Files on disk for manifest weight ``name``, in resolution order, without hashing them.

    Returns ``(location, path)`` pairs, location in ``{"env", "bundled", "cache"}``.
    """
    from huggingface_hub import try_to_load_from_cache

    info = get_weight_info(name)
    found: List[Tuple[str, Path]] = []
    env_dir = _weights_dir()
    if env_dir is not None and (env_dir / info.basename).is_file():
        found.append(("env", env_dir / info.basename))
    if (Path(BUNDLED_DIR) / info.basename).is_file():
        found.append(("bundled", Path(BUNDLED_DIR) / info.basename))
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
    SHA-256. An explicit path is checked to be a well-formed safetensors file (it has no
    manifest hash).

    Raises:
        ValueError: unknown weight name (the message lists the known ones).
        FileNotFoundError: an explicit path that does not exist.
        WeightNotFoundError: not on disk and not downloadable.
        ChecksumError: the first copy found differs from the manifest (it is not used, and later
            locations are not tried: a bad file is reported, never silently skipped).
        CorruptWeightsError: an explicit path that is not a valid safetensors file.
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"weights: expected a weight name or a path, got {type(name_or_path).__name__}")
    if isinstance(name_or_path, str) and name_or_path in get_manifest().weights:
        info = get_weight_info(name_or_path)
        copies = local_copies(info.name)
        path = copies[0][1] if copies else _download(info)
        _verify(path, info)
        return path
    if not _is_path_like(name_or_path):
        get_weight_info(str(name_or_path))  # raises the unknown-name error
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights: no such file: {str(path)!r}")
    read_safetensors_header(path)
    return path


# ---------------------------------------------------------------------------------- loading


def _fmt_keys(keys: Sequence[str]) -> str:
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
        parts.append(f"{len(missing)} missing key(s): {_fmt_keys(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {_fmt_keys(unexpected)}")
    if wrong:
        parts.append(f"{len(wrong)} wrong shape(s): {_fmt_keys(wrong)}")
    raise StateDictMismatchError(
        f"{what} does not fit {type(model).__name__}: {'; '.join(parts)}. Check that the weight was made "
        f"for this method and constructor configuration.")


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


# ---------------------------------------------------------------------------------- verify


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
                _verify(path, info, memo=False)
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


# ---------------------------------------------------------------------------------- export


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
    if name is not None and (not _NAME_RE.match(name) or name.split(".", 1)[0] != method):
        raise ValueError(f"name: expected '{method}.<tag>' (lower case, digits, '_', '-'), got {name!r}")
    model_args = config.get("model", {})
    if not isinstance(model_args, dict):
        raise ValueError(f"checkpoint config['model'] must be a dict of constructor options, got {model_args!r}")

    model = create_model(method, **model_args)
    bad = sorted(k for k, v in state.items() if not isinstance(v, torch.Tensor))
    if bad:
        raise CorruptWeightsError(f"checkpoint {str(src)!r}: non-tensor state-dict entries {_fmt_keys(bad)}")
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


def update_manifest(name: str, entry: Mapping[str, Any],
                    paths: Optional[Sequence[Union[str, os.PathLike]]] = None) -> List[Path]:
    """Add or replace entry ``name`` in the manifest files, keeping them byte-identical.

    ``paths`` defaults to the shipped manifest and, in a source checkout, the repository-root
    copy. The entry and the resulting manifest are validated before anything is written; when
    the entry is the default of its method, the method's other entries stop being default.
    Returns the files written.
    """
    if paths is None:
        paths = [p for p in (REPO_MANIFEST, PACKAGE_MANIFEST) if p == PACKAGE_MANIFEST or p.is_file()]
    targets = [Path(p) for p in paths]
    if not targets:
        raise ValueError("paths: expected at least one manifest file")
    contents = {p: p.read_bytes() for p in targets if p.is_file()}
    if len(set(contents.values())) > 1:
        raise ManifestError(f"the manifest copies {[str(p) for p in contents]} differ; make them identical first")
    if contents:
        try:
            data = json.loads(next(iter(contents.values())).decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ManifestError(f"{targets[0]}: not valid JSON ({exc})") from None
        Manifest.from_dict(data, source=str(targets[0]))  # refuse to build on an invalid file
    else:
        data = {"schema_version": SCHEMA_VERSION, "weights": {}}
    info = WeightInfo.from_dict(name, dict(entry), "new entry")
    weights = dict(data["weights"])
    if info.default:
        for other, raw in weights.items():
            if other != name and isinstance(raw, dict) and raw.get("method") == info.method and raw.get("default"):
                weights[other] = {**raw, "default": False}
    weights[name] = info.to_dict()
    data = {**data, "weights": dict(sorted(weights.items()))}
    Manifest.from_dict(data, source="updated manifest")
    blob = _dump_manifest(data)
    for p in targets:
        write_atomic(p, lambda tmp: Path(tmp).write_bytes(blob))
    return targets


# Validate the shipped manifest (and an $IVFUSION_MANIFEST override) when the module is imported.
get_manifest()
