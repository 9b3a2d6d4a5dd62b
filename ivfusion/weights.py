"""Deprecated alias of the pre-0.2 module ``ivfusion.weights``; it will be removed in the next release.

Pretrained weights now live in :mod:`ivfusion.pretrained` (manifest, resolution, file checks) and
:mod:`ivfusion.models` (``create_model``, ``load_model``, ``load_weights``, ``weight_config``);
checkpoint export in :mod:`ivfusion.train.export`. Every name this module had is still reachable
here, with a :class:`DeprecationWarning` naming its new home.
"""
from __future__ import annotations

import importlib
import warnings
from typing import Any, Dict, List

_NEW_HOMES: Dict[str, str] = {
    **dict.fromkeys(
        [
            "SCHEMA_VERSION", "BUNDLED_DIR", "PACKAGE_MANIFEST", "REPO_MANIFEST", "DEFAULT_REPO_ID",
            "ManifestError", "WeightsError", "WeightNotFoundError", "ChecksumError", "CorruptWeightsError",
            "StateDictMismatchError", "TrainingData", "Recipe", "WeightInfo", "Manifest", "VerifyResult",
            "load_manifest", "get_manifest", "use_manifest", "list_weights", "default_weight", "get_weight_info",
            "local_copies", "resolve_weight", "read_safetensors_header", "load_state_dict_file",
            "check_state_dict", "sha256_file", "verify_all", "update_manifest", "hub_cache_dir", "hub_endpoint",
            "is_offline",
        ],
        "ivfusion.pretrained",
    ),
    **dict.fromkeys(["load_weights", "weight_config", "load_model"], "ivfusion.models"),
    **dict.fromkeys(["ExportResult", "export_checkpoint"], "ivfusion.train.export"),
}

__all__ = sorted(_NEW_HOMES)


def __getattr__(name: str) -> Any:
    home = _NEW_HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'ivfusion.weights' has no attribute {name!r}")
    warnings.warn(
        f"ivfusion.weights.{name} is deprecated and will be removed in the next release; use {home}.{name}",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(home), name)


def __dir__() -> List[str]:
    return __all__
