"""The result of an index scan: what the scan and every label adapter take and return."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass
class IndexResult:
    """The index (`images`), the files left out with their reasons (`skipped`) and the scan speed."""

    images: pd.DataFrame
    skipped: pd.DataFrame
    seconds: float

    @property
    def images_per_second(self) -> float:
        n = len(self.images) + len(self.skipped)
        return n / self.seconds if self.seconds > 0 else float("inf")
