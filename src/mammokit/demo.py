"""`mammokit demo`: the whole pipeline on a small synthetic dataset, on CPU, in minutes."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path


def run_demo(out: str | Path, *, exams: int = 8, seed: int = 0, echo: Callable[[str], None] = print) -> dict:
    """Generate synthetic DICOM into `out` and show what the reader sees; returns paths of what was written."""
    from mammokit.inspect import describe_files, format_table, iter_dicom_files
    from mammokit.synth import generate

    out = Path(out)
    t0 = time.perf_counter()
    echo(f"[1/2] synth: {exams} exams → {out / 'synth'}")
    summary = generate(out / "synth", exams=exams, seed=seed, size_scale=0.25)
    echo(f"      {summary.get('images', '?')} images in {time.perf_counter() - t0:.1f} s")
    echo("[2/2] info: what the DICOM reader sees")
    files = list(iter_dicom_files(out / "synth" / "dicom"))
    rows = describe_files(files, decode=True, root=out / "synth" / "dicom")
    echo(format_table(rows))
    echo(f"done in {time.perf_counter() - t0:.1f} s; outputs under {out}")
    return {"synth": out / "synth"}
