"""The calibration maps a released model stores per level (exam, breast): applying them, reading them back.

A map turns raw logits into calibrated ones: temperature scaling z / T, or beta calibration
a·log σ(z) − b·log σ(−z) + c with a, b ≥ 0 (monotone). Fitting them is evaluation's job
(`mammokit.evaluation.calibrators`); this module is what every consumer of a released model needs to use them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import expit, log_expit

METHODS = ("temperature", "beta")
LEVELS = ("exam", "breast")


def _beta_logits(z: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    return a * log_expit(z) - b * log_expit(-z) + c


@dataclass(frozen=True)
class Calibrator:
    """One fitted map: method "temperature" (params T) or "beta" (params a, b, c); "identity" leaves logits as is."""

    method: str
    params: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        expected = {"identity": set(), "temperature": {"T"}, "beta": {"a", "b", "c"}}.get(self.method)
        if expected is None:
            raise ValueError(f"calibration method must be one of identity, {', '.join(METHODS)}; got {self.method!r}")
        if set(self.params) != expected or not all(math.isfinite(float(v)) for v in self.params.values()):
            raise ValueError(f"{self.method} calibration needs finite {sorted(expected)}, got {dict(self.params)}")
        if self.method == "temperature" and not float(self.params["T"]) > 0:
            raise ValueError(f"temperature must be positive, got {self.params['T']}")
        if self.method == "beta" and (float(self.params["a"]) < 0 or float(self.params["b"]) < 0):
            raise ValueError(f"beta calibration needs a, b >= 0 (a monotone map), got {dict(self.params)}")

    def logits(self, logits: ArrayLike) -> np.ndarray:
        """Calibrated logits."""
        z = np.asarray(logits, dtype=np.float64)
        if self.method == "temperature":
            return z / float(self.params["T"])
        if self.method == "beta":
            return _beta_logits(z, *(float(self.params[k]) for k in ("a", "b", "c")))
        return z

    def probabilities(self, logits: ArrayLike) -> np.ndarray:
        """Calibrated probabilities."""
        return expit(self.logits(logits))

    def describe(self) -> str:
        """Short label, e.g. "temperature T = 1.35" or "beta a = 1.41, b = 0, c = 1.50"."""
        if self.method == "identity":
            return "none"
        return f"{self.method} " + ", ".join(f"{k} = {float(v):.3g}" for k, v in self.params.items())

    def formula(self) -> str:
        """How to apply it, in words a user can code from."""
        return {"identity": "prob = sigmoid(logit)",
                "temperature": "prob = sigmoid(logit / T)",
                "beta": "prob = sigmoid(a * log(sigmoid(logit)) - b * log(sigmoid(-logit)) + c)"}[self.method]

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "params": {k: float(v) for k, v in self.params.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibrator:
        return cls(str(data["method"]), {k: float(v) for k, v in data.get("params", {}).items()})


@dataclass(frozen=True)
class LevelCalibration:
    """The calibration of one level (exam or breast): the chosen map, the temperature (always fitted and reported),
    the cross-validated NLL that chose between them, where they were fitted, and why a temperature could not be
    fitted when it could not (`note`; the temperature is then T = 1)."""

    chosen: Calibrator
    temperature: Calibrator
    cv_nll: Mapping[str, float] = field(default_factory=dict)
    source: str = ""
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"chosen": self.chosen.to_dict(), "temperature": self.temperature.to_dict(),
                "cv_nll": {k: float(v) for k, v in self.cv_nll.items()}, "source": self.source,
                "formula": self.chosen.formula(), **({"note": self.note} if self.note else {})}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LevelCalibration:
        return cls(Calibrator.from_dict(data["chosen"]), Calibrator.from_dict(data["temperature"]),
                   dict(data.get("cv_nll", {})), str(data.get("source", "")), str(data.get("note", "")))


def calibration_from_config(config: Mapping[str, Any]) -> dict[str, LevelCalibration]:
    """Per level, the calibration stored in a released model's config.json. A model calibrated before per-level
    calibration existed (only "temperature") uses that temperature at both levels; an uncalibrated one T = 1."""
    stored = config.get("calibration") or {}
    t = float(config.get("temperature", 1.0))
    legacy = Calibrator("temperature", {"T": t})
    source = str(config.get("temperature_source", "none (T = 1)" if t == 1.0 else "not recorded"))
    return {level: LevelCalibration.from_dict(stored[level]) if level in stored
            else LevelCalibration(legacy, legacy, {}, source) for level in LEVELS}
