"""mammokit: from raw mammography DICOM to trained, calibrated, explainable classifiers.

Research software, not a medical device: not for clinical use.
"""

__version__ = "0.1.0"

INTENDED_USE = (
    "mammokit is research software, not a medical device: its outputs must not be used for clinical decisions."
)
