"""Training data: augmentations, case-level balanced sampling, patient-level splits (and the exam dataset)."""

from mammokit.data.augment import (
    Augment,
    AugmentConfig,
    AugmentRecord,
    TTATransform,
    build_augment,
    cutmix,
    item_rng,
    map_heatmap_back,
    mix_batch,
    mixup,
    tta_transforms,
    worker_init_fn,
)
from mammokit.data.sampler import BalancedCaseSampler, linear_ratio
from mammokit.data.splits import assign_splits, check_patient_disjoint, patient_kfold, patient_table

__all__ = [
    "Augment",
    "AugmentConfig",
    "AugmentRecord",
    "BalancedCaseSampler",
    "TTATransform",
    "assign_splits",
    "build_augment",
    "check_patient_disjoint",
    "cutmix",
    "item_rng",
    "linear_ratio",
    "map_heatmap_back",
    "mix_batch",
    "mixup",
    "patient_kfold",
    "patient_table",
    "tta_transforms",
    "worker_init_fn",
]
