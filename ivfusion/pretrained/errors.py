"""Exceptions of the pretrained-weights package (all importable from :mod:`ivfusion.pretrained`)."""
from __future__ import annotations

__all__ = [
    "ManifestError",
    "WeightsError",
    "WeightNotFoundError",
    "ChecksumError",
    "CorruptWeightsError",
    "StateDictMismatchError",
]


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
