"""The schema of ``weights_manifest.json``: typed, validated entries (:class:`WeightInfo`) and the
whole file (:class:`Manifest`). Every check raises :class:`ManifestError` saying what is wrong and
where."""
from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .errors import ManifestError

__all__ = ["SCHEMA_VERSION", "WEIGHT_NAME_RE", "TASKS", "TrainingData", "Recipe", "WeightInfo", "Manifest"]

#: Version of the manifest layout this package reads and writes.
SCHEMA_VERSION = 1


#: What a manifest weight name looks like: ``"<method>.<tag>"``, lower case.
WEIGHT_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_]*\.[a-z0-9][a-z0-9_\-]*$")
_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
# A release tag: optional "v", a dotted number, optional suffixes ("v0.1.0", "1.2-rc1", "v2+ivif").
_TAG_RE = re.compile(r"^v?\d+(?:\.\d+)*(?:[-+_.][0-9A-Za-z]+)*$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_DTYPES = ("float32", "float16", "bfloat16")
#: What a weight is for: a fusion network (``ivfusion.list_models()``) or the registration network
#: (``ivfusion.registration``).
TASKS = ("fusion", "registration")


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
    #: ``"fusion"`` (default; ``method`` is a fusion network) or ``"registration"``.
    task: str = "fusion"

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
        if not isinstance(name, str) or not WEIGHT_NAME_RE.match(name):
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
        task = _field(data, "task", (str,), where, required=False, default="fusion")
        if task not in TASKS:
            raise ManifestError(f"{where}: 'task' must be one of {list(TASKS)}, got {task!r}")
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
            task=task,
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
        if self.task == "fusion":
            del out["task"]
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
