"""`mammokit demo` end to end at a reduced size: every step runs, the promised files appear, no PHI leaks."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from mammokit.cli import app
from mammokit.synth import PHI_PATTERNS

runner = CliRunner()


@pytest.mark.slow
def test_demo_runs_every_step_and_writes_metrics_and_report(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "--out", str(out), "--exams", "20", "--test-exams", "10",
                                 "--external-exams", "8", "--set", "stages.0.epochs=1", "--set", "stages.1.epochs=2"])
    assert result.exit_code == 0, result.output
    run = out / "runs" / "demo"
    stages = yaml.safe_load((run / "config.yaml").read_text())["stages"]
    assert [s["epochs"] for s in stages] == [1, 2]  # --set reached training
    metrics = json.loads((run / "metrics.json").read_text())
    for level in ("exam", "breast"):
        assert 0.0 <= metrics[level]["roc_auc"] <= 1.0
        assert metrics[level]["n"] == (10 if level == "exam" else 20)
    cal = metrics["exam"]["calibration"]
    assert 0.0 < cal["ece_uniform_floor_after"] < 1.0  # reported beside the measured ECE
    assert [s["site"] for s in metrics["demo"]["external"]] == ["site-B"]
    assert "split=val" in metrics["temperature_source"]  # calibrated on the validation split, stored per level
    stored = json.loads((run / "model" / "config.json").read_text())["calibration"]["exam"]
    # a fitted temperature, or (its NLL having no finite minimum on 4 val exams) T = 1 with the reason and beta
    assert (metrics["temperature"] != 1.0) != ("note" in stored)
    assert "note" not in stored or stored["chosen"]["method"] == "beta"
    assert metrics["split"] == "all" and metrics["training_overlap_exams"] == 0  # the test store is its own
    report = run / "eval" / "report.html"
    assert report.stat().st_size > 10_000 and str(report) in result.output
    assert (out / "show.png").is_file() and (run / "model" / "model.safetensors").is_file()
    # the demo's synthetic files carry fake PHI; none of it may reach what the demo writes
    patient_ids = set(pd.read_csv(out / "train" / "synth" / "labels.csv")["patient_id"])
    for path in (run / "metrics.json", report, run / "eval" / "predictions.parquet", run / "splits.csv"):
        text = path.read_bytes().decode("latin-1")
        assert not any(pid in text for pid in patient_ids), path
        for pattern in PHI_PATTERNS.values():
            assert not re.search(pattern, text), f"{path}: PHI pattern {pattern!r}"


def test_demo_refuses_data_generated_with_other_settings(tmp_path: Path) -> None:
    from mammokit.demo import DIFFICULTY, SIZE_SCALE, prepare_store
    from mammokit.synth import generate

    generate(tmp_path / "synth", exams=2, seed=0, size_scale=SIZE_SCALE, difficulty=DIFFICULTY, workers=1)
    with pytest.raises(ValueError, match=r"exams 2 \(wanted 3\)"):
        prepare_store(tmp_path, exams=3, seed=0, workers=1)
    with pytest.raises(ValueError, match="difficulty"):
        prepare_store(tmp_path, exams=2, seed=0, workers=1, difficulty=1.0)
