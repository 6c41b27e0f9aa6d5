"""LightningDataModule over a preprocessed store: patient-level splits, case-balanced DDP-aware sampling."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
from torch.utils.data import DataLoader, DistributedSampler

from mammokit.data.augment import build_augment, loader_worker_kwargs
from mammokit.data.dataset import ExamDataset, collate
from mammokit.data.sampler import BalancedCaseSampler
from mammokit.data.splits import assign_splits
from mammokit.datasets.public_common import SPLIT_RANK
from mammokit.errors import InvalidInputError
from mammokit.training.config import DataConfig

OFFICIAL_SPLITS = tuple(sorted(SPLIT_RANK, key=SPLIT_RANK.get))  # the adapters' vocabulary, most held-out last
SPLIT_SOURCES = ("auto", "official", "random")


def official_splits(table: pd.DataFrame) -> pd.Series | None:
    """Each row's official split from `split_group` (train / val / test, as the dataset adapters write it), spread
    to every row of the patient (the most held-out one wins); None when the table has no such split."""
    if "split_group" not in table.columns:
        return None
    group = table["split_group"].astype(object).where(table["split_group"].isin(OFFICIAL_SPLITS), None)
    if group.isna().all() or table["split_group"].dropna().astype(str).isin(OFFICIAL_SPLITS).mean() < 1:
        return None  # absent, or another grouping (e.g. synth's fold numbers)
    per_patient = group.map(SPLIT_RANK).groupby(table["patient_id"]).transform("max")  # as the adapters unify
    return per_patient.map(dict(enumerate(OFFICIAL_SPLITS)))


def with_splits(table: pd.DataFrame, *, seed: int, val_fraction: float = 0.2, test_fraction: float = 0.0,
                source: str = "auto") -> pd.DataFrame:
    """Add a `split` column by patient unless the table already has one.

    `source` "official" keeps the dataset's own split (`split_group`: train / val / test) and, when it has no val,
    carves `val_fraction` of its train patients out as validation (stratified by cancer and site); "random" splits
    every patient into train / val / test (`test_fraction` of them held out as an internal test set, none by
    default); "auto" is "official" when the table has an official split, else "random". Patients without an
    official split (unlabelled images) are split like the train patients.
    """
    if source not in SPLIT_SOURCES:
        raise InvalidInputError(f"split source {source!r}: choose from {', '.join(SPLIT_SOURCES)}")
    if not (0 < val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise InvalidInputError(f"val_fraction={val_fraction}, test_fraction={test_fraction}: need shares in (0, 1) "
                                "that leave patients to train on")
    if "split" in table.columns and table["split"].notna().all():
        return table
    official = official_splits(table) if source != "random" else None
    if source == "official" and official is None:
        raise InvalidInputError("data.split_source=official, but the store has no official split (split_group "
                                "train / val / test from a dataset adapter)")
    if official is None:
        fractions = {"train": 1 - val_fraction - test_fraction, "val": val_fraction, "test": test_fraction}
    elif (official == "val").any():
        fractions = {"train": 1.0}  # the dataset's own val is used as it is
    else:
        fractions = {"train": 1 - val_fraction, "val": val_fraction}
    fractions = {k: v for k, v in fractions.items() if v > 0}
    split = pd.Series(official if official is not None else None, index=table.index, dtype=object)
    free = split.isna() | (split == "train")
    if free.any():
        split[free] = _random_splits(table[free], seed=seed, fractions=fractions).to_numpy()
    return table.assign(split=split.to_numpy())


def _random_splits(table: pd.DataFrame, *, seed: int, fractions: dict[str, float]) -> pd.Series:
    """Patient-level split of `table`'s rows, stratified by exam cancer label and site."""
    if len(fractions) == 1:
        return pd.Series(next(iter(fractions)), index=table.index)
    exam_label = table.groupby("exam_id")["cancer"].transform(lambda s: float((s == 1).any()))
    work = table.assign(_exam_label=exam_label.fillna(0).astype(int))
    site = "site" if "site" in work.columns and work["site"].notna().all() else None
    return assign_splits(work, patient_col="patient_id", label_col="_exam_label", site_col=site, fractions=fractions,
                         seed=seed)


def unique_items(rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Validation rows gathered over ranks, each dataset item once (by its `index`), in item order.

    The DDP validation sampler repeats items to give every rank the same length; a repeat left in would count twice
    in the validation AUC that picks the best epoch.
    """
    _, first = np.unique(rows["index"], return_index=True)
    return {k: v[first] for k, v in rows.items()}


class MammoDataModule(L.LightningDataModule):
    """Train/val loaders; the train sampler is built when the loader is requested, so DDP rank/world are known."""

    def __init__(self, config: DataConfig, table: pd.DataFrame, *, seed: int = 0, epochs: int = 1,
                 max_steps_per_epoch: int | None = None) -> None:
        super().__init__()
        self.cfg = config
        self.table = table
        self.seed = seed
        self.epochs = max(1, epochs)
        self.max_steps_per_epoch = max_steps_per_epoch
        self.resume_skip_batches = 0  # set by the module when resuming mid-epoch
        self.resume_epoch: int | None = None  # the epoch a resumed checkpoint stopped in (set by the module)
        store = Path(config.store)
        stats_path = store / "view_stats.json"
        self.view_stats = json.loads(stats_path.read_text()) if stats_path.is_file() else {}
        self.train_set = self._dataset(config.train_split, augment=True)
        self.val_set = self._dataset(config.val_split, augment=False)

    def _dataset(self, split: str, *, augment: bool) -> ExamDataset:
        rows = self.table[self.table["split"] == split]
        if rows.empty:
            present = sorted(self.table["split"].unique())
            raise InvalidInputError(f"split {split!r} is empty in {self.cfg.store} (splits present: {present})")
        return ExamDataset(
            rows, self.cfg.store, level=self.cfg.level, input_size=self.cfg.input_size, full_scale=self.cfg.full_scale,
            normalization=self.cfg.normalization, view_stats=self.view_stats,
            augment=build_augment(self.cfg.augment) if augment else None, seed=self.seed,
        )

    def _loader_kwargs(self) -> dict[str, Any]:
        """Batching plus `loader_worker_kwargs`: spawned workers, kept for the whole stage (their start-up is paid
        once). Augmentation does not depend on worker state (each item carries its epoch from the sampler), so
        persistence changes no random stream."""
        return {"batch_size": self.cfg.batch_size, "collate_fn": collate,
                **loader_worker_kwargs(self.cfg.num_workers, persistent=True)}

    def train_sampler(self) -> BalancedCaseSampler:
        """Case-level balanced sampler for this rank (labels: exam positive if any breast has cancer)."""
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        n = len(self.train_set)
        if self.max_steps_per_epoch:
            n = min(n, self.max_steps_per_epoch * self.cfg.batch_size * world)
        return BalancedCaseSampler(
            self.train_set.item_groups(), self.train_set.item_labels(), ratio_start=self.cfg.positive_ratio,
            ratio_end=self.cfg.positive_ratio_end, ramp_epochs=self.epochs, num_samples=n, num_replicas=world,
            rank=rank, seed=self.seed, drop_last=True, with_epoch=True,
        )

    def train_dataloader(self) -> DataLoader:
        sampler = ResumableSampler(self.train_sampler(), self.resume_skip_batches * self.cfg.batch_size)
        if self.resume_epoch is not None:  # Lightning iterates once before its own set_epoch on a resume
            sampler.set_epoch(self.resume_epoch)
        self.resume_skip_batches, self.resume_epoch = 0, None
        return DataLoader(self.train_set, sampler=sampler, **self._loader_kwargs())

    def val_dataloader(self) -> DataLoader:
        """In item order; under DDP each rank takes every world-th item, padded with repeats to the same length so
        all ranks run the same steps (`unique_items` drops the repeats after the gather)."""
        trainer = self.trainer
        sampler = None
        if trainer is not None and trainer.world_size > 1:
            sampler = DistributedSampler(self.val_set, num_replicas=trainer.world_size, rank=trainer.global_rank,
                                         shuffle=False)
        return DataLoader(self.val_set, sampler=sampler, shuffle=False, **self._loader_kwargs())


class ResumableSampler:
    """Wraps a sampler so the first epoch after a mid-epoch resume skips the items already trained on.

    The length stays the full epoch's (Lightning counts the restored batches), only the iteration starts later, so
    a resumed run sees exactly the data order of an uninterrupted one.
    """

    def __init__(self, sampler: BalancedCaseSampler, skip: int = 0) -> None:
        self.sampler = sampler
        self.skip = max(0, int(skip))

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        items = list(iter(self.sampler))
        skip, self.skip = self.skip, 0
        return iter(items[skip:] if skip < len(items) else items)
