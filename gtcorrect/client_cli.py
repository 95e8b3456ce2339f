"""``gtcorrect client ...``: the API from the command line, with progress bars (``gtcorrect.client``).

``gtcorrect client run --images DIR --masks DIR --name NAME`` goes from two folders to a noise report;
the other verbs do one step each. ``datasets create``, ``jobs start`` and ``jobs show`` print JSON on
stdout, the others text. Exit status: 0, 1 when the job failed or was cancelled, 2 for an API error
or bad input (``error: ...`` on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO, cast

from gtcorrect.client import Client, ClientError, Job, JobFailed, ReportRow, folder_files, save_key, saved_key

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_OUT = "gtcorrect-out"


def _url(args: argparse.Namespace) -> str:
    return str(args.url or os.environ.get("GTC_URL") or DEFAULT_URL)


def _api_key(given: str | None, url: str) -> str:
    """--api-key, else $GTC_API_KEY, else the key saved for ``url`` (``login``, or ``gtcorrect serve`` on
    this machine), else the key file ``gtcorrect serve`` writes ($GTC_DATA_DIR or ./.gtcorrect)."""
    key = given or os.environ.get("GTC_API_KEY") or saved_key(url)
    if key:
        return key
    for data_dir in (os.environ.get("GTC_DATA_DIR"), ".gtcorrect"):
        if data_dir and (path := Path(data_dir) / "api_key").is_file():
            return path.read_text().strip()
    raise ValueError(
        f"no API key for {url}: pass --api-key, set GTC_API_KEY, or save one with "
        f"`gtcorrect client login --api-key KEY --url {url}` (`gtcorrect serve` saves its own)."
    )


def _client(args: argparse.Namespace) -> Client:
    url = _url(args)
    return Client(url, _api_key(args.api_key, url))


def _say(text: str, stream: TextIO | None = None) -> None:
    (stream or sys.stdout).write(text + "\n")


def _print_json(value: Any) -> None:
    _say(json.dumps(value, indent=1))


def _labels(text: str | None) -> dict[str, str] | None:
    return None if text is None else {str(i): n.strip() for i, n in enumerate(text.split(","))}


def _config(path: str | None) -> dict[str, Any] | None:
    if path is None:
        return None
    config = json.loads(Path(path).read_text())
    if not isinstance(config, dict):
        raise ValueError(f"{path}: a config is a JSON object (a partial TrainConfig).")
    return config


def _datasets_create(args: argparse.Namespace) -> int:
    with _client(args) as client:
        _print_json(client.create_dataset(args.name, _labels(args.labels)))
    return 0


def _images_upload(args: argparse.Namespace) -> int:
    with _client(args) as client:
        out = client.upload_images(client.dataset_id(args.dataset), args.dir)
    _say(f"dataset {args.dataset}: {out['created']} images added, {out['duplicates']} already there")
    return 0


def _masks_upload(args: argparse.Namespace) -> int:
    with _client(args) as client:
        batch = client.upload_masks(
            client.dataset_id(args.dataset), args.dir, args.annotator, args.mask_mode, args.note
        )
    _say(f"batch {batch['id']}: {batch['report'].get('accepted')} masks from {batch['annotator']}")
    return 0


def _import_nnunet(args: argparse.Namespace) -> int:
    with _client(args) as client:
        out = client.import_nnunet(args.path, args.name, args.annotator)
    dataset = out["dataset"]
    _say(
        f"dataset {dataset['id']} ({dataset['name']}): {out['samples']} cases imported, batch "
        f"{out['batch_id']} with {out['masks']} masks"
        + (
            f"; {out['test_images_left_out']} imagesTs files left out"
            if out.get("test_images_left_out")
            else ""
        )
    )
    return 0


def _jobs_start(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.start_job(
            client.dataset_id(args.dataset),
            _config(args.config),
            args.preset,
            args.batch,
            args.consensus,
            "every_reader" if args.every_reader else None,
        )
        if args.wait:
            job = _wait_printing(client, job["id"])
    _print_json(job)
    return 0


def _wait_printing(client: Client, job_id: str) -> Job:
    """Wait for the job; when it failed, print its last state as JSON before raising."""
    try:
        return client.wait(job_id)
    except JobFailed as exc:
        _print_json(exc.job)
        raise


def _jobs_wait(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.wait(client.job_id(args.job))
    _say(f"job {job['id']} {job['status']}")
    return 0


def _jobs_show(args: argparse.Namespace) -> int:
    with _client(args) as client:
        _print_json(client.job(client.job_id(args.job)))
    return 0


def _jobs_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        dataset = client.dataset_id(args.dataset) if args.dataset else None
        jobs = client.jobs(dataset, args.status)
    for job in jobs:
        how = cast(dict[str, Any], job.get("config") or {}).get("method", "gt")
        where = job.get("phase") or ""
        epoch = f" {job.get('epoch')}/{job.get('total_epochs')}" if job.get("epoch") else ""
        _say(f"{job['id']}  {job['status']:<9} {where}{epoch}  {how}  created {job.get('created_at')}")
    _say(f"{len(jobs)} jobs", sys.stderr)
    return 0


def _jobs_cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.cancel_job(client.job_id(args.job))
    _say(
        f"job {job['id']}: {job['status']}"
        + (" (stops at its next batch)" if job["status"] == "running" else "")
    )
    return 0


def _jobs_delete(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job_id = client.job_id(args.job)
        client.delete_job(job_id)
    _say(f"deleted job {job_id}")
    return 0


def _datasets_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        for d in client.datasets():
            _say(f"{d['id']}  {d['name']}  {d.get('sample_count', 0)} samples")
    return 0


def _datasets_rename(args: argparse.Namespace) -> int:
    with _client(args) as client:
        dataset = client.rename_dataset(client.dataset_id(args.dataset), args.name)
    _say(f"dataset {dataset['id']} is now {dataset['name']!r}")
    return 0


def _datasets_delete(args: argparse.Namespace) -> int:
    with _client(args) as client:
        dataset_id = client.dataset_id(args.dataset)
        client.delete_dataset(dataset_id)
    _say(f"deleted dataset {dataset_id} with its samples, masks, jobs and models")
    return 0


def _batches_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        for b in client.batches(client.dataset_id(args.dataset)):
            accepted = (b.get("report") or {}).get("accepted")
            _say(f"{b['id']}  {b.get('kind', 'uploaded'):<9} {b['annotator']}  {accepted} masks")
    return 0


def _batches_delete(args: argparse.Namespace) -> int:
    with _client(args) as client:
        client.delete_batch(client.dataset_id(args.dataset), args.batch)
    _say(f"deleted batch {args.batch}")
    return 0


def _models_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        dataset = client.dataset_id(args.dataset) if args.dataset else None
        for m in client.models(dataset):
            dice = (m.get("metrics") or {}).get("holdout_dice")
            shown = "–" if dice is None else f"{dice:.3f}"
            _say(f"{m['id']}  dataset {m['dataset_id']}  v{m.get('version')}  held-back Dice {shown}")
    return 0


def _models_delete(args: argparse.Namespace) -> int:
    with _client(args) as client:
        client.delete_model(args.model)
    _say(f"deleted model {args.model}")
    return 0


def _decide(args: argparse.Namespace) -> int:
    if args.keep_unflagged == (args.accept_above is not None):
        raise ValueError("give one rule: --keep-unflagged or --accept-above P.")
    with _client(args) as client:
        job_id = client.job_id(args.job)
        if args.keep_unflagged:
            out = client.decide_bulk(job_id, "keep_unflagged")
        else:
            out = client.decide_bulk(job_id, "accept_proposed_above", args.accept_above)
    _say(f"job {job_id}: {out.get('decided', 0)} samples decided")
    return 0


def _curate(args: argparse.Namespace) -> int:
    with _client(args) as client:
        batch = client.curate(client.job_id(args.job), args.undecided, args.note or "")
    origins = (batch.get("provenance") or {}).get("masks", {})
    _say(f"curated batch {batch['id']}: " + ", ".join(f"{n} {k}" for k, n in sorted(origins.items())))
    return 0


def _export(args: argparse.Namespace) -> int:
    with _client(args) as client:
        path = client.export_batch(client.dataset_id(args.dataset), args.batch, args.format, args.out)
    _say(f"wrote {path}")
    return 0


def _login(args: argparse.Namespace) -> int:
    url = _url(args)
    key = args.api_key or os.environ.get("GTC_API_KEY")
    if not key:
        raise ValueError("give the key: --api-key KEY (or set GTC_API_KEY).")
    with Client(url, key) as client:
        client.datasets()  # a wrong key or URL fails here, before anything is saved
    _say(f"saved the key for {url} in {save_key(url, key)}")
    return 0


def _print_rows(rows: list[ReportRow], total: int) -> None:
    flagged = [r for r in rows if r["flagged"]]
    _say(f"{len(flagged)} of {total} masks flagged")
    for row in flagged:
        _say(f"  {row['file_name']}  clean {row['clean_probability']:.3f}  {row['annotator']}")


def _report(args: argparse.Namespace) -> int:
    only = True if args.flagged else None
    with _client(args) as client:
        job_id = client.job_id(args.job)
        rows = client.noise_report(job_id)
        if args.csv:
            client.download_report_csv(job_id, args.csv, flagged=only)
    chosen = [r for r in rows if r["flagged"]] if args.flagged else rows
    if args.json:
        Path(args.json).write_text(json.dumps(chosen, indent=1))
    _print_rows(rows, len(rows))
    return 0


def _corrected(args: argparse.Namespace) -> int:
    with _client(args) as client:
        path = client.download_corrected(client.job_id(args.job), args.out)
    _say(f"wrote {path}")
    return 0


def _review_task(args: argparse.Namespace) -> int:
    with _client(args) as client:
        path = client.download_review_task(client.job_id(args.job), args.out, args.format)
    if args.format == "label-studio":
        _say(f"wrote {path}: import it into a Label Studio project with those images (brush labels)")
    else:
        _say(f"wrote {path}: create a CVAT task with those images and upload it as 'CVAT 1.1' annotations")
    return 0


def _plots(args: argparse.Namespace) -> int:
    with _client(args) as client:
        paths = client.download_plots(client.job_id(args.job), args.out)
    _say(f"wrote {len(paths)} plots to {args.out}")
    return 0


def _segment(args: argparse.Namespace) -> int:
    if args.model == "latest" and args.dataset is None:
        raise ValueError("give --dataset (its latest model) or --model ID.")
    with _client(args) as client:
        dataset = client.dataset_id(args.dataset) if args.dataset else None
        paths = client.segment_folder(args.dir, args.out, args.model, dataset, flips=args.flips)
    _say(f"wrote {len(paths)} masks to {args.out}")
    return 0


def _annotators(args: argparse.Namespace) -> int:
    given = args.job_ref or args.job
    if (given is None) == (args.dataset is None):
        raise ValueError("give a job (JOB or --job) or --dataset.")
    with _client(args) as client:
        job_id = client.job_id(given) if given else None
        rows = client.annotators(
            job_id=job_id, dataset_id=client.dataset_id(args.dataset) if args.dataset else None
        )
        if args.plot:
            if not job_id:
                raise ValueError("--plot needs a job (the report of one job).")
            client.download_annotators_plot(job_id, args.plot)
    for row in rows:
        stats = row.get("report", row) if args.dataset else row
        if stats is None:
            _say(f"{row['annotator']}: {row['n_masks']} masks, no job has judged them yet")
            continue
        mark = "SUSPECT " if stats["suspect"] else ""
        _say(f"{mark}{row['annotator']}: {stats['verdict']}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


def _presets(args: argparse.Namespace) -> int:
    with _client(args) as client:
        for preset in client.presets():
            about = preset.get("description")
            _say(f"{preset.get('name')}: {about}" if about else str(preset.get("name")))
    return 0


def _run(args: argparse.Namespace) -> int:
    folder_files(args.images)  # refuse a missing or empty folder before creating anything
    folder_files(args.masks)
    config = _config(args.config)
    out = Path(args.out)
    if (args.name is None) == (args.dataset is None):
        raise ValueError("give --name (a new dataset) or --dataset (an existing one, by name or id).")
    with _client(args) as client:
        if args.dataset:
            dataset = {"id": client.dataset_id(args.dataset)}
            _say(f"dataset {dataset['id']} ({args.dataset}), images already there are kept", sys.stderr)
        else:
            dataset = client.create_dataset(args.name, _labels(args.labels))
            _say(f"dataset {dataset['id']} ({args.name})", sys.stderr)
        client.upload_images(dataset["id"], args.images)
        batch = client.upload_masks(dataset["id"], args.masks, args.annotator, args.mask_mode)
        job = client.start_job(dataset["id"], config, args.preset, [batch["id"]])
        _say(f"job {job['id']} queued", sys.stderr)
        for note in cast(list[str], job.get("notes") or []):
            _say(f"note: {note}", sys.stderr)
        job = client.wait(job["id"])
        rows = client.noise_report(job["id"])
        out.mkdir(parents=True, exist_ok=True)
        client.download_report_csv(job["id"], out / "report.csv")
        (out / "report.json").write_text(json.dumps(rows, indent=1))
        client.download_corrected(job["id"], out / "corrected-masks.zip")
        plots = client.download_plots(job["id"], out / "plots")
        volumes = client.volume_verdicts(job["id"])
        if volumes:
            (out / "volumes.json").write_text(json.dumps(volumes, indent=1))
            client.download_volumes(job["id"], out / "volumes")
    flagged = sum(r["flagged"] for r in rows)
    _say(f"job {job['id']} succeeded: {flagged} of {len(rows)} masks flagged")
    for warning in (job["quality"] or {}).get("warnings", []):
        _say(f"warning: {warning['message']}")
    corrections = (job["quality"] or {}).get("corrections") or {}
    if not corrections.get("proposed"):
        why = corrections.get("reason", "none proposed")
        _say(f"corrected-masks.zip holds no mask (its README.txt says why): {why}")
    _say(
        f"wrote {out}/report.csv, {out}/report.json, {out}/corrected-masks.zip and "
        f"{len(plots)} GMM plots in {out}/plots"
    )
    if volumes:
        flagged_volumes = sum(v["flagged"] for v in volumes)
        _say(
            f"{flagged_volumes} of {len(volumes)} volumes flagged; wrote {out}/volumes.json and their label "
            f"volumes in {out}/volumes"
        )
    return 0


def _guarded(verb: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run a verb; a failed or cancelled job exits 1, API errors and bad input exit 2 (``error: ...``)."""

    def run(args: argparse.Namespace) -> int:
        try:
            return verb(args)
        except JobFailed as exc:
            _say(f"error: {exc}", sys.stderr)
            return 1
        except (ClientError, OSError, ValueError) as exc:
            _say(f"error: {exc}", sys.stderr)
            return 2

    return run


def add_client_commands(subparsers: Any) -> None:
    """Register ``client`` and its verbs on an ``argparse`` subparsers object."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help=f"the API (default: $GTC_URL, else {DEFAULT_URL})")
    common.add_argument(
        "--api-key",
        help="default: $GTC_API_KEY, else the key saved for --url (login; gtcorrect serve saves its own), "
        "else $GTC_DATA_DIR/api_key or .gtcorrect/api_key",
    )
    client = subparsers.add_parser("client", help="use a running gtcorrect API: upload, train, fetch results")
    verbs = client.add_subparsers(dest="client_command", required=True)

    def verb(parent: Any, name: str, func: Callable[[argparse.Namespace], int], text: str) -> Any:
        parser = parent.add_parser(name, parents=[common], help=text, description=text)
        parser.set_defaults(func=_guarded(func))
        return parser

    def group(name: str, text: str) -> Any:
        return verbs.add_parser(name, help=text).add_subparsers(dest=f"{name}_command", required=True)

    labels_help = "class names, background first (default: background,foreground)"
    p = verb(verbs, "login", _login, "save an API key for --url in your per-user key file")
    datasets = group("datasets", "datasets")
    p = verb(datasets, "create", _datasets_create, "create a dataset (prints its JSON)")
    p.add_argument("name")
    p.add_argument("--labels", help=labels_help)
    verb(datasets, "list", _datasets_list, "list the project's datasets")
    p = verb(datasets, "rename", _datasets_rename, "rename a dataset")
    p.add_argument("dataset", help="dataset name or id")
    p.add_argument("name", help="the new name")
    p = verb(
        datasets, "delete", _datasets_delete, "delete a dataset with its samples, masks, jobs and models"
    )
    p.add_argument("dataset", help="dataset name or id")

    p = verb(group("images", "images"), "upload", _images_upload, "upload a folder of images as one zip")
    p.add_argument("dir")
    p.add_argument("--dataset", required=True, help="dataset name or id")

    p = verb(
        group("masks", "masks"),
        "upload",
        _masks_upload,
        "upload a folder of masks, or one COCO or Label Studio JSON or CVAT XML export, as one batch",
    )
    p.add_argument(
        "dir", help="a folder of mask files, or a COCO or Label Studio .json or CVAT for images .xml export"
    )
    p.add_argument("--dataset", required=True, help="dataset name or id")
    p.add_argument("--annotator", required=True, help="who drew the masks")
    p.add_argument("--mask-mode", choices=("index", "binary"), help="binary: grey > 127 is foreground")
    p.add_argument("--note", help="free text stored as the batch's source")

    p = verb(
        verbs,
        "import-nnunet",
        _import_nnunet,
        "a new dataset from an nnU-Net v2 raw dataset (folder or zip): its images, label map and labels",
    )
    p.add_argument(
        "path", metavar="FOLDER_OR_ZIP", help="e.g. nnUNet_raw/Dataset004_Hippocampus, or a zip of it"
    )
    p.add_argument("--name", help="the new dataset's name (default: dataset.json's name, else the folder's)")
    p.add_argument("--annotator", help="who drew labelsTr (default: nnU-Net labels)")

    batches = group("batches", "annotation batches")
    p = verb(batches, "list", _batches_list, "list a dataset's annotation batches")
    p.add_argument("--dataset", required=True, help="dataset name or id")
    p = verb(batches, "delete", _batches_delete, "delete a batch and its masks (not one a job trained on)")
    p.add_argument("batch", help="batch id")
    p.add_argument("--dataset", required=True, help="dataset name or id")

    jobs = group(
        "jobs", "training jobs (a job is its id or the start of it, e.g. the 8 characters a page shows)"
    )
    p = verb(jobs, "start", _jobs_start, "start a training job (prints its JSON)")
    p.add_argument("--dataset", required=True, help="dataset name or id")
    p.add_argument("--batch", action="append", help="annotation batch id (repeat; default: latest masks)")
    p.add_argument(
        "--consensus",
        choices=("staple", "majority"),
        help="train on the consensus of the batches' masks (several annotators per image)",
    )
    p.add_argument(
        "--every-reader",
        action="store_true",
        help="with --consensus: judge the consensus, learn from every annotator's own mask, weighted by "
        "their agreement with it",
    )
    p.add_argument("--preset", help="a preset's name (`gtcorrect client presets`); --config goes on top")
    p.add_argument("--config", help="a JSON file with a partial TrainConfig")
    p.add_argument("--wait", action="store_true", help="wait with a progress bar; print the final job")
    p = verb(jobs, "list", _jobs_list, "list jobs, newest first")
    p.add_argument("--dataset", help="only this dataset's (name or id)")
    p.add_argument("--status", choices=("queued", "running", "succeeded", "failed", "cancelled"))
    for name, func, text in (
        ("wait", _jobs_wait, "wait for a job with a progress bar"),
        ("show", _jobs_show, "print a job's JSON"),
        ("cancel", _jobs_cancel, "cancel a queued or running job"),
        ("delete", _jobs_delete, "delete a finished, failed or cancelled job and its results"),
    ):
        verb(jobs, name, func, text).add_argument("job")

    p = verb(verbs, "report", _report, "print the flagged masks; save the whole noise report")
    p.add_argument("job")
    p.add_argument(
        "--flagged", action="store_true", help="the CSV and JSON files hold the flagged masks only"
    )
    p.add_argument("--csv", help="write the report as CSV to this file")
    p.add_argument("--json", help="write the report's rows as JSON to this file")

    p = verb(verbs, "decide", _decide, "decide every undecided sample of a job by a rule")
    p.add_argument("job")
    p.add_argument("--keep-unflagged", action="store_true", help="keep every unflagged mask as drawn")
    p.add_argument("--accept-above", type=float, help="accept the proposed correction where P(wrong) >= this")

    p = verb(verbs, "curate", _curate, "a curated annotation batch from a job's decisions")
    p.add_argument("job")
    p.add_argument("--undecided", choices=("keep", "exclude"), default="keep", help="undecided samples")
    p.add_argument("--note", help="free text stored with the batch")

    p = verb(
        verbs, "export", _export, "an annotation batch for another tool: PNG zip, nnU-Net v2 (zip), COCO"
    )
    p.add_argument("batch", help="batch id (a curated one, say)")
    p.add_argument("--dataset", required=True, help="dataset name or id")
    p.add_argument("--format", choices=("png", "nnunet", "coco"), default="png")
    p.add_argument("--out", required=True, help="file to write")

    p = verb(verbs, "corrected", _corrected, "download the corrected masks (zip)")
    p.add_argument("job")
    p.add_argument("--out", required=True, help="zip file to write")

    p = verb(
        verbs,
        "review-task",
        _review_task,
        "the flagged masks to fix in CVAT (CVAT 1.1 XML) or Label Studio (tasks JSON)",
    )
    p.add_argument("job")
    p.add_argument("--format", choices=("cvat", "label-studio"), default="cvat")
    p.add_argument("--out", required=True, help="file to write (.xml for CVAT, .json for Label Studio)")

    p = verb(verbs, "plots", _plots, "download the GMM plot of each round (PNG)")
    p.add_argument("job")
    p.add_argument("--out", required=True, help="folder to write into")

    models = group("models", "trained models")
    p = verb(models, "list", _models_list, "list models with their held-back Dice")
    p.add_argument("--dataset", help="only this dataset's (name or id)")
    p = verb(models, "delete", _models_delete, "delete a model (it is no longer served)")
    p.add_argument("model", help="model id")

    p = verb(
        verbs,
        "segment",
        _segment,
        "segment a folder of images (masks as <name>.png) and volumes (<name>.nii.gz)",
    )
    p.add_argument("dir")
    p.add_argument("--out", required=True, help="folder to write into")
    p.add_argument("--dataset", help="use the latest model of this dataset (name or id)")
    p.add_argument("--model", default="latest", help="a model id (default: latest of --dataset)")
    p.add_argument(
        "--flips",
        action="store_true",
        help="average the network over each image and its flips (test-time augmentation; 4x the time)",
    )

    p = verb(verbs, "annotators", _annotators, "the annotator report: who outlines wider or narrower")
    p.add_argument("job_ref", nargs="?", metavar="JOB", help="a succeeded job (or --job)")
    p.add_argument("--job", help="a succeeded job's report")
    p.add_argument(
        "--dataset", help="every annotator of a dataset (name or id), with its latest job's verdict"
    )
    p.add_argument("--plot", help="write the job's report as a PNG bar chart to this file")
    p.add_argument("--json", help="write the rows as JSON to this file")

    verb(verbs, "presets", _presets, "list the training presets")

    p = verb(verbs, "run", _run, "two folders to a noise report: create, upload, train, wait, download")
    p.add_argument("--images", required=True, help="folder of images")
    p.add_argument("--masks", required=True, help="folder of masks named like their images")
    p.add_argument("--name", help="name of a new dataset")
    p.add_argument("--dataset", help="an existing dataset instead (name or id): its images are kept")
    p.add_argument("--labels", help=labels_help)
    p.add_argument("--annotator", default="unknown", help="who drew the masks")
    p.add_argument("--mask-mode", choices=("index", "binary"), help="binary: grey > 127 is foreground")
    p.add_argument("--preset", help="a preset's name; --config goes on top")
    p.add_argument("--config", help="a JSON file with a partial TrainConfig")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"folder for the results (default: {DEFAULT_OUT})")
