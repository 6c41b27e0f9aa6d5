"""Phantom physics: power-law texture, lesion invariants across scales, stored-value mapping."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from mammokit.synth import VENDOR_PROFILES, other_vendors, resolve_vendors
from mammokit.synth.lesions import render_lesion
from mammokit.synth.phantom import BreastSpec, LesionSpec, power_law_texture, render_view
from mammokit.synth.writer import to_stored


def _down(a: np.ndarray, f: int) -> np.ndarray:
    n = a.shape[0] // f * f
    return a[:n, :n].reshape(n // f, f, n // f, f).mean((1, 3))


@pytest.mark.parametrize("beta", [2.5, 3.0])
def test_texture_has_power_law_spectrum(beta: float) -> None:
    field = power_law_texture((512, 512), 0.2, beta, np.random.default_rng(1))
    assert abs(field.mean()) < 1e-4 and abs(field.std() - 1) < 1e-4
    power = np.abs(np.fft.fft2(field)) ** 2
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(512, 0.2), np.fft.fftfreq(512, 0.2)))
    bands = np.geomspace(0.1, 2.0, 12)  # well above f0 = 1/60 mm^-1, below Nyquist 2.5
    centres = np.sqrt(bands[:-1] * bands[1:])
    means = [power[(f >= lo) & (f < hi)].mean() for lo, hi in itertools.pairwise(bands)]
    slope = np.polyfit(np.log(centres), np.log(means), 1)[0]
    assert slope == pytest.approx(-beta, abs=0.25)


@pytest.mark.parametrize("pair", [("spiculated_mass", "circumscribed_mass"),
                                  ("pleomorphic_calcifications", "round_calcifications")])
def test_malignant_equals_benign_when_fine_detail_is_off(pair: tuple[str, str]) -> None:
    a = render_lesion(pair[0], 12.0, 0.5, 0.1, np.random.default_rng(7), detail=0.0).delta
    b = render_lesion(pair[1], 12.0, 0.5, 0.1, np.random.default_rng(7), detail=0.0).delta
    np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("pair", [("spiculated_mass", "circumscribed_mass"),
                                  ("pleomorphic_calcifications", "round_calcifications")])
def test_fine_differences_fade_at_coarse_scale(pair: tuple[str, str]) -> None:
    fine, coarse = [], []
    for seed in range(6):
        mal = render_lesion(pair[0], 12.0, 0.5, 0.05, np.random.default_rng(seed)).delta
        ben = render_lesion(pair[1], 12.0, 0.5, 0.05, np.random.default_rng(seed)).delta
        # Same total brightness: the high-pass part integrates to zero.
        assert mal.sum() == pytest.approx(ben.sum(), rel=0.02)
        fine.append(np.abs(_down(mal, 4) - _down(ben, 4)).max())  # 0.2 mm pixels
        coarse.append(np.abs(_down(mal, 16) - _down(ben, 16)).max())  # 0.8 mm pixels
    assert np.mean(coarse) < 0.45 * np.mean(fine)


def test_mass_integral_and_partial_volume() -> None:
    # Circumscribed mass = projected ellipsoid: integral c * 2/3 * pi * a * b, with b in [0.8a, a].
    c, r = 0.2, 6.0
    ints = []
    for spacing in (0.05, 0.2, 0.4):
        delta = render_lesion("circumscribed_mass", 2 * r, c, spacing, np.random.default_rng(3)).delta
        ints.append(delta.sum() * spacing**2)
    full = c * 2 / 3 * math.pi * r * r
    assert 0.8 * full * 0.98 <= ints[0] <= full * 1.02
    assert ints[1] == pytest.approx(ints[0], rel=0.01) and ints[2] == pytest.approx(ints[0], rel=0.01)


def test_lesion_rejects_bad_kind() -> None:
    with pytest.raises(ValueError, match="kind"):
        render_lesion("triangle", 10, 0.1, 0.1, np.random.default_rng(0))


def test_stored_values_follow_rescale_and_photometric() -> None:
    values = np.array([[-400.0, 0.0, 1400.0]], np.float32)
    fuji = VENDOR_PROFILES["fuji"]  # slope 0.5, intercept -512, MONOCHROME2
    np.testing.assert_array_equal(to_stored(values, fuji), [[224, 1024, 3824]])
    agfa = VENDOR_PROFILES["agfa"]  # MONOCHROME1, 12 bit, padding 4095 -> real pixels kept <= 4094
    np.testing.assert_array_equal(to_stored(np.array([[0.0, 250.0, 5000.0]], np.float32), agfa), [[4094, 3845, 0]])
    hologic = VENDOR_PROFILES["hologic"]  # padding 0 -> real pixels >= 1; 12-bit ceiling
    np.testing.assert_array_equal(to_stored(np.array([[-5.0, 9000.0]], np.float32), hologic), [[1, 4095]])


def test_profiles_keep_physical_size_and_vary() -> None:
    assert len(VENDOR_PROFILES) >= 4
    for p in VENDOR_PROFILES.values():
        rows, cols, spacing = p.scaled(0.25)
        assert rows * spacing == pytest.approx(p.rows * p.spacing_mm, rel=1e-9)
        assert cols * spacing == pytest.approx(p.cols * p.spacing_mm, rel=0.01)
        assert (1 << p.bits_stored) - 1 >= max(to_stored(np.array(p.value_range, np.float32), p))
    profiles = VENDOR_PROFILES.values()
    assert {p.bits_stored for p in profiles} >= {12, 14, 16}
    assert {p.photometric for p in profiles} == {"MONOCHROME1", "MONOCHROME2"}
    assert {p.transfer_syntax for p in profiles} >= {"explicit", "jpeg2000"}
    assert not all(p.mirror_right for p in profiles) and not all(p.orientation_tag for p in profiles)
    assert any(p.marker for p in profiles) and any(p.padding_value is not None for p in profiles)


def test_vendor_selection() -> None:
    assert resolve_vendors("ge, hologic") == ("ge", "hologic")
    external = resolve_vendors("external")
    assert external and not set(external) & set(resolve_vendors(None))
    assert set(other_vendors(["hologic", "ge"])) == set(VENDOR_PROFILES) - {"hologic", "ge"}
    with pytest.raises(ValueError, match="unknown profile"):
        resolve_vendors(["hologic", "kodak"])


def test_lesion_lands_in_its_box_with_its_integral() -> None:
    spec = BreastSpec(depth_mm=90, height_mm=140, power=2.2, asym=0.05, density="B", beta=3.0)
    les = LesionSpec(lesion_id=1, kind="circumscribed_mass", malignant=False, size_mm=12, contrast=0.15,
                     nipple_frac=0.5, angle_cc=0.3, angle_mlo=-0.3, seed=9)
    for view in ("CC", "MLO"):
        with_l = render_view(spec, view, [les], 400, 300, 0.5, np.random.default_rng(2))
        without = render_view(spec, view, [], 400, 300, 0.5, np.random.default_rng(2))
        diff = with_l.atten - without.atten
        (placed,) = with_l.lesions
        x0, y0, x1, y1 = placed.box
        inside = np.zeros_like(diff, bool)
        inside[y0:y1, x0:x1] = True
        assert np.abs(diff[~inside]).max() < 0.02 * diff.max()
        expected = 0.15 * 2 / 3 * np.pi * 6 * 6  # projected ellipsoid, b in [0.8a, a]
        assert 0.78 * expected <= diff.sum() * 0.25 <= 1.02 * expected
        assert with_l.tissue[placed.mask].all() and not with_l.pectoral[placed.mask].any()
        # Same distance from the nipple in both views (the CC/MLO matching rule), up to nudging.
        cy, cx = np.argwhere(placed.mask).mean(0) * 0.5
        ny, nx = np.array(with_l.nipple) * 0.5
        assert np.hypot(cy - ny, cx - nx) == pytest.approx(0.5 * 90 * (1.0 if view == "CC" else 1.07), rel=0.2)
