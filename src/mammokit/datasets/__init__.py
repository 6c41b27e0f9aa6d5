"""Dataset adapters: turn a folder of DICOM plus a dataset's label files into `images.parquet`.

`scan` reads headers only (no pixel decoding) into one row per image; an adapter then joins its labels.
"""

from mammokit.datasets.index import ADAPTERS, IndexResult, build_index, scan

__all__ = ["ADAPTERS", "IndexResult", "build_index", "scan"]
