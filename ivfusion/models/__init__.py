"""Fusion networks and their registry.

>>> import ivfusion
>>> ivfusion.list_models()            # doctest: +SKIP
['didfuse', 'f3net', 'fiscnet', 'refinefuse']
>>> net = ivfusion.create_model("didfuse")          # random init, eval mode  # doctest: +SKIP
"""
from ._builder import create_model, create_random_model, load_model, load_weights, weight_config
from ._registry import (
    FusionNet,
    ModelInfo,
    count_parameters,
    get_model_info,
    list_models,
    measure_flops,
    register_model,
)

__all__ = [
    "FusionNet",
    "ModelInfo",
    "count_parameters",
    "create_model",
    "create_random_model",
    "load_model",
    "load_weights",
    "weight_config",
    "get_model_info",
    "list_models",
    "measure_flops",
    "register_model",
]

from . import didfuse, fiscnet  # noqa: F401,E402  (registers the models)
from . import f3net, refinefuse  # noqa: F401,E402  (registers the models)
