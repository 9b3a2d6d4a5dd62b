"""The weights manifest: its schema, the manifest in use, and writing entries.

Every published weight has an entry in ``weights_manifest.json``. The packaged file,
``ivfusion/pretrained/weights_manifest.json`` (:data:`PACKAGE_MANIFEST`), is the source; the copy at
the repository root (:data:`REPO_MANIFEST`) is kept byte-identical by :func:`update_manifest` and
checked by a test. An entry is named ``"<method>.<tag>"`` (e.g. ``refinefuse.ivif``) and pins a file
on the Hugging Face Hub (``repo_id``, ``filename``, ``revision``) with its SHA-256 and size. The
shipped manifest is validated when this module is imported.

The manifest in use can be replaced for a block of code with :func:`use_manifest`, or for a
process with the ``IVFUSION_MANIFEST`` environment variable (a path to another manifest file).
"""
from __future__ import annotations

import contextlib
import difflib
import json
import os
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from ..io import write_atomic
from .errors import ManifestError
from .schema import SCHEMA_VERSION, Manifest, WeightInfo, _dump_manifest

__all__ = [
    "PACKAGE_MANIFEST",
    "REPO_MANIFEST",
    "DEFAULT_REPO_ID",
    "load_manifest",
    "get_manifest",
    "use_manifest",
    "list_weights",
    "default_weight",
    "get_weight_info",
    "update_manifest",
]

#: The manifest shipped inside the package: the source of truth.
PACKAGE_MANIFEST: Path = Path(__file__).resolve().parent / "weights_manifest.json"
#: The byte-identical copy at the repository root (exists in a source checkout only).
REPO_MANIFEST: Path = Path(__file__).resolve().parents[2] / "weights_manifest.json"
#: Hub repository used for new entries unless told otherwise.
DEFAULT_REPO_ID = "ivfusion/ivfusion-weights"

_MANIFEST_ENV = "IVFUSION_MANIFEST"



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
