"""The command line end to end on a tiny synthetic archive: synth → info → index, and no PHI in anything shown."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from mammokit.cli import app
from mammokit.synth import PHI_PATTERNS

runner = CliRunner()


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "synth"
    result = runner.invoke(app, ["synth", str(out), "--exams", "2", "--seed", "5", "--size-scale", "0.2"])
    assert result.exit_code == 0, result.output
    return out


def _assert_no_phi(text: str) -> None:
    for pattern in PHI_PATTERNS.values():
        assert not re.search(pattern, text), f"PHI pattern {pattern!r} leaked"


def test_synth_writes_the_promised_layout(archive: Path) -> None:
    assert (archive / "labels.csv").is_file() and (archive / "lesions.csv").is_file()
    assert len(list((archive / "dicom").rglob("*.dcm"))) == 8


def test_info_shows_every_file_without_phi(archive: Path) -> None:
    result = runner.invoke(app, ["info", str(archive / "dicom")])
    assert result.exit_code == 0, result.output
    assert "8 files, 8 readable, 0 refused" in result.output
    assert re.search(r"\bMLO\b", result.output) and re.search(r"\bCC\b", result.output)
    assert "GPU decode: " in result.output  # whether JPEG 2000 / lossless JPEG decode on a GPU, and why not
    _assert_no_phi(result.output)


def test_info_reports_a_refusal_and_goes_on(archive: Path, tmp_path: Path) -> None:
    bad = tmp_path / "broken.dcm"
    bad.write_bytes(b"not a dicom file at all")
    result = runner.invoke(app, ["info", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "refused" in result.output and "1 refused" in result.output


def test_index_rows_labels_and_no_phi(archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "images.parquet"
    result = runner.invoke(app, ["index", str(archive), "--out", str(out), "--adapter", "synth"])
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(out)
    assert len(table) == 8 and table["exam_id"].nunique() == 2
    labels = pd.read_csv(archive / "labels.csv", dtype={"study_uid": str})
    merged = table.merge(labels, on=["study_uid", "laterality"], suffixes=("", "_truth"))
    assert (merged["cancer"] == merged["cancer_truth"]).all()
    _assert_no_phi(table.to_csv() + result.output)
    raw_ids = set(labels["patient_id"])
    assert not raw_ids & set(table["patient_id"]), "patient ids must be hashed"


def test_a_bad_path_ends_in_one_line_naming_it(tmp_path: Path) -> None:
    import subprocess
    import sys

    missing = tmp_path / "no-such-run"
    done = subprocess.run([sys.executable, "-m", "mammokit.cli", "evaluate", str(missing), "--data", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "MAMMOKIT_TRACEBACK": ""})
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "│" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(missing) in lines[0] and "neither a released model" in lines[0]
