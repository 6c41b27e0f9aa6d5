"""Training data: augmentations, case-level balanced sampling, patient-level splits (and the exam dataset)."""

from mammokit.data.augment import (
    Augment,
    AugmentConfig,
    AugmentRecord,
    TTATransform,
    build_augment,
    cutmix,
    item_rng,
    loader_worker_kwargs,
    map_heatmap_back,
    mix_batch,
    mixup,
    spawned_worker_init,
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
    "loader_worker_kwargs",
    "map_heatmap_back",
    "mix_batch",
    "mixup",
    "patient_kfold",
    "patient_table",
    "spawned_worker_init",
    "tta_transforms",
    "worker_init_fn",
]
