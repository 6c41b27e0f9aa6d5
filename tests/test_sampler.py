"""Case-level balanced sampler: scheduled positive ratio, patient as the unit, DDP shares, epoch determinism."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from torch.utils.data import DataLoader

from mammokit.data.sampler import BalancedCaseSampler, linear_ratio


def cohort(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """200 patients with 1-5 exams; 20 of them have one positive exam among their exams."""
    rng = np.random.default_rng(seed)
    groups, labels = [], []
    for patient in range(200):
        n = int(rng.integers(1, 6))
        exam_labels = [0] * n
        if patient % 10 == 0:
            exam_labels[-1] = 1
        groups += [f"P{patient:03d}"] * n
        labels += exam_labels
    return np.array(groups), np.array(labels)


def test_positive_fraction_follows_the_linear_schedule() -> None:
    groups, labels = cohort()
    sampler = BalancedCaseSampler(groups, labels, ratio_start=0.5, ratio_end=0.1, ramp_epochs=5, seed=1)
    n = len(sampler)
    for epoch, expected in [(0, 0.5), (2, 0.3), (4, 0.1), (9, 0.1)]:
        sampler.set_epoch(epoch)
        drawn = np.array(list(sampler))
        assert len(drawn) == n == len(labels)
        assert labels[drawn].mean() == pytest.approx(round(expected * n) / n)
        assert sampler.positive_fraction() == pytest.approx(labels[drawn].mean())
    assert linear_ratio(1, 0.5, 0.1, 5) == pytest.approx(0.4)


def test_patients_not_exams_are_the_unit_of_sampling() -> None:
    groups, labels = cohort()
    sampler = BalancedCaseSampler(groups, labels, ratio_start=0.25, seed=3)
    drawn = sampler.epoch_list(0)
    for cls in (0, 1):
        counts = Counter(groups[i] for i in drawn if labels[i] == cls)
        patients = {g for g, lab in zip(groups, labels, strict=True) if lab == cls}
        per_patient = [counts.get(p, 0) for p in patients]
        # Shuffled cycles over patients: every patient drawn floor or ceil of draws / patients times,
        # whether it has one exam or five.
        assert max(per_patient) - min(per_patient) <= 1, cls
    # ...whereas sampling exams uniformly would favour patients with many exams.
    negatives = np.flatnonzero(labels == 0)
    exams_per_patient = Counter(groups[negatives])
    assert max(exams_per_patient.values()) - min(exams_per_patient.values()) > 1


def test_ranks_take_disjoint_equal_shares_of_the_same_epoch_list() -> None:
    groups, labels = cohort()
    n_items = len(labels)
    for drop_last in (False, True):
        ranks = [
            BalancedCaseSampler(groups, labels, ratio_start=0.3, seed=5, num_replicas=3, rank=r, drop_last=drop_last)
            for r in range(3)
        ]
        for s in ranks:
            s.set_epoch(2)
        shares = [list(s) for s in ranks]
        full = ranks[0].epoch_list()
        per_rank = n_items // 3 if drop_last else -(-n_items // 3)
        assert all(len(share) == per_rank == len(s) for share, s in zip(shares, ranks, strict=True))
        assert len(full) == 3 * per_rank
        rebuilt = np.empty(len(full), np.int64)
        for r, share in enumerate(shares):
            rebuilt[r::3] = share
        np.testing.assert_array_equal(rebuilt, full)
        np.testing.assert_array_equal(full, ranks[2].epoch_list())
    single = BalancedCaseSampler(groups, labels, ratio_start=0.3, seed=5).epoch_list(2)
    np.testing.assert_array_equal(full, single[: len(full)])


def test_set_epoch_changes_order_deterministically() -> None:
    groups, labels = cohort()
    a = BalancedCaseSampler(groups, labels, seed=11)
    b = BalancedCaseSampler(groups, labels, seed=11)
    a.set_epoch(4)
    b.set_epoch(4)
    assert list(a) == list(b)
    b.set_epoch(5)
    assert list(a) != list(b)
    assert list(a) != list(BalancedCaseSampler(groups, labels, seed=12, ratio_start=0.5).epoch_list(4))
    state = a.state_dict()
    c = BalancedCaseSampler(groups, labels, seed=0)
    c.load_state_dict(state)
    assert list(c) == list(a)


def test_with_epoch_feeds_index_and_epoch_through_a_dataloader() -> None:
    groups, labels = cohort()
    sampler = BalancedCaseSampler(groups, labels, seed=2, num_samples=12, with_epoch=True)
    sampler.set_epoch(3)

    class Echo:
        def __len__(self) -> int:
            return len(labels)

        def __getitem__(self, key: tuple[int, int]) -> tuple[int, int]:
            return key

    batches = list(DataLoader(Echo(), sampler=sampler, batch_size=4))
    indices = [int(i) for batch in batches for i in batch[0]]
    assert indices == sampler.epoch_list().tolist()
    assert all(int(e) == 3 for batch in batches for e in batch[1])


def test_bad_arguments_are_named() -> None:
    groups, labels = cohort()
    with pytest.raises(ValueError, match="labels"):
        BalancedCaseSampler(groups, np.where(labels == 1, 2, 0))
    with pytest.raises(ValueError, match="groups"):
        BalancedCaseSampler(groups[:-1], labels)
    with pytest.raises(ValueError, match="rank"):
        BalancedCaseSampler(groups, labels, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="no positive"):
        BalancedCaseSampler(groups, np.zeros_like(labels))
    with pytest.raises(ValueError, match="ratio_end"):
        BalancedCaseSampler(groups, labels, ratio_end=1.5)
    assert len(BalancedCaseSampler(groups, np.zeros_like(labels), ratio_start=0.0)) == len(labels)
