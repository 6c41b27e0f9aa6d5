"""Case-level balanced sampling: oversample positive patients on a schedule, DDP-aware and reproducible.

The unit of balancing is the patient, not the image or exam: each draw first picks a class by the epoch's
positive ratio, then a patient of that class (cycling through the patients in a shuffled order, so all are
seen before any repeats), then one of that patient's items of that class. A patient with ten exams is
therefore drawn as often as a patient with one. Every epoch's list depends only on (seed, epoch), so every
DDP rank builds the same list and takes the positions `rank, rank + num_replicas, ...`: disjoint shares of
equal length. The sampler only orders items it is given; keeping a patient inside one split is the job of
`mammokit.data.splits`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch.distributed as dist
from torch.utils.data import Sampler

from mammokit.errors import InvalidInputError

__all__ = ["BalancedCaseSampler", "linear_ratio"]


def linear_ratio(epoch: int, start: float, end: float, ramp_epochs: int) -> float:
    """Positive ratio at `epoch`: linear from `start` (epoch 0) to `end` (epoch ramp_epochs - 1), then `end`."""
    if ramp_epochs <= 1:
        return float(end)
    t = min(max(epoch, 0), ramp_epochs - 1) / (ramp_epochs - 1)
    return float(start + (end - start) * t)


class BalancedCaseSampler(Sampler[Any]):
    """Yield dataset indices with a scheduled fraction of positive patients; call `set_epoch` every epoch.

    Args:
        groups: patient (or case) id of every dataset item.
        labels: 0/1 label of every item (an exam is positive if it holds a cancer).
        ratio_start: fraction of positive draws at epoch 0.
        ratio_end: fraction at epoch `ramp_epochs - 1` and after; None keeps `ratio_start`.
        ramp_epochs: length of the linear ramp.
        num_samples: draws per epoch over all ranks; None = number of items.
        num_replicas, rank: DDP world size and this rank; None reads torch.distributed (else 1 and 0).
        seed: base seed; the epoch list depends only on (seed, epoch).
        drop_last: drop the tail so every rank gets floor(num_samples / num_replicas) items instead of
            padding the list (by repeating its start) to a multiple of num_replicas.
        with_epoch: yield (index, epoch) pairs so a dataset can seed per-item augmentation even with
            persistent workers (which never see `set_epoch` on the dataset).
    """

    def __init__(
        self,
        groups: Sequence[Any] | np.ndarray,
        labels: Sequence[int] | np.ndarray,
        *,
        ratio_start: float = 0.5,
        ratio_end: float | None = None,
        ramp_epochs: int = 1,
        num_samples: int | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
        seed: int = 0,
        drop_last: bool = False,
        with_epoch: bool = False,
    ) -> None:
        groups = np.asarray(groups)
        labels = np.asarray(labels)
        if groups.ndim != 1 or labels.shape != groups.shape or len(groups) == 0:
            raise ValueError(
                f"groups {groups.shape} and labels {labels.shape}: expected two equal, non-empty 1-D "
                "sequences (one entry per dataset item)"
            )
        if labels.dtype == object or not np.isin(labels, [0, 1]).all():
            raise ValueError("labels: every item needs a 0/1 label")
        if any(g is None or (isinstance(g, float) and math.isnan(g)) for g in groups.tolist()):
            raise ValueError("groups: every item needs a patient id (found None/NaN)")
        ratio_end = ratio_start if ratio_end is None else ratio_end
        for name, value in (("ratio_start", ratio_start), ("ratio_end", ratio_end)):
            if not 0.0 <= value <= 1.0:
                raise InvalidInputError(f"{name}={value}: must be in [0, 1]")
        if ramp_epochs < 1:
            raise ValueError(f"ramp_epochs={ramp_epochs}: must be >= 1")
        if num_replicas is None:
            num_replicas = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if rank is None:
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"rank={rank}, num_replicas={num_replicas}: need 0 <= rank < num_replicas")
        self.num_samples = len(groups) if num_samples is None else int(num_samples)
        if self.num_samples < num_replicas:
            raise ValueError(f"num_samples={self.num_samples}: need at least one draw per rank ({num_replicas})")
        labels = labels.astype(np.int64)
        # Per class: a list of patients, each with the array of its items of that class.
        self._pools: dict[int, list[np.ndarray]] = {}
        for cls in (0, 1):
            idx = np.flatnonzero(labels == cls)
            keys, inverse = np.unique(groups[idx], return_inverse=True)
            order = np.argsort(inverse, kind="stable")
            splits = np.cumsum(np.bincount(inverse, minlength=len(keys)))[:-1]
            self._pools[cls] = np.split(idx[order], splits) if len(idx) else []
        if max(ratio_start, ratio_end) > 0 and not self._pools[1]:
            raise InvalidInputError("labels: no positive item, but the positive ratio is above 0")
        if min(ratio_start, ratio_end) < 1 and not self._pools[0]:
            raise InvalidInputError("labels: no negative item, but the positive ratio is below 1")
        self.ratio_start, self.ratio_end, self.ramp_epochs = float(ratio_start), float(ratio_end), int(ramp_epochs)
        self.num_replicas, self.rank, self.seed = int(num_replicas), int(rank), int(seed)
        self.drop_last, self.with_epoch = drop_last, with_epoch
        if drop_last:
            self.per_rank = self.num_samples // self.num_replicas
        else:
            self.per_rank = math.ceil(self.num_samples / self.num_replicas)
        self.epoch = 0

    @property
    def num_patients(self) -> dict[str, int]:
        """Patients with at least one negative / positive item."""
        return {"negative": len(self._pools[0]), "positive": len(self._pools[1])}

    def ratio(self, epoch: int | None = None) -> float:
        """Positive fraction of the draws at `epoch` (default: the current one)."""
        epoch = self.epoch if epoch is None else epoch
        return linear_ratio(epoch, self.ratio_start, self.ratio_end, self.ramp_epochs)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose list `__iter__` yields (same on every rank)."""
        if epoch < 0:
            raise ValueError(f"epoch={epoch}: must be >= 0")
        self.epoch = int(epoch)

    def _draw(self, cls: int, count: int, rng: np.random.Generator) -> np.ndarray:
        """`count` items of class `cls`: patients in shuffled cycles, then one item of each drawn patient."""
        pool = self._pools[cls]
        if count == 0:
            return np.zeros(0, np.int64)
        cycles = math.ceil(count / len(pool))
        patients = np.concatenate([rng.permutation(len(pool)) for _ in range(cycles)])[:count]
        picks = rng.random(count)
        return np.array([pool[p][int(u * len(pool[p]))] for p, u in zip(patients, picks, strict=True)], np.int64)

    def epoch_list(self, epoch: int | None = None) -> np.ndarray:
        """The full list of dataset indices of an epoch over all ranks (padded or truncated for DDP)."""
        epoch = self.epoch if epoch is None else epoch
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(int(epoch),)))
        n_pos = round(self.ratio(epoch) * self.num_samples)
        drawn = np.concatenate([self._draw(1, n_pos, rng), self._draw(0, self.num_samples - n_pos, rng)])
        drawn = drawn[rng.permutation(len(drawn))]
        total = self.per_rank * self.num_replicas
        if total <= len(drawn):
            return drawn[:total]
        return np.concatenate([drawn, np.resize(drawn, total - len(drawn))])

    def __iter__(self) -> Iterator[Any]:
        share = self.epoch_list()[self.rank :: self.num_replicas]
        if self.with_epoch:
            return iter([(int(i), self.epoch) for i in share])
        return iter(share.tolist())

    def __len__(self) -> int:
        return self.per_rank

    def positive_fraction(self, epoch: int | None = None) -> float:
        """Realised fraction of positive draws in an epoch's list (for logging)."""
        pos = set(np.concatenate(self._pools[1]).tolist()) if self._pools[1] else set()
        items = self.epoch_list(epoch)
        return float(np.mean([int(i) in pos for i in items]))

    def state_dict(self) -> dict[str, int]:
        """What resuming needs besides the constructor arguments."""
        return {"epoch": self.epoch, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore `state_dict()`."""
        self.epoch, self.seed = int(state["epoch"]), int(state["seed"])
