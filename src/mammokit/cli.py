"""The `mammokit` command line: one command per step of the data flow in docs/architecture.md.

Imports of heavy libraries (torch, SimpleITK, pandas) happen inside each command, so `mammokit --help` is instant.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mammokit import INTENDED_USE
from mammokit.cli_pacs import pacs_app
from mammokit.errors import InvalidInputError, MammokitError

if TYPE_CHECKING:
    from mammokit.datasets.result import IndexResult

app = typer.Typer(
    help=f"mammokit: mammography DICOM → trained, calibrated, explainable classifiers. {INTENDED_USE}",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
log = logging.getLogger("mammokit")


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages.")] = False) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("lightning.pytorch").propagate = False  # Lightning prints through its own handler


def _split_csv(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def _seed_list(text: str) -> list[int]:
    """`--seeds 0,1,2` as integers; anything else is the user's to fix."""
    try:
        return [int(s) for s in _split_csv(text) or []]
    except ValueError:
        raise InvalidInputError(f"--seeds {text!r}: expected comma-separated integers, e.g. 0,1,2") from None


def _processes(param: typer.CallbackParam, value: int) -> int:
    """Check a `--workers` count of processes: 0 or fewer is refused, not silently taken as 1."""
    if value < 1:
        raise InvalidInputError(f"{param.opts[0]} {value}: the number of worker processes must be at least 1")
    return value


def _loader_processes(param: typer.CallbackParam, value: int) -> int:
    """Check a `--workers` count of loader processes, where 0 means "in this process"."""
    if value < 0:
        raise InvalidInputError(f"{param.opts[0]} {value}: the number of loader processes must be 0 (read in this "
                                "process) or more")
    return value


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write the synthetic dataset into.")],
    exams: Annotated[int, typer.Option(help="Number of 4-view exams.")] = 16,
    seed: Annotated[int, typer.Option(help="Seed: same seed and options give byte-identical files.")] = 0,
    vendors: Annotated[str | None, typer.Option(help="Comma-separated vendor profiles (default: all).")] = None,
    size_scale: Annotated[float, typer.Option(help="1.0 = real detector size; smaller is faster.")] = 0.25,
    prevalence: Annotated[float, typer.Option(help="Fraction of exams with a malignant finding.")] = 0.3,
    benign_rate: Annotated[float, typer.Option(help="Fraction of exams with a benign finding.")] = 0.3,
    masks: Annotated[bool, typer.Option(help="Write ground-truth breast/pectoral/lesion masks.")] = True,
    site: Annotated[str, typer.Option(help="Site name written into labels.csv.")] = "site-A",
    difficulty: Annotated[float, typer.Option(help="Higher = subtler lesions.")] = 1.0,
    workers: Annotated[int, typer.Option(help="Processes; results do not depend on it.", callback=_processes)] = 1,
    hard_cases: Annotated[str | None, typer.Option(
        help="Hard cases, 'all' or comma-separated: fatty, air_minority, collimated, film, skin_fold (exams cycle "
             "through them; ground truth per image in images.csv).")] = None,
) -> None:
    """Write a synthetic multi-vendor mammography DICOM dataset (with labels, lesion boxes and masks)."""
    from mammokit.synth import generate

    summary = generate(
        out, exams=exams, seed=seed, vendors=_split_csv(vendors), size_scale=size_scale, prevalence=prevalence,
        benign_rate=benign_rate, masks=masks, site=site, difficulty=difficulty, workers=workers,
        hard_cases=hard_cases,
    )
    typer.echo(_format_summary(summary))


def _format_summary(summary: dict) -> str:
    return "\n".join(f"{k}: {v}" for k, v in summary.items())


@app.command()
def info(
    path: Annotated[Path, typer.Argument(help="A DICOM file or a folder searched recursively.")],
    decode: Annotated[bool, typer.Option(help="Decode pixels too (slower, catches broken pixel data).")] = True,
    limit: Annotated[int, typer.Option(help="Show at most this many files (0 = all).")] = 0,
    show_ids: Annotated[bool, typer.Option(
        "--show-ids", help="Show raw PatientIDs and file paths (default: the salted patient hash in both).")] = False,
) -> None:
    """Show what mammokit's DICOM reader sees in each file (scanned film flagged), so you can check an archive before
    preprocessing. Patients show as their salted hash, also in folder names, unless --show-ids."""
    from mammokit.inspect import describe_files, format_table, iter_dicom_files, summary

    files = list(iter_dicom_files(path))
    if limit:
        files = files[:limit]
    if not files:
        raise typer.BadParameter(f"{path}: no files found")
    rows = describe_files(files, decode=decode, root=path if path.is_dir() else path.parent, show_ids=show_ids)
    typer.echo(format_table(rows))
    typer.echo(f"\n{summary(rows)}")
    if decode:
        from mammokit.dicom_gpu import describe

        typer.echo(describe())


@app.command()
def index(
    src: Annotated[Path, typer.Argument(help="Folder tree of DICOM files.")],
    out: Annotated[Path, typer.Option(help="Where to write the index.")] = Path("images.parquet"),
    labels: Annotated[Path | None, typer.Option(help="Label file (adapter-specific).")] = None,
    adapter: Annotated[str, typer.Option(help="generic, synth, rsna, vindr, cbis-ddsm, cmmd, inbreast")] = "generic",
    workers: Annotated[int, typer.Option(help="Processes for the header scan.", callback=_processes)] = 1,
) -> None:
    """Scan DICOM headers (no pixel decoding) into images.parquet, one row per image; skipped files listed."""
    from mammokit.datasets.index import build_index, write_index

    result = build_index(src, adapter=adapter, labels=labels, workers=workers)
    _require_images(result, src)
    images_path, skipped_path = write_index(result, out)
    n_exams = result.images["exam_id"].nunique()
    typer.echo(f"{len(result.images)} images in {n_exams} exams → {images_path}")
    typer.echo(f"{len(result.skipped)} skipped → {skipped_path}")
    typer.echo(f"{result.images_per_second:.0f} images/s")


def _require_images(result: IndexResult, src: Path) -> None:
    """Refuse an index without a single image (an empty folder, a folder of PNGs): nothing is written."""
    from mammokit.config import one_line

    if not result.images.empty:
        return
    if result.skipped.empty:
        raise InvalidInputError(f"{src}: no DICOM files found (files ending in .png, .jpg, .csv and the like are not "
                                "read)")
    first = result.skipped.iloc[0]
    raise InvalidInputError(f"{src}: no usable DICOM image; all {len(result.skipped)} files were refused, e.g. "
                            f"{first['path']}: {one_line(first['reason'])}")


@app.command()
def preprocess(
    index_path: Annotated[Path, typer.Argument(metavar="IMAGES_PARQUET", help="The index from `mammokit index`.")],
    out: Annotated[Path, typer.Option(help="Store folder.")] = Path("store"),
    config: Annotated[Path | None, typer.Option(help="preprocess.yaml (see configs/preprocess.yaml), or "
                                                     "recipe:NAME (configs/recipes/).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a config key: key=value.")] = None,
    workers: Annotated[int, typer.Option(help="Local worker processes.", callback=_processes)] = 1,
    scheduler: Annotated[str | None, typer.Option(help="Dask scheduler address (runs on that cluster).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace the whole store, even one made with another config or "
                                                 "index (refused without this).")] = False,
) -> None:
    """Preprocess every indexed image into a store (resumable; failures go to failures.csv)."""
    if scheduler is None:  # the local workers' fork server imports the pipeline while this process does the same
        from mammokit.isolate import start_workers_early

        start_workers_early("mammokit.preprocess.pipeline")
    from mammokit.config import load_config
    from mammokit.preprocess.config import PreprocessConfig
    from mammokit.preprocess.pipeline import run_pipeline
    from mammokit.recipes import resolve_config

    cfg = load_config(PreprocessConfig, resolve_config(config, "preprocess"), set_)
    summary = run_pipeline(index_path, out, cfg, workers=workers, scheduler=scheduler, overwrite=overwrite)
    typer.echo(_format_summary(summary))
    _report_failures(summary, index_path, out)


def _report_failures(summary: dict, index_path: Path, store: Path) -> None:
    """Tell how many images failed (exit 0 when some were stored); an empty index or a run where every image
    failed is an error naming the most common reason and failures.csv."""
    failures = store / "failures.csv"
    if summary["images"] == 0:
        raise InvalidInputError(f"{index_path}: no images to preprocess (the index is empty)")
    if summary["failed"] == summary["images"]:
        import pandas as pd

        from mammokit.config import one_line

        reason = pd.read_csv(failures)["reason"].value_counts().index[0]
        raise InvalidInputError(f"all {summary['images']} images failed, most often: {one_line(reason)}; every "
                                f"reason is in {failures}")
    if summary["failed"]:
        typer.echo(f"{summary['failed']} images failed: see {failures}")


@app.command()
def show(
    store: Annotated[Path, typer.Argument(help="A preprocessed store.")],
    image_id: Annotated[str, typer.Argument(help="image_id (SOP Instance UID) from preprocessed.parquet.")],
    out: Annotated[Path, typer.Option(help="PNG to write.")] = Path("show.png"),
    height: Annotated[int, typer.Option(help="Picture height in pixels.")] = 720,
) -> None:
    """Draw one stored image: original with crop and lesions, stored frame with mask, pectoral line and lesions."""
    from mammokit.preprocess.show import write_show

    typer.echo(str(write_show(store, image_id, out, height)))


@app.command()
def qc(
    store: Annotated[Path, typer.Argument(help="A preprocessed store.")],
    out: Annotated[Path, typer.Option(help="HTML page to write (one self-contained file).")] = Path("qc.html"),
    top: Annotated[int, typer.Option(help="Show this many of the most suspicious images.")] = 50,
    height: Annotated[int, typer.Option(help="Thumbnail height in pixels.")] = 320,
) -> None:
    """Rank a store's images by how likely preprocessing went wrong and write a page to look at the worst."""
    from mammokit.preprocess.qc import write_qc_page

    page = write_qc_page(store, out, top=top, thumb_height=height)
    typer.echo(str(page.path))
    typer.echo(page.summary())


@app.command()
def train(
    config: Annotated[Path | None, typer.Argument(help="Training YAML (see configs/train_demo.yaml), or recipe:NAME "
                                                       "(configs/recipes/, e.g. recipe:rsna).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a config key: key=value.")] = None,
    seeds: Annotated[str | None, typer.Option(help="Train an ensemble over these seeds, e.g. 0,1,2.")] = None,
    folds: Annotated[int | None, typer.Option(help="Train an ensemble over K patient-level folds.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run of this name, even one of another config "
                                                 "(refused without this; one of the same config is resumed).")] = False,
) -> None:
    """Train a model from a preprocessed store; writes runs/NAME/ with logs, checkpoints and a released model."""
    from mammokit.config import load_config
    from mammokit.recipes import resolve_config
    from mammokit.training.config import TrainConfig
    from mammokit.training.run import train as run_train
    from mammokit.training.run import train_ensemble

    cfg = load_config(TrainConfig, resolve_config(config, "train"), set_)
    if seeds or folds:
        seed_list = _seed_list(seeds) if seeds else None
        run_dir = train_ensemble(cfg, seeds=seed_list, folds=folds, overwrite=overwrite)
    else:
        run_dir = run_train(cfg, overwrite=overwrite)
    typer.echo(f"run: {run_dir}\nreleased model: {run_dir / 'model'}")


@app.command()
def evaluate(
    model: Annotated[Path, typer.Argument(help="A run folder (runs/NAME) or a released model folder.")],
    data: Annotated[list[Path], typer.Option(help="Store(s): the first is the internal test set, others external.")],
    split: Annotated[str, typer.Option(help="Split of the first store to evaluate ('all' for every exam).")] = "test",
    out: Annotated[Path | None, typer.Option(help="Output folder (default RUN/eval).")] = None,
    n_boot: Annotated[int, typer.Option(help="Bootstrap replicates for the CIs (resampled by patient).")] = 2000,
    mc: Annotated[int, typer.Option(help="MC-dropout passes (0 = off).")] = 10,
    tta: Annotated[int, typer.Option(help="Test-time-augmentation passes (0 = off).")] = 4,
    gallery: Annotated[int, typer.Option(help="Cases per gallery category (TP, FP, FN).")] = 3,
    seed: Annotated[int, typer.Option(help="Seed for the bootstrap and MC-dropout.")] = 0,
    batch_size: Annotated[int, typer.Option(help="Exams (or views) per forward pass.")] = 4,
    workers: Annotated[int, typer.Option(help="Loader processes reading the store (0 = in this process); "
                                              "results do not depend on it.", callback=_loader_processes)] = 0,
    device: Annotated[str, typer.Option(help="Where the model runs: auto (a CUDA GPU when there is one), cpu, "
                                             "cuda, cuda:1 ...")] = "auto",
) -> None:
    """Evaluate a model: predictions.parquet, metrics.json (CIs, calibration, FROC, uncertainty), report.html."""
    from mammokit.evaluation.evaluate import evaluate as run_evaluate

    out = out or (model / "eval" if (model / "model").is_dir() else model.parent / "eval")
    metrics = run_evaluate(model, list(data), out=out, split=split, n_boot=n_boot, mc_passes=mc, tta_passes=tta,
                           gallery=gallery, seed=seed, device=device, batch_size=batch_size, num_workers=workers)
    ex, br = metrics["exam"], metrics["breast"]
    typer.echo(f"exam AUC {ex['roc_auc']:.3f} [{ex['auc_ci_low']:.3f}, {ex['auc_ci_high']:.3f}]   "
               f"breast AUC {br['roc_auc']:.3f} [{br['auc_ci_low']:.3f}, {br['auc_ci_high']:.3f}]")
    typer.echo(f"metrics: {out / 'metrics.json'}\nreport: {metrics.get('report', '-')}")


@app.command()
def calibrate(
    model: Annotated[Path, typer.Argument(help="A run folder or a released model folder.")],
    data: Annotated[Path, typer.Option(help="Store holding the held-out split.")],
    split: Annotated[str, typer.Option(help="Held-out split to calibrate on.")] = "val",
    method: Annotated[str, typer.Option(help="auto (the lower cross-validated NLL of temperature and beta), "
                                             "temperature or beta.")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Exams (or views) per forward pass.")] = 4,
    workers: Annotated[int, typer.Option(help="Loader processes reading the store (0 = in this process); "
                                              "results do not depend on it.", callback=_loader_processes)] = 0,
    device: Annotated[str, typer.Option(help="Where the model runs: auto (a CUDA GPU when there is one), cpu, "
                                             "cuda, cuda:1 ...")] = "auto",
) -> None:
    """Fit per-level calibration on a held-out split (temperature by LBFGS on NLL; beta calibration when it
    cross-validates better) and store it in the released model."""
    from mammokit.evaluation.evaluate import calibrate as run_calibrate

    fitted_levels = run_calibrate(model, data, split=split, method=method, device=device, batch_size=batch_size,
                                  num_workers=workers)
    for level, fitted in fitted_levels.items():
        cv = ", ".join(f"{k} {v:.4f}" for k, v in fitted.cv_nll.items())
        typer.echo(f"{level}: {fitted.chosen.describe()}" + (f"  (cross-validated NLL: {cv})" if cv else ""))
        if fitted.note:
            typer.echo(f"  {level}: {fitted.note}")
    typer.echo("stored in the released model")


@app.command()
def predict(
    model: Annotated[Path, typer.Argument(help="A run folder (runs/NAME) or a released model folder.")],
    study_dir: Annotated[Path, typer.Argument(help="Folder of one study's DICOM files (any views), or of several.")],
    out: Annotated[Path, typer.Option(help="Output folder: one subfolder with prediction.json per study.")] = Path(
        "prediction"),
    heatmap: Annotated[str, typer.Option(help="saliency (the model's own map) | gradcam")] = "saliency",
    workers: Annotated[int, typer.Option(help="Processes for preprocessing.", callback=_processes)] = 1,
    keep_store: Annotated[bool, typer.Option(help="Keep the temporary preprocessed store under OUT.")] = False,
    device: Annotated[str, typer.Option(help="Where the model runs: auto (a CUDA GPU when there is one), cpu, "
                                             "cuda, cuda:1 ...")] = "auto",
    one_study: Annotated[bool | None, typer.Option(
        "--one-study/--by-header", help="--one-study: every file under STUDY_DIR is one exam, whatever the headers "
        "say. --by-header: the headers decide. Default: the headers decide, but files that the headers split into "
        "one-image studies filling distinct L/R CC/MLO views are refused with a message asking for one of the two.",
        show_default=False)] = None,
    mc: Annotated[int, typer.Option(help="MC-dropout passes (0 = off): each exam and breast probability gets its "
                                         "standard deviation over the passes (prob_std).", min=0)] = 0,
    dicom: Annotated[bool, typer.Option(help="Also write each study's results as DICOM into its dicom/ folder: a "
                                             "TID 1500 SR, and per view a FRACTIONAL SEG and an RGB secondary "
                                             "capture, referencing the source UIDs (for mammokit pacs push).")] = False,
) -> None:
    """Predict studies: calibrated exam/breast/view probabilities, heatmaps on the DICOM grid, prediction.json.

    A study is what the DICOM headers say (StudyInstanceUID). Some archives give every image its own study and
    patient ids (CBIS-DDSM does): a folder of such images, one per view, is refused unless --one-study (one exam) or
    --by-header (one study per image) says how to group them. Scanned film without a spacing tag is read at 0.05 mm,
    with a warning.
    """
    from mammokit.predict import predict_studies

    if dicom:
        from mammokit.pacs.node import RESULTS_FOLDER, study_files
        from mammokit.pacs.results import write_results

        sources = study_files(study_dir, out)
    for p in predict_studies(model, study_dir, out=out, heatmap=heatmap, workers=workers, keep_store=keep_store,
                             device=device, one_study=one_study, mc_passes=mc):
        exam, breasts = p.prediction["exam"], p.prediction["breasts"]
        spread = f" ± {exam['prob_std']:.3f}" if exam and exam.get("prob_std") is not None else ""
        score = f"exam p={exam['prob']:.3f}{spread} (raw {exam['prob_raw']:.3f})" if exam else "no prediction"
        sides = "".join(f", {s} p={b['prob']:.3f}" for s, b in breasts.items() if b)
        typer.echo(f"{p.exam_id}: {score}{sides}, {len(p.prediction['warnings'])} warnings → "
                   f"{p.folder / 'prediction.json'}")
        if dicom and exam:
            written = write_results(p.folder, sources, p.folder / RESULTS_FOLDER)
            typer.echo(f"{p.exam_id}: {len(written)} DICOM result objects → {p.folder / RESULTS_FOLDER}")
    typer.echo(INTENDED_USE)



@app.command()
def export(
    model: Annotated[Path, typer.Argument(help="A run folder (runs/NAME) or a released model folder.")],
    out: Annotated[Path, typer.Option(help="The .onnx file to write (config.json goes beside it).")] = Path(
        "model.onnx"),
    opset: Annotated[int, typer.Option(help="ONNX opset version.")] = 17,
) -> None:
    """Export a released model to ONNX (all four views present) and check it against PyTorch with onnxruntime."""
    from mammokit.export import export_onnx

    result = export_onnx(model, out, opset=opset)
    errors = ", ".join(f"{k} {v:.2e}" for k, v in result.max_abs_error.items())
    typer.echo(f"onnx: {result.onnx_path}\nmodel card: {result.card_path}\nmax |onnxruntime - pytorch|: {errors}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for everything the demo writes.")] = Path("demo"),
    exams: Annotated[int, typer.Option(help="Synthetic training exams to generate.")] = 400,
    test_exams: Annotated[int, typer.Option(help="Synthetic held-out test exams.")] = 300,
    external_exams: Annotated[int, typer.Option(help="Exams of the external site (other vendors).")] = 100,
    seed: Annotated[int, typer.Option(help="Seed for every random choice.")] = 0,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a key of the demo's training config "
                                                                 "(configs/train_demo.yaml), e.g. stages.1.epochs=4.")
                    ] = None,
) -> None:
    """Run the whole pipeline on synthetic data on CPU: synth, index, preprocess, train, calibrate, evaluate."""
    from mammokit.demo import run_demo

    run_demo(out, exams=exams, test_exams=test_exams, external_exams=external_exams, seed=seed, echo=typer.echo,
             overrides=set_)


# mammokit's own errors, and file-system errors on a path the user gave; anything else (a plain ValueError from numpy
# or torch included) is a bug and keeps its traceback
USER_ERRORS = (MammokitError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
               PermissionError)


app.add_typer(pacs_app, name="pacs")


def main() -> None:
    """Console entry point: a user error (`USER_ERRORS`) ends with one line naming it (exit status 2), not a
    traceback, and MAMMOKIT_TRACEBACK=1 shows its traceback too; any other exception shows its traceback (exit
    status 1)."""
    try:
        app()
    except USER_ERRORS as err:
        if os.environ.get("MAMMOKIT_TRACEBACK"):
            raise
        typer.echo(f"mammokit: error: {err}  (MAMMOKIT_TRACEBACK=1 shows where)", err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":  # pragma: no cover
    main()
