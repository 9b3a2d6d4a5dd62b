"""Fusion-quality metrics that agree with the reference evaluator most papers use.

>>> from ivfusion.metrics import evaluate
>>> scores = evaluate("fused.png", "ir.png", "vis.png")            # doctest: +SKIP
>>> scores["EN"], scores["Qabf"]                                    # doctest: +SKIP

* :func:`evaluate` scores one triplet given as paths, PIL images, arrays or tensors;
  :func:`evaluate_batch` scores ``(B, 1, H, W)`` 0..255 tensors in one call per metric (GPU-ready);
  :func:`evaluate_dirs` scores three folders (``ivfusion eval``).
* ``profile="reference"`` reproduces the ``Evaluator`` of the CDDFuse/EMMA code;
  ``profile="standard"`` uses textbook definitions. :mod:`.registry` lists the differences.
* :mod:`.functional` holds one documented torch function per metric.
"""
from . import functional
from .evaluate import DirectoryEvaluation, evaluate, evaluate_batch, evaluate_dirs, match_triplets, prepare_image
from .registry import METRICS, PROFILES, MetricInfo, get_metric, list_metrics

__all__ = [
    "functional",
    "evaluate",
    "evaluate_batch",
    "evaluate_dirs",
    "match_triplets",
    "prepare_image",
    "DirectoryEvaluation",
    "METRICS",
    "PROFILES",
    "MetricInfo",
    "get_metric",
    "list_metrics",
]
