"""Adapter for INbreast: per-image BI-RADS and ACR density, lesion contours from the XML (plist) ROI files.

Layout: `INbreast.csv` (semicolon separated: Patient ID;Patient age;Laterality;View;Acquisition date;File Name;ACR;
Bi-Rads; or the .xls original, read with xlrd) with `AllDICOMs/<File Name>_<patient code>_MG_<side>_<view>_ANON.dcm`
(view "ML" in the name where the table says "MLO") and `AllXML/<File Name>.xml`. Images are matched on the number
before the first underscore of the DICOM file name; the patient is the (hashed) code after it.

INbreast has no pathology in its table and gives BI-RADS per image, so malignancy is a breast-level proxy: the
breast's BI-RADS (`birads`) is the highest of its images (same patient code, laterality and acquisition date);
`cancer` = breast BI-RADS 4a/4b/4c/5/6, `benign` = breast BI-RADS 2-3 (never both). `image_birads` keeps the image's
own category number (4 for 4a-4c) and `birads_raw` its text. Each ROI becomes a box around its contour points
(Point_px, pixel indices: box = [min, max + 1)), its `kind` the ROI name and `malignant` the proxy of the image's own
BI-RADS (the findings drawn on that image). An unreadable XML leaves its image without boxes, with a warning. There
is no official split.
"""

from __future__ import annotations

import plistlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.parsers.expat import ExpatError

import pandas as pd

from mammokit.datasets.public_common import (
    append_warning,
    box,
    canonical_side,
    canonical_view,
    clean,
    density_letter,
    fill_header,
    finish,
    locate_label_file,
    number,
    path_parts,
    read_table,
    resolve_salt,
    set_patients,
)
from mammokit.errors import InvalidInputError

if TYPE_CHECKING:
    from mammokit.datasets.result import IndexResult

LABEL_NAMES = ("INbreast.csv", "INbreast.xls", "INbreast.xlsx")
POINT = re.compile(r"\(\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)\s*\)")


def read_inbreast_table(path: Path) -> pd.DataFrame:
    """The INbreast table with canonical column names (file, side, view, acr, birads, age); errors name the file."""
    table = read_table(path)  # the CSV separator (';' in the release) is sniffed from the header
    wanted = {"file name": "file", "laterality": "side", "view": "view", "acr": "acr", "bi-rads": "birads",
              "patient age": "age", "acquisition date": "date"}
    table = table.rename(columns={c: wanted[c.lower()] for c in table.columns if c.lower() in wanted})
    missing = [c for c in ("file", "birads") if c not in table.columns]
    if missing:
        raise InvalidInputError(f"{path}: missing column(s) 'File Name'/'Bi-Rads' ({missing}); "
                                f"found {list(table.columns)}")
    file_no = table["file"].map(number)
    table = table[file_no.notna()].copy()  # the sheet ends with blank rows
    table["file"] = file_no[file_no.notna()].astype("int64").astype(str)
    repeated = table["file"][table["file"].duplicated()]
    if len(repeated):
        raise InvalidInputError(f"{path}: File Name repeated ({', '.join(repeated.head(5))})")
    return table.set_index("file")


def roi_boxes(xml: Path, malignant: int, file_id: str) -> list[dict[str, Any]]:
    """Lesion boxes of one INbreast XML (plist) file: one per ROI with at least one point.

    Raises:
        InvalidInputError: the file cannot be read or parsed as an INbreast plist (the message names it).
    """
    try:
        with xml.open("rb") as fh:
            return plist_boxes(plistlib.load(fh), malignant, file_id)
    except (plistlib.InvalidFileException, ExpatError, ValueError, OSError, TypeError, AttributeError) as err:
        raise InvalidInputError(f"{xml}: not a readable INbreast plist ROI file: {err}") from err


def plist_boxes(doc: Any, malignant: int, file_id: str) -> list[dict[str, Any]]:
    """Boxes of the ROIs of a parsed INbreast plist (Images > ROIs > Name, IndexInImage, Point_px "(x, y)")."""
    boxes = []
    for image in doc.get("Images", []) if isinstance(doc, dict) else []:
        for n, roi in enumerate(image.get("ROIs", [])):
            points = [POINT.match(str(p)) for p in roi.get("Point_px", [])]
            xy = [(float(m.group(1)), float(m.group(2))) for m in points if m]
            if not xy:
                continue
            xs, ys = [p[0] for p in xy], [p[1] for p in xy]
            lesion_id = f"{file_id}:{roi.get('IndexInImage', n)}"
            boxes.append(box(min(xs), min(ys), max(xs) + 1, max(ys) + 1, str(roi.get("Name", "")), malignant,
                             lesion_id))
    return boxes


def find_xml_dir(label_file: Path, src: Path) -> Path | None:
    """The AllXML folder beside the table, in the scanned folder or one above it."""
    for folder in (label_file.parent, src, src.parent):
        if (folder / "AllXML").is_dir():
            return folder / "AllXML"
    return None


def adapt_inbreast(result: IndexResult, src: Path, labels: Path | None, *, salt: str | None = None,
                   xml_dir: Path | None = None) -> IndexResult:
    """Join the INbreast table and XML ROIs onto the scan by file number; unmatched images keep NaN labels.

    Args:
        result: the header scan of AllDICOMs.
        src: the scanned folder (the table is looked for here and two folders up when `labels` is None).
        labels: INbreast.csv/.xls or the folder holding it.
        salt: identifier-hash key; must be the one the scan used.
        xml_dir: the AllXML folder (default: found beside the table or the scanned folder).
    """
    path = locate_label_file(Path(src), labels, LABEL_NAMES, "inbreast")
    table = read_inbreast_table(path)
    images = result.images.copy()
    stem_fields = images["relpath"].map(lambda r: Path(path_parts(r)[-1]).stem.split("_"))
    file_id = stem_fields.map(lambda f: f[0])
    code = stem_fields.map(lambda f: f[1] if len(f) > 1 and f[1] else None)
    matched = file_id.isin(table.index)
    lab = table.reindex(file_id.where(matched).to_numpy())
    lab.index = images.index

    image_birads = lab["birads"].map(number)
    images["image_birads"] = image_birads
    images["birads_raw"] = lab["birads"].map(clean).where(matched, None)
    images["density"] = lab["acr"].map(density_letter) if "acr" in lab.columns else None
    images["site"] = "inbreast"
    if "age" in lab.columns:
        images["age"] = lab["age"].map(number).where(matched)
    images["source_image_id"] = file_id.where(matched, None)
    empty = pd.Series(None, index=images.index, dtype=object)
    counts = fill_header(images, lab["side"].map(canonical_side) if "side" in lab.columns else empty,
                         lab["view"].map(canonical_view) if "view" in lab.columns else empty, "inbreast")
    changed = set_patients(images, code.where(matched), resolve_salt(salt))
    date = lab["date"].map(clean) if "date" in lab.columns else empty
    birads = breast_max(image_birads, [code.where(matched), images["laterality"], date.fillna("")])
    images["birads"] = birads
    images["cancer"] = (birads >= 4).astype(float).where(birads.notna())
    images["benign"] = birads.isin([2, 3]).astype(float).where(birads.notna())

    xml_dir = xml_dir or find_xml_dir(path, Path(src))
    lesions, unreadable = xml_lesions(images, file_id, matched, xml_dir)
    report = {"label_file": str(path), "xml_dir": str(xml_dir) if xml_dir else None, "label_rows": len(table),
              "label_rows_without_image": int(len(table) - file_id[matched].nunique()),
              "images_with_rois": len(lesions), "xml_unreadable": len(unreadable),
              "xml_unreadable_files": sorted(unreadable),
              "breast_birads_above_image": int((birads > image_birads).sum()),
              "patient_id_replaced": changed, **counts}
    return finish(result, images, dataset="inbreast", matched=matched, lesions=lesions, report=report)


def breast_max(values: pd.Series, keys: list[pd.Series]) -> pd.Series:
    """The highest of `values` over each breast (the rows sharing every key); a row missing a key keeps its own."""
    frame = pd.concat(keys, axis=1, keys=range(len(keys)))
    usable = frame.notna().all(axis=1) & values.notna()
    out = values.astype(float).copy()
    out[usable] = values[usable].groupby([frame.loc[usable, k] for k in frame.columns]).transform("max")
    return out


def xml_lesions(images: pd.DataFrame, file_id: pd.Series, matched: pd.Series, xml_dir: Path | None
                ) -> tuple[dict[Any, list[dict]], list[str]]:
    """Row -> ROI boxes from `<xml_dir>/<File Name>.xml`, `malignant` by the image's own BI-RADS; and the names of
    the unreadable files (their images keep their labels, get no boxes and a warning)."""
    lesions: dict[Any, list[dict]] = {}
    unreadable: list[str] = []
    if xml_dir is None:
        return lesions, unreadable
    for i in images.index[matched]:
        xml = xml_dir / f"{file_id[i]}.xml"
        if not xml.is_file():
            continue
        try:
            found = roi_boxes(xml, int(images.at[i, "image_birads"] >= 4), file_id[i])
        except InvalidInputError as err:
            unreadable.append(xml.name)
            append_warning(images, pd.Series(images.index == i, index=images.index),
                           f"{xml.name}: unreadable INbreast ROI file ({err.__cause__ or err}); no lesion boxes")
            continue
        if found:
            lesions[i] = found
    return lesions, unreadable
