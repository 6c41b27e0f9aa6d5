"""`mammokit qc`: the suspicion score ranks wrong-looking images first, and the page shows them without PHI.

The score is checked on hand-made tables (each signal alone, a planted bad row, missing columns); the page on a
copy of the session's synthetic store (tests/conftest.py) with a corrupted row, a missing and a broken original, and
an old store without the QC columns.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from browser import find_chromium, render_checks
from conftest import SynthStore
from mammokit.cli import app
from mammokit.preprocess.qc import SIGNALS, suspicion, write_qc_page
from mammokit.preprocess.sources import link_index
from mammokit.synth import PHI_PATTERNS

QC_COLUMNS = ("qc_mask_area_fraction", "qc_threshold_separability", "qc_tissue_outside_mask", "orientation_confidence",
              "orientation_ambiguous", "view_source", "laterality_source", "view_confidence", "laterality_confidence",
              "markers_removed", "film", "qc_flags")
GOOD = {"qc_mask_area_fraction": 0.4, "qc_threshold_separability": 0.85, "qc_tissue_outside_mask": 0.002,
        "orientation_confidence": 0.95, "orientation_ambiguous": False, "orientation_disagreement": False,
        "view_source": "ViewPosition", "laterality_source": "ImageLaterality", "view_confidence": None,
        "laterality_confidence": None, "markers_removed": 0, "film": False, "qc_flags": "", "mask_warnings": "",
        "read_warnings": "", "pectoral_found": True, "pectoral_reason": "line fitted", "rows": 600, "columns": 450,
        "crop_x0": 0, "crop_y0": 40, "crop_x1": 300, "crop_y1": 560}


def _good_table(n: int = 12) -> pd.DataFrame:
    rows = [{**GOOD, "image_id": f"img{i:02d}", "view_group": "CC" if i % 2 else "MLO",
             "qc_mask_area_fraction": 0.4 + 0.01 * (i % 5)} for i in range(n)]
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------- the score


def test_good_rows_score_zero_and_a_planted_bad_row_ranks_first() -> None:
    table = _good_table()
    table.loc[5, ["qc_tissue_outside_mask", "orientation_ambiguous"]] = [0.3, True]
    scores = suspicion(table)
    assert scores.index.equals(table.index)
    assert scores["score"].idxmax() == 5 and scores.loc[5, "score"] == pytest.approx(5.0)
    assert (scores["score"].drop(5) == 0).all() and (scores["reasons"].drop(5) == "").all()
    assert scores.loc[5, "reasons"] == "tissue outside mask 30.0%; orientation ambiguous (confidence 0.95)"


@pytest.mark.parametrize(("changes", "reason"), [
    ({"qc_tissue_outside_mask": 0.05}, "tissue outside mask 5.0%"),
    ({"qc_mask_area_fraction": 0.1}, "mask area 0.25× the view's median"),
    ({"qc_threshold_separability": 0.35}, "low threshold separability 0.35"),
    ({"orientation_confidence": 0.3}, "orientation ambiguous (confidence 0.30)"),
    ({"orientation_disagreement": True}, "orientation: header and content disagree"),
    ({"view_source": "content", "view_confidence": 0.55}, "view read from the image (confidence 0.55)"),
    ({"laterality_source": "content", "laterality_confidence": np.nan}, "laterality read from the image"),
    ({"pectoral_found": False}, "MLO without pectoral muscle"),
    ({"crop_x0": 0, "crop_y0": 0, "crop_x1": 450, "crop_y1": 600}, "crop touches all four borders"),
    ({"mask_warnings": "breast mask covers only 1.00% of the image"}, "warnings: breast mask covers only 1.00%"),
    ({"qc_flags": "tissue lost; low contrast"}, "flags: tissue lost; low contrast"),
    ({"markers_removed": 2}, "2 markers removed"),
    ({"film": True}, "film"),
])
def test_each_signal_alone_raises_the_score_with_its_reason(changes: dict, reason: str) -> None:
    table = _good_table()
    table["pectoral_found"] = table["pectoral_found"].astype(object)
    for col, value in changes.items():
        table[col] = table[col].astype(object)
        table.at[4, col] = value  # row 4 is an MLO
    scores = suspicion(table)
    assert scores["score"].idxmax() == 4 and scores.loc[4, "score"] > 0
    assert scores.loc[4, "reasons"].startswith(reason)
    assert (scores["score"].drop(4) == 0).all()


def test_missing_columns_and_values_are_unknown_not_errors() -> None:
    bare = pd.DataFrame({"image_id": ["a", "b", "c"]})
    scores = suspicion(bare)
    assert list(scores["score"]) == [0.0, 0.0, 0.0] and list(scores["reasons"]) == ["", "", ""]
    table = _good_table()
    for col in QC_COLUMNS:
        table[col] = table[col].astype(object)
        table.loc[:3, col] = None
    table.loc[6, "qc_tissue_outside_mask"] = 0.2
    scores = suspicion(table)
    assert scores["score"].idxmax() == 6 and np.isfinite(scores["score"]).all()
    assert scores.loc[:3, "score"].eq(0).all()
    assert suspicion(table.iloc[:0]).empty


def test_weights_are_documented_in_the_module() -> None:
    import mammokit.preprocess.qc as qc

    for signal in SIGNALS:
        assert signal.weight > 0 and signal.columns
    assert "tissue outside the mask" in qc.__doc__ and "(`qc_tissue_outside_mask`" in qc.__doc__


# ------------------------------------------------------------------------------------------------- the page


@pytest.fixture
def store(synth_store: SynthStore, tmp_path: Path) -> Path:
    """A copy of the session store whose QC columns read "all good", except for one corrupted row (index 7)."""
    out = tmp_path / "store"
    shutil.copytree(synth_store.store, out)
    table = pd.read_parquet(out / "preprocessed.parquet")
    for col in QC_COLUMNS:
        table[col] = pd.Series([GOOD[col]] * len(table), index=table.index, dtype=object if GOOD[col] is None else None)
    table.loc[7, ["qc_tissue_outside_mask", "orientation_ambiguous"]] = [0.3, True]
    table.to_parquet(out / "preprocessed.parquet", index=False)
    return out


def _entry_ids(html: str) -> list[str]:
    return re.findall(r'<span class="id">([^<]+)</span>', html)


def _without_images(html: str) -> str:
    return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html)


def test_page_is_one_file_in_suspicion_order_with_the_corrupted_row_first(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "qc" / "qc.html"
    page = write_qc_page(store, out, top=6, thumb_height=120)
    assert page.path == out and page.shown == 6 and page.images == 48 and page.failures == 0 and page.flagged >= 1
    html = out.read_text(encoding="utf-8")
    table = pd.read_parquet(store / "preprocessed.parquet")
    scores = suspicion(table).assign(image_id=table["image_id"])
    expected = scores.sort_values(["score", "image_id"], ascending=[False, True])["image_id"].head(6).tolist()
    assert _entry_ids(html) == expected and expected[0] == table.loc[7, "image_id"]
    assert "tissue outside mask 30.0%" in html and "orientation ambiguous" in html
    images = re.findall(r"<img\b[^>]*>", html)
    assert len(images) == 3 * 6
    assert all(re.search(r'src="data:image/png;base64,[A-Za-z0-9+/=]+"', tag) for tag in images)
    for ref in ('src="http', 'src="file', "<script", "<link", "url(", "@import", "href="):
        assert ref not in html.lower(), ref
    assert list(out.parent.iterdir()) == [out]


def test_page_shows_no_patient_name_id_birth_date_or_path(store: Path, synth_store: SynthStore,
                                                          tmp_path: Path) -> None:
    write_qc_page(store, tmp_path / "qc.html", top=48, thumb_height=80)
    text = _without_images((tmp_path / "qc.html").read_text(encoding="utf-8"))
    for pattern in PHI_PATTERNS.values():
        assert not re.search(rf"(?<!\d){pattern}(?!\d)", text), pattern
    table = pd.read_parquet(store / "preprocessed.parquet")
    labels = pd.read_csv(synth_store.raw / "labels.csv", dtype=str)
    index = pd.read_parquet(synth_store.index)  # raw paths live in the index only
    for value in [*labels["patient_id"], *table["patient_id"].astype(str), *index["path"], *index["relpath"]]:
        assert value not in text
    assert str(synth_store.raw) not in text and "case0" not in text


def test_missing_or_broken_original_is_named_and_the_rest_shown(store: Path, synth_store: SynthStore,
                                                                  tmp_path: Path) -> None:
    table = pd.read_parquet(store / "preprocessed.parquet")
    index = pd.read_parquet(synth_store.index)  # the store finds its originals through the index it names
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(Path(index.set_index("image_id").loc[table.loc[2, "image_id"], "path"]).read_bytes()[:1000])
    moved = {table.loc[7, "image_id"]: str(tmp_path / "gone" / "PHI^NAME0001.dcm"),
             table.loc[2, "image_id"]: str(broken)}
    index = index.assign(path=index["image_id"].map(moved).fillna(index["path"]))
    index.to_parquet(tmp_path / "images.parquet", index=False)
    link_index(store, tmp_path / "images.parquet")
    table.loc[2, ["qc_tissue_outside_mask", "qc_threshold_separability", "film"]] = [0.25, 0.1, True]  # 5.5 > 5
    table.to_parquet(store / "preprocessed.parquet", index=False)
    write_qc_page(store, tmp_path / "qc.html", top=2)
    html = (tmp_path / "qc.html").read_text(encoding="utf-8")
    assert _entry_ids(html) == [table.loc[2, "image_id"], table.loc[7, "image_id"]]
    assert "original DICOM not shown: source file not found" in html
    assert html.count("original DICOM not shown") == 2 and html.count("<img") == 2
    assert "PHI" not in _without_images(html) and str(tmp_path) not in html


def test_old_store_without_qc_columns_still_works(store: Path, tmp_path: Path) -> None:
    table = pd.read_parquet(store / "preprocessed.parquet")
    old = table.drop(columns=[c for c in (*QC_COLUMNS, "pectoral_line", "lesions_stored") if c in table])
    old.to_parquet(store / "preprocessed.parquet", index=False)
    (store / "failures.csv").unlink()
    page = write_qc_page(store, tmp_path / "qc.html", top=4)
    html = (tmp_path / "qc.html").read_text(encoding="utf-8")
    assert page.shown == 4 and page.failures is None and len(_entry_ids(html)) == 4
    assert "unknown: not recorded in this store" in html and "no failures.csv" in html
    assert html.count("<img") == 12


def test_failures_are_counted_without_their_paths(store: Path, tmp_path: Path) -> None:
    path = "/archive/PHI^NAME0042/x.dcm"
    pd.DataFrame({"image_id": ["1.2.3"], "path": [path], "reason": [f"ValueError: {path}: no breast found"]}).to_csv(
        store / "failures.csv", index=False)
    page = write_qc_page(store, tmp_path / "qc.html", top=1)
    html = (tmp_path / "qc.html").read_text(encoding="utf-8")
    assert page.failures == 1 and "ValueError: &lt;file&gt;: no breast found" in html
    assert "PHI" not in _without_images(html) and "/archive/" not in html  # base64 pictures may hold "PHI" by chance


def test_cli_writes_the_page_and_prints_a_summary(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "qc.html"
    result = CliRunner().invoke(app, ["qc", str(store), "--out", str(out), "--top", "3", "--height", "100"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0] == str(out) and out.is_file()
    assert re.fullmatch(r"48 images, \d+ flagged \(suspicion ≥ 1\), 0 failed; 3 most suspicious shown", lines[1])
    bad = CliRunner().invoke(app, ["qc", str(tmp_path / "nowhere"), "--out", str(out)])
    assert bad.exit_code != 0 and isinstance(bad.exception, FileNotFoundError)


@pytest.mark.slow
def test_page_renders_in_chromium_without_overflow(store: Path, tmp_path: Path) -> None:
    if find_chromium() is None:
        if os.environ.get("MAMMOKIT_REQUIRE_CHROMIUM") == "1":
            pytest.fail("MAMMOKIT_REQUIRE_CHROMIUM=1 but no chromium binary is installed")
        pytest.skip("chromium not installed (apt-get install chromium)")
    write_qc_page(store, tmp_path / "qc.html", top=5)
    check = render_checks(tmp_path / "qc.html", width=1366, height=768, screenshot=tmp_path / "qc.png")
    assert check["images"] == 15 and check["broken"] == []
    assert check["scrollWidth"] <= check["innerWidth"]
    assert check["outside"] == [] and check["clipped"] == []
