"""Synthetic multi-vendor mammography DICOM: phantoms with 1/f texture, pectoral muscle and fine-scale lesions.

`generate(out_dir, ...)` writes an archive shaped like a real PACS export (DICOM tree, labels.csv,
lesions.csv, masks, synth.json); `VENDOR_PROFILES` holds what each fake vendor varies (see
`mammokit.synth.vendors` for the table).
"""

from mammokit.synth.dataset import LABEL_COLUMNS, LESION_COLUMNS, PHI_PATTERNS, generate
from mammokit.synth.vendors import (
    DEFAULT_VENDORS,
    EXTERNAL_VENDORS,
    VENDOR_PROFILES,
    VendorProfile,
    other_vendors,
    resolve_vendors,
)

__all__ = [
    "DEFAULT_VENDORS",
    "EXTERNAL_VENDORS",
    "LABEL_COLUMNS",
    "LESION_COLUMNS",
    "PHI_PATTERNS",
    "VENDOR_PROFILES",
    "VendorProfile",
    "generate",
    "other_vendors",
    "resolve_vendors",
]
