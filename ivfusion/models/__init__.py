"""Fusion networks and their registry.

>>> import ivfusion
>>> ivfusion.list_models()            # doctest: +SKIP
['didfuse', 'f3net', 'fiscnet', 'refinefuse']
>>> net = ivfusion.create_model("didfuse")          # random init, eval mode  # doctest: +SKIP
"""
from ._registry import (
    FusionNet,
    ModelInfo,
    create_model,
    get_model_info,
    list_models,
    register_model,
)

__all__ = ["FusionNet", "ModelInfo", "create_model", "get_model_info", "list_models", "register_model"]
