"""A typed client of the gtcorrect REST API: upload two folders, train, wait, fetch the results.

Imports only the standard library, httpx, tqdm and ``gtcorrect.formats`` (the image file endings the
API takes, itself standard library only), so scripts and ``gtcorrect client`` start without
torch. Progress bars go to stderr. GET calls are retried with exponential backoff on connection errors
and 429/502/503/504; POST calls never are (a retried upload or job start could happen twice).
"""

from __future__ import annotations

import io
import itertools
import json
import os
import sys
import tempfile
import time
import uuid
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO, Any, NotRequired, TypedDict, cast

import httpx
from tqdm import tqdm

from gtcorrect.formats import IMAGE_SUFFIXES, VOLUME_SUFFIXES, is_image_name, is_volume_name, volume_stem

MANIFEST_NAMES = ("manifest.csv", "manifest.json")  # mask file -> sample file, beside the masks
STORED_SUFFIXES = (".png", ".jpg", ".jpeg", ".gz")  # already compressed (.nii.gz): zipped as they are
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
RETRY_STATUSES = frozenset({429, 502, 503, 504})
IDEMPOTENT_METHODS = frozenset({"GET", "PUT", "DELETE"})
PAGE_SIZE = 1000  # the API's largest page
CHUNK_BYTES = 1 << 16
UPLOAD_READ_TIMEOUT_S = 900.0  # the API decodes and checks every file of an upload before it answers

Json = dict[str, Any]


class Job(TypedDict):
    """``GET /v1/jobs/{id}``: the fields this client reads (the dict holds every field the API sends)."""

    id: str
    dataset_id: str
    status: str
    phase: str | None
    epoch: int | None
    total_epochs: int | None
    round: int | None
    error: str | None
    quality: Json | None
    eta_seconds: NotRequired[float | None]


class ReportRow(TypedDict):
    """One row of a job's noise report (``GET /v1/jobs/{id}/noise-report``)."""

    sample_id: str
    file_name: str
    annotation_id: str
    clean_probability: float
    flagged: bool
    loss: float
    round_decided: int
    held_out: bool
    correction_proposed: bool
    changed_fraction: float | None
    changed_pixels: int | None
    annotator: str
    batch_id: str
    decision: str | None


class ClientError(Exception):
    """The API could not be reached or refused the call, or a job did not succeed."""


class ApiError(ClientError):
    """An error answer, from the API's ``application/problem+json`` body (RFC 9457) when it has one."""

    def __init__(
        self, status: int, title: str, detail: str, problem: Mapping[str, Any] | None = None
    ) -> None:
        self.status, self.title, self.detail = status, title, detail
        self.problem: Json = dict(problem or {})
        files = self.problem.get("invalid_files") or []
        named = "; ".join(f"{f.get('file')}: {f.get('reason')}" for f in files[:5])
        more = f" (and {len(files) - 5} more)" if len(files) > 5 else ""
        super().__init__(f"{title} ({status}): {detail}" + (f" {named}{more}" if named else ""))

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and "title" in body:
            return cls(response.status_code, str(body["title"]), str(body.get("detail", "")), body)
        return cls(response.status_code, response.reason_phrase, response.text.strip()[:300])


class JobFailed(ClientError):
    """The job ended ``failed`` or ``cancelled``; ``job`` is its last state, ``error`` its error."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.status = job["status"]
        self.error = job.get("error")
        super().__init__(f"job {job['id']} {self.status}" + (f": {self.error}" if self.error else ""))


def folder_files(folder: str | Path, names: Sequence[str] = ()) -> list[Path]:
    """The image files directly in ``folder`` (and the files called one of ``names``), by name.

    Raises ``ValueError`` when ``folder`` is not a directory or holds none of them.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"{root}: not a directory.")
    files = sorted(
        p
        for p in root.iterdir()
        if p.is_file() and not p.name.startswith(".") and (is_image_name(p.name) or p.name.lower() in names)
    )
    if not any(is_image_name(p.name) for p in files):
        raise ValueError(f"{root}: no image files ({', '.join(IMAGE_SUFFIXES + VOLUME_SUFFIXES)}).")
    return files


def nnunet_files(folder: str | Path) -> list[Path]:
    """What an nnU-Net v2 raw dataset folder's import reads: ``dataset.json`` and the files directly in
    ``imagesTr`` and ``labelsTr`` (``imagesTs`` is not imported, so not sent).

    Raises ``ValueError`` when ``folder`` is not a directory holding a ``dataset.json``.
    """
    root = Path(folder)
    if not (root / "dataset.json").is_file():
        raise ValueError(f"{root}: not an nnU-Net dataset folder (no dataset.json).")
    files = [root / "dataset.json"]
    for sub in ("imagesTr", "labelsTr"):
        if (root / sub).is_dir():
            files += sorted(p for p in (root / sub).iterdir() if p.is_file() and not p.name.startswith("."))
    return files


@contextmanager
def _nnunet_archive(path: Path) -> Iterator[tuple[IO[bytes], str, int]]:
    """The zip of an nnU-Net dataset (``path`` a zip as it is, or its folder zipped under the folder's
    name), open at its start: (file, file name, size in bytes)."""
    if path.is_file():
        with path.open("rb") as archive:
            yield archive, path.name, path.stat().st_size
        return
    folder = path.resolve()
    files = nnunet_files(folder)  # a folder without dataset.json is refused before anything is written
    with tempfile.TemporaryFile() as archive:
        size = _zip_to(archive, files, folder.parent)
        archive.seek(0)
        yield archive, f"{folder.name}.zip", size


def _zip_to(archive: IO[bytes], files: Sequence[Path], root: Path | None = None) -> int:
    """Write ``files`` into ``archive`` as one zip, flat (by name) or by their paths below ``root``;
    returns its size in bytes."""
    with zipfile.ZipFile(archive, "w") as zf:
        for path in files:
            stored = path.suffix.lower() in STORED_SUFFIXES
            name = path.relative_to(root).as_posix() if root is not None else path.name
            zf.write(path, name, zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED)
    return archive.tell()


def _multipart_head(boundary: str, fields: Mapping[str, str], file_name: str, part: str = "files") -> bytes:
    """A multipart/form-data body up to the content of its one file part, called ``part``."""
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
        for k, v in fields.items()
    ]
    quoted = "".join("_" if ch in '"\r\n\\' else ch for ch in file_name)
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{part}"; filename="{quoted}"\r\n'
        "Content-Type: application/zip\r\n\r\n"
    )
    return "".join(parts).encode()


class Client:
    """``Client(base_url, api_key)``: one project's view of a gtcorrect API; a context manager.

    Every method returns the API's JSON as plain dicts and lists and raises ``ApiError`` (naming the
    problem) for an error answer, ``ClientError`` when the API cannot be reached.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 60.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff_s = backoff_s
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout,
            transport=transport,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- transport -------------------------------------------------------------------------------

    def _send(self, method: str, url: str, *, stream: bool = False, **kwargs: Any) -> httpx.Response:
        """Send one call, retrying idempotent ones; the answer is read unless ``stream`` (then close it)."""
        retry = method in IDEMPOTENT_METHODS
        for attempt in range(self.retries + 1):
            last = attempt == self.retries or not retry
            request = self._http.build_request(method, url, **kwargs)
            wait = self.backoff_s * 2**attempt
            try:
                response = self._http.send(request, stream=True)
            except httpx.TransportError as exc:
                if last:
                    raise ClientError(f"{method} {request.url}: {type(exc).__name__}: {exc}") from exc
            else:
                if response.status_code not in RETRY_STATUSES or last:
                    break
                wait = max(wait, _retry_after(response))
                response.close()
            time.sleep(wait)
        if response.is_error:
            response.read()
            response.close()
            raise ApiError.from_response(response)
        if not stream:
            response.read()
            response.close()
        return response

    def _json(self, method: str, url: str, **kwargs: Any) -> Any:
        return self._send(method, url, **kwargs).json()

    def _pages(self, url: str, params: Mapping[str, Any] | None = None) -> list[Any]:
        """The items of every page of a paged list (``limit``/``offset``/``total``)."""
        items: list[Any] = []
        while True:
            page = self._json("GET", url, params={**(params or {}), "limit": PAGE_SIZE, "offset": len(items)})
            items.extend(page["items"])
            if not page["items"] or len(items) >= page["total"]:
                return items

    def _download(self, url: str, path: str | Path, params: Mapping[str, Any] | None = None) -> Path:
        """Stream a GET answer into ``path`` (written whole or not at all)."""
        dest = Path(path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(dest.name + ".part")
        response = self._send("GET", url, params=params, stream=True)
        try:
            with partial.open("wb") as out:
                for chunk in response.iter_bytes(CHUNK_BYTES):
                    out.write(chunk)
            partial.replace(dest)
        except httpx.TransportError as exc:
            raise ClientError(
                f"GET {response.url}: the download broke off: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            response.close()
            partial.unlink(missing_ok=True)
        return dest

    def _post_zip(
        self,
        url: str,
        files: Sequence[Path],
        fields: Mapping[str, str],
        label: str,
        progress: bool,
        params: Mapping[str, Any] | None = None,
    ) -> httpx.Response:
        """Zip ``files`` (flat) into a temporary file and POST it as the multipart part ``files`` beside
        ``fields`` (``_post_archive``); returns the (read) answer."""
        with tempfile.TemporaryFile() as archive:
            size = _zip_to(archive, files)
            archive.seek(0)
            return self._post_archive(url, archive, size, fields, f"{label}.zip", label, progress, params)

    def _post_archive(
        self,
        url: str,
        archive: IO[bytes],
        size: int,
        fields: Mapping[str, str],
        file_name: str,
        label: str,
        progress: bool,
        params: Mapping[str, Any] | None = None,
        part: str = "files",
    ) -> httpx.Response:
        """POST the zip ``archive`` (``size`` bytes, read from where it stands) as the multipart part ``part``
        beside ``fields``, streaming the body with a byte progress bar; returns the (read) answer."""
        boundary = uuid.uuid4().hex
        head = _multipart_head(boundary, fields, file_name, part)
        tail = f"\r\n--{boundary}--\r\n".encode()
        total = len(head) + size + len(tail)
        chunks = itertools.chain((head,), iter(lambda: archive.read(CHUNK_BYTES), b""), (tail,))
        with tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=f"upload {label}",
            file=sys.stderr,
            disable=not progress,
        ) as bar:

            def body() -> Iterator[bytes]:
                for chunk in chunks:
                    bar.update(len(chunk))
                    yield chunk

            headers = {
                "Content-Type": f"multipart/form-data; boundary={boundary}",
                "Content-Length": str(total),
            }
            timeout = httpx.Timeout(self.timeout, read=UPLOAD_READ_TIMEOUT_S)
            return self._send("POST", url, content=body(), headers=headers, timeout=timeout, params=params)

    def _upload(
        self, url: str, files: Sequence[Path], fields: Mapping[str, str], label: str, progress: bool
    ) -> Json:
        return cast(Json, self._post_zip(url, files, fields, label, progress).json())

    # --- datasets and uploads --------------------------------------------------------------------

    def create_dataset(self, name: str, label_map: Mapping[str, str] | None = None) -> Json:
        """A new dataset; ``label_map`` maps class index (as text, 0 = background) to name; None: the API's
        two-class default."""
        body: Json = {"name": name}
        if label_map is not None:
            body["label_map"] = dict(label_map)
        return cast(Json, self._json("POST", "/v1/datasets", json=body))

    def dataset_id(self, ref: str) -> str:
        """The id of dataset ``ref``: an id as it is, or the exact name of one of the project's datasets."""
        try:
            return str(uuid.UUID(ref))
        except ValueError:
            pass
        named = [d for d in self._pages("/v1/datasets", {"name": ref}) if d["name"] == ref]
        if not named:
            raise ValueError(f"this project has no dataset named {ref!r}: give a dataset's name or id.")
        return str(named[0]["id"])

    def datasets(self) -> list[Json]:
        """Every dataset of the project, oldest first."""
        return self._pages("/v1/datasets")

    def rename_dataset(self, dataset_id: str, name: str) -> Json:
        return cast(Json, self._json("PATCH", f"/v1/datasets/{dataset_id}", json={"name": name}))

    def delete_dataset(self, dataset_id: str) -> None:
        """The dataset with its samples, masks, jobs and models (409 while a job of it runs)."""
        self._send("DELETE", f"/v1/datasets/{dataset_id}")

    def batches(self, dataset_id: str) -> list[Json]:
        return self._pages(f"/v1/datasets/{dataset_id}/annotation-batches")

    def delete_batch(self, dataset_id: str, batch_id: str) -> None:
        """An annotation batch and its masks (409 naming the jobs that trained on them)."""
        self._send("DELETE", f"/v1/datasets/{dataset_id}/annotation-batches/{batch_id}")

    def upload_images(self, dataset_id: str, folder: str | Path, progress: bool = True) -> Json:
        """Upload every image file directly in ``folder`` as one zip (all or nothing); returns the API's
        ``created``/``duplicates``/``files`` report."""
        files = folder_files(folder)
        return self._upload(f"/v1/datasets/{dataset_id}/images", files, {}, "images", progress)

    def upload_masks(
        self,
        dataset_id: str,
        folder: str | Path,
        annotator: str,
        mask_mode: str | None = None,
        note: str | None = None,
        progress: bool = True,
    ) -> Json:
        """Upload the mask files in ``folder`` (named like their images, or with a manifest.csv/json), or
        ``folder`` an annotation tool's export (COCO or Label Studio .json, CVAT for images .xml), as one
        annotation batch of ``annotator``; ``mask_mode`` "binary" for lossy two-class masks; ``note`` is
        stored as the batch's ``source``. Returns the batch."""
        fields = {"annotator": annotator}
        if mask_mode is not None:
            fields["mask_mode"] = mask_mode
        if note is not None:
            fields["source"] = note
        export = Path(folder).is_file() and Path(folder).suffix.lower() in (".json", ".xml")
        files = [Path(folder)] if export else folder_files(folder, MANIFEST_NAMES)
        return self._upload(f"/v1/datasets/{dataset_id}/annotation-batches", files, fields, "masks", progress)

    def import_nnunet(
        self,
        path: str | Path,
        name: str | None = None,
        annotator: str | None = None,
        progress: bool = True,
    ) -> Json:
        """Import an nnU-Net v2 raw dataset: ``path`` its folder (dataset.json, imagesTr, labelsTr; zipped
        on the fly under the folder's name, imagesTs left out) or a zip of it. A new dataset (``name``;
        default dataset.json's name, else the folder's) with dataset.json's label map, one sample per
        training case and one batch of the labelsTr masks (``annotator``). Returns the API's answer:
        ``dataset``, ``batch_id``, ``samples``, ``masks``..."""
        fields = {k: v for k, v in (("name", name), ("annotator", annotator)) if v is not None}
        with _nnunet_archive(Path(path)) as (archive, zip_name, size):
            answer = self._post_archive(
                "/v1/datasets/import/nnunet", archive, size, fields, zip_name, "nnunet", progress, part="file"
            )
        return cast(Json, answer.json())

    # --- jobs --------------------------------------------------------------------------------------

    def presets(self) -> list[Json]:
        """The named starting points of a job's config (``GET /v1/config/presets``): name, description,
        config, epochs."""
        return self._pages("/v1/config/presets")

    def start_job(
        self,
        dataset_id: str,
        config: Mapping[str, Any] | None = None,
        preset: str | None = None,
        batch_ids: Sequence[str] | None = None,
        consensus: str | None = None,
        train_on: str | None = None,
    ) -> Job:
        """Queue a training job: ``config`` a partial TrainConfig, ``preset`` a preset's name, ``batch_ids``
        None for the latest mask of each sample; ``consensus`` "staple" or "majority" trains on the
        consensus of the batches' masks instead, or with ``train_on`` "every_reader" judges it and learns
        from every annotator's own mask."""
        body: Json = {
            "dataset_id": dataset_id,
            "config": dict(config or {}),
            "batch_ids": None if batch_ids is None else list(batch_ids),
        }
        if preset is not None:
            body["preset"] = preset
        if consensus is not None:
            body["consensus"] = consensus
        if train_on is not None:
            body["train_on"] = train_on
        return cast(Job, self._json("POST", "/v1/jobs", json=body))

    def jobs(self, dataset_id: str | None = None, status: str | None = None) -> list[Job]:
        """The project's jobs, newest first; optionally of one dataset or in one status."""
        params = {k: v for k, v in (("dataset_id", dataset_id), ("status", status)) if v is not None}
        return cast(list[Job], self._pages("/v1/jobs", params))

    def job_id(self, ref: str) -> str:
        """The id of job ``ref``: an id as it is, or the start of exactly one of the project's job ids (the
        8 characters a page shows)."""
        try:
            return str(uuid.UUID(ref))
        except ValueError:
            pass
        prefix = ref.strip().lower()
        if len(prefix) < 4:
            raise ValueError(f"job {ref!r}: give a job id or at least its first 4 characters.")
        found = [str(j["id"]) for j in self.jobs() if str(j["id"]).startswith(prefix)]
        if len(found) != 1:
            raise ValueError(
                f"job {ref!r}: {'no job id starts so' if not found else f'{len(found)} job ids start so'}; "
                "give more of the id."
            )
        return found[0]

    def cancel_job(self, job_id: str) -> Job:
        return cast(Job, self._json("POST", f"/v1/jobs/{job_id}/cancel"))

    def delete_job(self, job_id: str) -> None:
        """A finished, failed or cancelled job with its results (409 while its model is registered)."""
        self._send("DELETE", f"/v1/jobs/{job_id}")

    def models(self, dataset_id: str | None = None) -> list[Json]:
        return self._pages("/v1/models", {} if dataset_id is None else {"dataset_id": dataset_id})

    def delete_model(self, model_id: str) -> None:
        self._send("DELETE", f"/v1/models/{model_id}")

    def decide_bulk(self, job_id: str, rule: str, min_noise_probability: float | None = None) -> Json:
        """Decide every undecided sample a rule covers: ``keep_unflagged`` or ``accept_proposed_above``."""
        body: Json = {"rule": rule}
        if min_noise_probability is not None:
            body["min_noise_probability"] = min_noise_probability
        return cast(Json, self._json("POST", f"/v1/jobs/{job_id}/decisions/bulk", json=body))

    def curate(self, job_id: str, undecided: str = "keep", note: str = "") -> Json:
        """A curated annotation batch from the job's decisions (accepted corrections, kept originals)."""
        body = {"undecided": undecided, "note": note}
        return cast(Json, self._json("POST", f"/v1/jobs/{job_id}/curated-batches", json=body))

    def export_batch(self, dataset_id: str, batch_id: str, fmt: str, path: str | Path) -> Path:
        """A batch as a PNG zip, an nnU-Net v2 raw dataset (zip) or COCO JSON, written to ``path``."""
        url = f"/v1/datasets/{dataset_id}/annotation-batches/{batch_id}/export"
        return self._download(url, path, {"format": fmt})

    def job(self, job_id: str) -> Job:
        """The job's current state: status, phase, epoch of total_epochs, round, eta_seconds, quality."""
        return cast(Job, self._json("GET", f"/v1/jobs/{job_id}"))

    def wait(
        self, job_id: str, progress: bool = True, poll_s: float = 1.0, timeout_s: float | None = None
    ) -> Job:
        """Poll the job until it ends, with a live epoch bar on stderr; returns the succeeded job.

        Raises ``JobFailed`` when it failed or was cancelled, ``TimeoutError`` after ``timeout_s``.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        # The bar shows the server's ETA (training left at this attempt's pace), not tqdm's own, which
        # would count the time the job waited in the queue.
        fmt = "{l_bar}{bar}| {n_fmt}/{total_fmt} epochs [{elapsed}{postfix}]"
        with tqdm(file=sys.stderr, dynamic_ncols=True, disable=not progress, bar_format=fmt) as bar:
            while True:
                job = self.job(job_id)
                bar.total = job.get("total_epochs")
                bar.n = job.get("epoch") or 0
                bar.set_description(job.get("phase") or job["status"])
                postfix: dict[str, object] = {}
                if job.get("round") is not None:
                    postfix["round"] = job.get("round")
                if job.get("eta_seconds") is not None:
                    postfix["eta"] = f"{job.get('eta_seconds'):.0f}s"
                bar.set_postfix(postfix, refresh=True)
                if job["status"] in TERMINAL_STATUSES:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"job {job_id} is still {job['status']} after {timeout_s} s.")
                time.sleep(poll_s)
        if job["status"] != "succeeded":
            raise JobFailed(job)
        return job

    # --- results -----------------------------------------------------------------------------------

    def noise_report(self, job_id: str, flagged: bool | None = None) -> list[ReportRow]:
        """Every row of the job's noise report (all pages), least likely clean first."""
        params = {} if flagged is None else {"flagged": flagged}
        return self._pages(f"/v1/jobs/{job_id}/noise-report", params)

    def download_report_csv(self, job_id: str, path: str | Path, flagged: bool | None = None) -> Path:
        """The noise report as the API's CSV (same columns as the JSON rows)."""
        params: Json = {"format": "csv"}
        if flagged is not None:
            params["flagged"] = flagged
        return self._download(f"/v1/jobs/{job_id}/noise-report", path, params)

    def download_corrected(self, job_id: str, path: str | Path) -> Path:
        """The zip of the proposed corrected masks (PNG, at each image's size; empty when withheld)."""
        return self._download(f"/v1/jobs/{job_id}/corrected-masks.zip", path)

    def volume_verdicts(self, job_id: str) -> list[Json]:
        """The job's verdict per NIfTI volume (empty for 2D images): flagged, noise probability, the
        flagged slices and those with a proposed correction."""
        return self._pages(f"/v1/jobs/{job_id}/volumes")

    def download_volumes(self, job_id: str, folder: str | Path) -> list[Path]:
        """The job's masks of every volume as NIfTI label volumes (corrections applied where proposed),
        written as ``<volume>.nii.gz`` in ``folder``."""
        return [
            self._download(
                f"/v1/jobs/{job_id}/volumes/{v['volume_id']}/masks.nii.gz",
                Path(folder) / f"{v['volume']}.nii.gz",
            )
            for v in self.volume_verdicts(job_id)
        ]

    def download_review_task(self, job_id: str, path: str | Path, fmt: str = "cvat") -> Path:
        """The flagged masks for review in an annotation tool: "cvat", a CVAT for images 1.1 annotation
        file (corrections as pre-annotations); "label-studio", Label Studio tasks (JSON; the correction and
        the given mask as predictions)."""
        suffix = {"cvat": "xml", "label-studio": "json"}.get(fmt)
        if suffix is None:
            raise ValueError(f"fmt must be 'cvat' or 'label-studio', got {fmt!r}.")
        return self._download(f"/v1/jobs/{job_id}/review-task.{suffix}", path)

    def download_plots(self, job_id: str, folder: str | Path) -> list[Path]:
        """One PNG per GMM round, written as ``gmm-round-<k>.png`` in ``folder``."""
        plots = self._pages(f"/v1/jobs/{job_id}/plots/gmm-rounds")
        return [self._download(p["url"], Path(folder) / f"gmm-round-{p['round']}.png") for p in plots]

    def annotators(self, job_id: str | None = None, dataset_id: str | None = None) -> list[Json]:
        """The annotator report: per annotator of a job's masks (``job_id``), or per annotator of a
        dataset with their row of its latest job's report (``dataset_id``)."""
        if (job_id is None) == (dataset_id is None):
            raise ValueError("give a job_id or a dataset_id.")
        url = f"/v1/jobs/{job_id}/annotators" if job_id else f"/v1/datasets/{dataset_id}/annotators"
        return self._pages(url)

    def download_annotators_plot(self, job_id: str, path: str | Path) -> Path:
        """The job's annotator report as a bar chart of outline offsets (PNG)."""
        return self._download(f"/v1/jobs/{job_id}/plots/annotators.png", path)

    def segment(
        self,
        image_path: str | Path,
        model_ref: str = "latest",
        dataset_id: str | None = None,
        flips: bool = False,
    ) -> bytes:
        """The mask PNG of one image at its own size (class indices; 0/255 for two classes); ``model_ref`` a
        model id, or "latest" with ``dataset_id``; ``flips``: averaged over the image's test-time flips."""
        path = Path(image_path)
        params = _segment_params(dataset_id, flips)
        with path.open("rb") as f:
            response = self._send(
                "POST", f"/v1/models/{model_ref}/segment", params=params, files={"file": (path.name, f)}
            )
        return response.content

    def segment_folder(
        self,
        folder: str | Path,
        out_folder: str | Path,
        model_ref: str = "latest",
        dataset_id: str | None = None,
        progress: bool = True,
        flips: bool = False,
    ) -> list[Path]:
        """Segment every image in ``folder`` in one call (``segment-batch``); each mask is written as
        ``<stem>.png`` in ``out_folder``, with the API's ``predictions.json`` beside them. NIfTI volumes
        are segmented one call each, their label volumes written as ``<volume>.nii.gz``. ``flips``: every
        image and slice averaged over its test-time flips (four forward passes each)."""
        files = folder_files(folder)
        volumes = [p for p in files if is_volume_name(p.name)]
        images = [p for p in files if not is_volume_name(p.name)]
        out = Path(out_folder)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for path in volumes:
            written.append(out / f"{volume_stem(path.name)}.nii.gz")
            written[-1].write_bytes(self.segment(path, model_ref, dataset_id, flips))
        if images:
            params = _segment_params(dataset_id, flips)
            url = f"/v1/models/{model_ref}/segment-batch"
            response = self._post_zip(url, images, {}, "images", progress, params)
            with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
                names = [n for n in archive.namelist() if PurePosixPath(n).name == n]  # flat names only
                for name in names:
                    (out / name).write_bytes(archive.read(name))
            written += [out / n for n in names if n.endswith(".png")]
        return sorted(written)


def _segment_params(dataset_id: str | None, flips: bool) -> dict[str, str]:
    return (
        {"format": "png"}
        | ({} if dataset_id is None else {"dataset_id": dataset_id})
        | ({"flips": "true"} if flips else {})
    )


def config_dir() -> Path:
    """Where the client keeps its per-user settings: ``$GTC_CONFIG_DIR``, else
    ``$XDG_CONFIG_HOME/gtcorrect``, else ``~/.config/gtcorrect``."""
    if os.environ.get("GTC_CONFIG_DIR"):
        return Path(os.environ["GTC_CONFIG_DIR"])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "gtcorrect"


def _url_key(url: str) -> str:
    return url.strip().rstrip("/").lower()


def saved_key(url: str) -> str | None:
    """The API key saved for ``url`` (``save_key``), if any."""
    path = config_dir() / KEYS_FILE
    try:
        keys = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    key = keys.get(_url_key(url)) if isinstance(keys, dict) else None
    return key if isinstance(key, str) else None


def save_key(url: str, key: str) -> Path:
    """Remember ``key`` for the API at ``url`` in the per-user key file (mode 0600); returns its path."""
    folder = config_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / KEYS_FILE
    keys: dict[str, str] = {}
    try:
        loaded = json.loads(path.read_text())
        keys = {str(k): str(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}
    except (OSError, ValueError):
        pass
    keys[_url_key(url)] = key
    partial = path.with_name(path.name + ".part")
    partial.write_text(json.dumps(keys, indent=1))
    partial.chmod(0o600)
    partial.replace(path)
    return path


KEYS_FILE = "keys.json"
MAX_RETRY_AFTER_S = 60.0  # a server's Retry-After is followed up to this long


def _retry_after(response: httpx.Response) -> float:
    """The seconds a 429/503 answer's ``Retry-After`` asks for (at most ``MAX_RETRY_AFTER_S``), else 0."""
    value = response.headers.get("retry-after", "").strip()
    return min(float(value), MAX_RETRY_AFTER_S) if value.isdigit() else 0.0
