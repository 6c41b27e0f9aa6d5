"""Registry of the public-dataset adapters, merged into `mammokit.datasets.index.ADAPTERS` by the lead.

Each adapter has the `ADAPTERS` signature `(result, src, labels) -> IndexResult` plus keyword options (`salt`, and
dataset-specific ones); see each module's docstring for the layout it expects and how labels are derived.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from mammokit.datasets.cbis_ddsm import adapt_cbis_ddsm
from mammokit.datasets.cmmd import adapt_cmmd
from mammokit.datasets.inbreast import adapt_inbreast
from mammokit.datasets.rsna import adapt_rsna
from mammokit.datasets.vindr import adapt_vindr

if TYPE_CHECKING:
    from mammokit.datasets.result import IndexResult

__all__ = ["PUBLIC_ADAPTERS", "adapt_cbis_ddsm", "adapt_cmmd", "adapt_inbreast", "adapt_rsna", "adapt_vindr"]

PUBLIC_ADAPTERS: dict[str, Callable[[IndexResult, Path, Path | None], IndexResult]] = {
    "rsna": adapt_rsna,
    "vindr": adapt_vindr,
    "cbis-ddsm": adapt_cbis_ddsm,
    "cmmd": adapt_cmmd,
    "inbreast": adapt_inbreast,
}
