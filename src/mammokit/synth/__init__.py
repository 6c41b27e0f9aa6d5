"""Synthetic multi-vendor mammography DICOM: phantoms with 1/f texture, pectoral muscle and fine-scale lesions.

`generate(out_dir, ...)` writes an archive shaped like a real PACS export (DICOM tree, labels.csv,
lesions.csv, masks, synth.json); `VENDOR_PROFILES` holds what each fake vendor varies (see
`mammokit.synth.vendors` for the table). Hard cases real archives have (fatty breasts, air a minority,
collimation, scanned film, skin folds) are opt-in: `generate(..., hard_cases="all")` writes them with their
ground truth in images.csv, and `hard_case(kind, seed)` makes one image and its truth without an archive
(see `mammokit.synth.hard`).
"""

from mammokit.synth.dataset import IMAGE_COLUMNS, LABEL_COLUMNS, LESION_COLUMNS, PHI_PATTERNS, generate, hard_case
from mammokit.synth.hard import HARD_KINDS, resolve_hard_cases
from mammokit.synth.vendors import (
    ALL_PROFILES,
    DEFAULT_VENDORS,
    EXTERNAL_VENDORS,
    FILM_PROFILE,
    OPT_IN_PROFILES,
    VENDOR_PROFILES,
    VendorProfile,
    other_vendors,
    resolve_vendors,
)

__all__ = [
    "ALL_PROFILES",
    "DEFAULT_VENDORS",
    "EXTERNAL_VENDORS",
    "FILM_PROFILE",
    "HARD_KINDS",
    "IMAGE_COLUMNS",
    "LABEL_COLUMNS",
    "LESION_COLUMNS",
    "OPT_IN_PROFILES",
    "PHI_PATTERNS",
    "VENDOR_PROFILES",
    "VendorProfile",
    "generate",
    "hard_case",
    "other_vendors",
    "resolve_hard_cases",
    "resolve_vendors",
]
