"""Pretrained weights: the manifest, where files come from, and reading and checking them.

* :mod:`.schema`: the manifest's typed, validated entries (:class:`WeightInfo`, :class:`Manifest`);
* :mod:`.manifest`: the manifest in use (:func:`get_manifest`, :func:`use_manifest`, lookups) and
  :func:`update_manifest`;
* :mod:`.hub`: resolution through ``$IVFUSION_WEIGHTS_DIR``, the bundled ``files/`` folder, the
  Hugging Face cache and the Hub (:func:`resolve_weight`), and :func:`verify_all`;
* :mod:`.io`: SHA-256 digests, the safetensors header, loading and checking state dicts;
* ``files/``: the bundled ``.safetensors`` files.

This package knows nothing of the networks: :mod:`ivfusion.models._builder` joins a registered
network to its weights (``create_model(..., pretrained=True)``, ``load_model``).
"""
from .errors import (
    ChecksumError,
    CorruptWeightsError,
    ManifestError,
    StateDictMismatchError,
    WeightNotFoundError,
    WeightsError,
)
from .hub import BUNDLED_DIR, VerifyResult, hub_cache_dir, hub_endpoint, is_offline, local_copies, resolve_weight, verify_all
from .io import (
    check_state_dict,
    file_identity,
    load_state_dict_file,
    read_safetensors_header,
    sha256_file,
    verify_file,
)
from .manifest import (
    DEFAULT_REPO_ID,
    PACKAGE_MANIFEST,
    REPO_MANIFEST,
    default_weight,
    get_manifest,
    get_weight_info,
    list_weights,
    load_manifest,
    update_manifest,
    use_manifest,
)
from .schema import SCHEMA_VERSION, Manifest, Recipe, TrainingData, WeightInfo

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
    "load_manifest",
    "get_manifest",
    "use_manifest",
    "list_weights",
    "default_weight",
    "get_weight_info",
    "update_manifest",
    "local_copies",
    "resolve_weight",
    "verify_all",
    "hub_cache_dir",
    "hub_endpoint",
    "is_offline",
    "file_identity",
    "sha256_file",
    "verify_file",
    "read_safetensors_header",
    "load_state_dict_file",
    "check_state_dict",
]
