"""Registration of an infrared image to a visible one: :func:`register` and :class:`Registration`.

A thermal camera beside a colour camera has another lens, resolution and viewpoint; its image must
be warped into the visible frame before the pair can be fused pixel by pixel.

>>> import ivfusion
>>> rig = ivfusion.register("ir.png", "vis.png", model="homography")        # doctest: +SKIP
>>> rig.save("rig.json")                                                      # doctest: +SKIP
>>> fused = ivfusion.fuse("ir.png", "vis.png", align="rig.json")             # doctest: +SKIP

Layout: ``_geometry`` (pixel grids, homographies, the deformation field, resampling),
``_similarity`` (NGF orientation tensors, MIND-SSC, pyramids), ``_levels`` (the classical
estimator's settings, frame units, feature pyramid and resampling), ``_classical`` (global search,
Gauss-Newton refinement, confidence statistics), ``_network`` (the learned RegNet), ``_bounds``
(plausibility checks),
``_result`` (:class:`Registration` and its JSON file), ``_api`` (:func:`register`,
:func:`register_pairs`), ``synthetic`` (random rig-like warps with their truth, for benchmarks,
training and tests).
"""
from ._api import (
    DEFAULT_ESTIMATOR,
    DEFAULT_MODEL,
    ESTIMATORS,
    LOW_CONFIDENCE,
    RegistrationError,
    RegistrationWarning,
    register,
    register_pairs,
)
from ._classical import ClassicalSettings
from ._network import RegNet, load_regnet
from ._result import FORMAT, FORMAT_VERSION, MODELS, Registration

__all__ = [
    "register",
    "register_pairs",
    "Registration",
    "ClassicalSettings",
    "RegNet",
    "load_regnet",
    "MODELS",
    "ESTIMATORS",
    "DEFAULT_ESTIMATOR",
    "DEFAULT_MODEL",
    "LOW_CONFIDENCE",
    "RegistrationWarning",
    "RegistrationError",
    "FORMAT",
    "FORMAT_VERSION",
]
