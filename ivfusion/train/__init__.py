"""Training of the fusion networks: data, the papers' losses, a reproducible trainer.

>>> from ivfusion.train import TrainConfig, train
>>> cfg = TrainConfig.for_method("refinefuse", data=["data/ivif/train/msrs"],
...                              val="data/ivif/val/roadscene", out="runs/rf")   # doctest: +SKIP
>>> result = train(cfg)                                                         # doctest: +SKIP

Command line: ``ivfusion train METHOD --data DIR [DIR ...] --val DIR --out RUN_DIR``.
"""
from .config import METHODS, RECIPES, TrainConfig, lr_factor
from .data import (
    DevicePairs,
    PairedFusionDataset,
    PairFiles,
    StepBatchSampler,
    batch_to_device,
    data_folder_name,
    epoch_permutation,
    find_pairs,
    load_luma,
    make_loader,
    sample_rng,
    vsm_saliency,
)
from .losses import (
    LOSS_TERMS,
    contrast_mask,
    didfuse_loss,
    f3net_loss,
    fiscnet_loss,
    refinefuse_loss,
    sobel_l1_magnitude,
    ssim_loss_map,
)
from ._manifest import DATA_TERMS
from ._runtime import hardware_description
from .trainer import Trainer, TrainResult, train
from .validation import Validation

__all__ = [
    "METHODS",
    "RECIPES",
    "TrainConfig",
    "lr_factor",
    "PairFiles",
    "PairedFusionDataset",
    "StepBatchSampler",
    "batch_to_device",
    "DevicePairs",
    "epoch_permutation",
    "find_pairs",
    "load_luma",
    "make_loader",
    "sample_rng",
    "vsm_saliency",
    "LOSS_TERMS",
    "contrast_mask",
    "didfuse_loss",
    "f3net_loss",
    "fiscnet_loss",
    "refinefuse_loss",
    "sobel_l1_magnitude",
    "ssim_loss_map",
    "DATA_TERMS",
    "Trainer",
    "TrainResult",
    "data_folder_name",
    "hardware_description",
    "train",
    "Validation",
]
