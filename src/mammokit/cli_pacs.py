"""`mammokit pacs`: pull, push, listen and watch: the archive connection's commands (`mammokit.pacs`).

Credentials never come from the command line: env MAMMOKIT_PACS_USER / MAMMOKIT_PACS_PASSWORD (and
MAMMOKIT_PACS_CA_BUNDLE for https), else the owner-only config file `pacs.yaml` (see `mammokit.pacs.access`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from mammokit import INTENDED_USE
from mammokit.errors import InvalidInputError

pacs_app = typer.Typer(
    help="An archive connection: pull studies and push results over DICOMweb, receive studies over DIMSE (listen), "
         "follow a DICOMweb archive (watch). Results go back as DICOM SR, segmentations and secondary captures. "
         "Credentials: env MAMMOKIT_PACS_USER/MAMMOKIT_PACS_PASSWORD or an owner-only pacs.yaml, never options.",
    no_args_is_help=True,
)
log = logging.getLogger("mammokit")

ConfigOption = Annotated[Path | None, typer.Option(
    "--config", help="Credentials file (YAML, readable by its owner only; default: pacs.yaml in mammokit's config "
                     "folder).")]
HeatmapOption = Annotated[str, typer.Option(help="saliency (the model's own map) | gradcam")]
WorkersOption = Annotated[int, typer.Option(help="Processes for preprocessing a study.", min=1)]
DeviceOption = Annotated[str, typer.Option(help="Where the model runs: auto, cpu, cuda, cuda:1 ...")]
McOption = Annotated[int, typer.Option(help="MC-dropout passes (0 = off): the SR gets each probability's standard "
                                            "deviation as its uncertainty.", min=0)]


def _quiet_libraries() -> None:
    """highdicom and pynetdicom log UIDs at INFO: keep them to warnings (local logs carry hashed ids only)."""
    for name in ("highdicom", "pynetdicom", "dicomweb_client"):
        logging.getLogger(name).setLevel(logging.WARNING)


@pacs_app.command()
def pull(
    url: Annotated[str, typer.Argument(help="The archive's DICOMweb root, e.g. https://pacs/dicom-web")],
    out: Annotated[Path, typer.Option(help="Folder to write the studies into (<study hash>/<series hash>/...).")],
    study: Annotated[str | None, typer.Option(help="One StudyInstanceUID.")] = None,
    since: Annotated[str | None, typer.Option(help="Every mammography study of this date or later (YYYYMMDD or "
                                                   "YYYY-MM-DD).")] = None,
    config: ConfigOption = None,
) -> None:
    """Find mammography studies (QIDO-RS: MG, or DX/CR of BREAST) and retrieve them (WADO-RS) for `index`/`predict`."""
    from mammokit.pacs.access import load_access
    from mammokit.pacs.dicomweb import pull as pull_studies

    if (study is None) == (since is None):
        raise InvalidInputError("give exactly one of --study UID or --since DATE")
    _quiet_libraries()
    result = pull_studies(load_access(url, config_file=config), out, study_uid=study, since=since)
    for s in result.studies:
        state = "ok" if s.ok else (s.error or f"{len(s.failed)} failed")
        typer.echo(f"{s.study_hash}: {s.written} written, {s.images} images on disk, {state} → {s.folder}")
    typer.echo(f"{len(result.studies)} studies, {result.written} images written, {result.failed} failed")
    if not result.studies:
        typer.echo("no mammography study matched")
    if not result.ok:
        raise typer.Exit(1)


@pacs_app.command()
def push(
    url: Annotated[str, typer.Argument(help="The archive's DICOMweb root.")],
    files: Annotated[list[Path], typer.Argument(help="DICOM files or folders of them (e.g. a prediction's dicom/).")],
    config: ConfigOption = None,
) -> None:
    """Store DICOM files on the archive (STOW-RS), retrying through a restart; each ends stored or with a reason."""
    from mammokit.pacs.access import load_access
    from mammokit.pacs.dicomweb import push as push_files

    paths = [p for f in files for p in (sorted(f.rglob("*.dcm")) if f.is_dir() else [f])]
    if not paths:
        raise InvalidInputError("no file to push (folders are searched for *.dcm)")
    _quiet_libraries()
    result = push_files(load_access(url, config_file=config), paths)
    for record in result.failed:
        typer.echo(f"not stored: {record}")
    typer.echo(f"{len(result.stored)} of {len(result.records)} files stored")
    if not result.ok:
        raise typer.Exit(1)


@pacs_app.command()
def listen(
    model: Annotated[Path, typer.Option(help="A run folder (runs/NAME) or a released model folder.")],
    ae_title: Annotated[str, typer.Option(help="mammokit's AE title.")] = "MAMMOKIT",
    port: Annotated[int, typer.Option(help="TCP port to listen on.")] = 11112,
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 = every interface).")] = "127.0.0.1",
    spool: Annotated[Path, typer.Option(help="Where received studies and their state are kept (resumable).")] = Path(
        "pacs-spool"),
    send_to: Annotated[str | None, typer.Option(help="Where results go (C-STORE): AET@host:port. None: results "
                                                     "are only written.")] = None,
    quiet_s: Annotated[float, typer.Option(help="A study is complete after this many seconds without a new image "
                                                "(or once its four screening views are in).")] = 10.0,
    heatmap: HeatmapOption = "saliency",
    workers: WorkersOption = 1,
    device: DeviceOption = "auto",
    mc: McOption = 0,
) -> None:
    """Receive studies over DIMSE (C-STORE SCP), predict each complete study once, send the results back."""
    from mammokit.pacs.dimse import Listener

    _quiet_libraries()
    listener = Listener(ae_title, port, model, spool, destination=send_to, quiet_s=quiet_s, host=host,
                        heatmap=heatmap, workers=workers, device=device, mc_passes=mc)
    typer.echo(f"listening as {ae_title} on {host}:{port}; spool {spool}; results to {send_to or 'the spool only'}. "
               f"{INTENDED_USE}")
    listener.serve_forever()


@pacs_app.command()
def watch(
    url: Annotated[str, typer.Argument(help="The archive's DICOMweb root.")],
    model: Annotated[Path, typer.Option(help="A run folder (runs/NAME) or a released model folder.")],
    out: Annotated[Path, typer.Option(help="Working folder: incoming/ studies and results/.")] = Path("pacs-watch"),
    state: Annotated[Path | None, typer.Option(help="State file (default OUT/watch-state.json): what is done, "
                                                    "where the change feed stands.")] = None,
    poll_s: Annotated[float, typer.Option(help="Seconds between looks at the archive.")] = 30.0,
    since: Annotated[str | None, typer.Option(help="Only studies of this date or later (YYYYMMDD).")] = None,
    feed: Annotated[str, typer.Option(help="auto (Orthanc's change feed when there is one) | changes | qido")] = "auto",
    once: Annotated[bool, typer.Option(help="Handle what is pending, then stop.")] = False,
    heatmap: HeatmapOption = "saliency",
    workers: WorkersOption = 1,
    device: DeviceOption = "auto",
    mc: McOption = 0,
    config: ConfigOption = None,
) -> None:
    """Follow a DICOMweb archive: each new stable mammography study is predicted once, results pushed back.

    The state file makes it resumable: a restarted watch neither repeats nor loses a study.
    """
    from mammokit.pacs.access import load_access
    from mammokit.pacs.watch import watch as watch_archive

    _quiet_libraries()
    typer.echo(f"watching {url}; {INTENDED_USE}")
    statuses = watch_archive(load_access(url, config_file=config), model, out,
                             state_file=state or out / "watch-state.json", poll_s=poll_s, once=once,
                             heatmap=heatmap, workers=workers, device=device, feed=feed, since=since, mc_passes=mc)
    for study_hash, status in statuses.items():
        typer.echo(f"{study_hash}: {status}")
