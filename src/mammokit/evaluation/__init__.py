"""Evaluation: metrics (ROC-AUC with patient-level bootstrap CIs, operating points, pF1), FROC, calibration,
uncertainty summaries, explanations and the report.

Import the submodule you need (`from mammokit.evaluation.metrics import summarize`); this package imports nothing
heavy by itself.
"""
