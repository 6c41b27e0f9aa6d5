"""User errors end in one line (exit 2); anything else is a bug and shows its traceback (exit 1)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mammokit.config import ConfigError
from mammokit.dicom import DicomReadError
from mammokit.errors import InvalidInputError, MammokitError, MissingInputError

BUG_SCRIPT = """
import sys
import numpy as np
from mammokit import cli

@cli.app.command("bug", hidden=True)
def bug() -> None:
    np.zeros(3).reshape(2, 2)  # numpy's own ValueError: what a bug inside a command looks like

sys.argv = ["mammokit", "bug"]
cli.main()
"""


def _run(args: list[str], *, traceback: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "MAMMOKIT_TRACEBACK": "1" if traceback else ""}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120, env=env)


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_a_user_error_is_one_line_with_exit_status_2(tmp_path: Path) -> None:
    done = _run(["-m", "mammokit.cli", "index", str(tmp_path), "--adapter", "no-such-adapter"])
    assert done.returncode == 2, done.stderr
    assert _lines(done.stderr) == [f"mammokit: error: unknown adapter 'no-such-adapter'; choose from "
                                   f"{_adapters()}  (MAMMOKIT_TRACEBACK=1 shows where)"]


def test_a_missing_folder_is_one_line_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder"
    done = _run(["-m", "mammokit.cli", "index", str(missing)])
    assert done.returncode == 2 and "Traceback" not in done.stderr
    lines = _lines(done.stderr)
    assert len(lines) == 1 and f"{missing}: not a folder" in lines[0]


def test_mammokit_traceback_shows_where_a_user_error_came_from(tmp_path: Path) -> None:
    done = _run(["-m", "mammokit.cli", "index", str(tmp_path), "--adapter", "no-such-adapter"], traceback=True)
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "InvalidInputError" in done.stderr and "build_index" in done.stderr


def test_a_bug_shows_its_traceback_not_a_user_error_line() -> None:
    done = _run(["-c", BUG_SCRIPT])
    assert done.returncode == 1, done.stderr
    assert "Traceback" in done.stderr and "cannot reshape array" in done.stderr
    assert "mammokit: error:" not in done.stderr


@pytest.mark.parametrize(("error", "also"), [
    (InvalidInputError("x"), ValueError),
    (MissingInputError("x"), FileNotFoundError),
    (ConfigError("x"), ValueError),
    (DicomReadError("a.dcm", "empty file"), Exception),
])
def test_mammokit_errors_keep_their_standard_bases(error: Exception, also: type) -> None:
    assert isinstance(error, MammokitError) and isinstance(error, also)


def test_study_grouping_and_bad_seeds_are_user_errors() -> None:
    from mammokit.cli import _seed_list
    from mammokit.predict import StudyGroupingError

    assert issubclass(StudyGroupingError, InvalidInputError)
    assert _seed_list("0, 1,2") == [0, 1, 2]
    with pytest.raises(InvalidInputError, match="--seeds '0,x'"):
        _seed_list("0,x")


def _adapters() -> str:
    from mammokit.datasets.index import ADAPTERS

    return ", ".join(ADAPTERS)
