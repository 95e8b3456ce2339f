"""Segmentation with a stored model: an LRU cache of loaded predictors and the output encodings.

Shape legend: H, W the input image's height and width; K classes (0 = background).
"""

from __future__ import annotations

import io
import json
import queue
import tempfile
import threading
import time
import uuid
import zipfile
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO, Any

import numpy as np
import torch
from PIL import Image
from sqlalchemy.orm import Session

from app.db.models import Dataset, Model, Project, Sample
from app.errors import InvalidInput, NotFound
from app.services import volumes
from app.services.objects import read_object
from app.services.uploads import NO_VOLUMES, Blob, UploadLimits, reason
from app.storage.base import ObjectNotFound, ObjectStore
from gtcorrect import volumes as nifti
from gtcorrect.data import mask_to_png, read_image
from gtcorrect.export import mask_to_rle
from gtcorrect.inference import Prediction, Predictor
from gtcorrect.model import ModelBundle
from gtcorrect.types import LabelMap

FORMATS = ("png", "json", "probabilities", "npy")


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


@dataclass
class _Pending:
    x: np.ndarray  # (C, S, S): one request's prepared image
    result: Future[np.ndarray]


class MicroBatcher:
    """One model's network run on the images of concurrent requests together (dynamic micro-batching).

    A request prepares its image in its own thread (decode, resize), hands it to the batcher's thread
    and restores its mask from the returned probabilities in its own thread again. The batcher takes
    what is waiting, up to ``max_batch`` images, and waits up to ``window_s`` for more only while other
    requests are still preparing theirs: a lone request never waits. ``max_batch`` 1 runs each image
    alone (in the batcher's thread). ``segment-batch`` calls the predictor directly in its request's
    thread: eval-mode forward passes do not change the network, so the two may overlap. Once closed (the
    model left the cache), requests that still hold it run in their own thread."""

    def __init__(self, predictor: Predictor, max_batch: int = 8, window_s: float = 0.005) -> None:
        if max_batch < 1 or window_s < 0:
            raise ValueError(f"max_batch must be >= 1 and window_s >= 0, got {max_batch}, {window_s}.")
        self.predictor, self.max_batch, self.window_s = predictor, max_batch, window_s
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._in_flight = 0
        self._closed = False
        self._count = threading.Lock()
        self.batches: list[int] = []  # sizes of the last 1000 batches run (for tests and metrics)
        self._thread = threading.Thread(target=self._loop, name="gtc-micro-batcher", daemon=True)
        self._thread.start()

    def segment(self, image: np.ndarray, flips: bool = False) -> Prediction:
        """(H, W, C) uint8 -> prediction at the same H, W. With ``flips`` (four forward passes, the image's
        test-time flips) the request runs alone in its own thread, not in the shared batch."""
        if flips:
            low = self.predictor.forward(self.predictor.prepare(image)[None], flips=True)[0]
        else:
            low = self._batched(image)
        return Prediction.from_low(low, (int(image.shape[0]), int(image.shape[1])))

    def _batched(self, image: np.ndarray) -> np.ndarray:
        """The network's probabilities (K, S, S) of one image, from the shared batch (in this thread
        once the batcher is closed)."""
        with self._count:
            self._in_flight += 1
        try:
            pending = _Pending(self.predictor.prepare(image), Future())
            with self._count:  # nothing is queued after the stop signal
                closed = self._closed
                if not closed:
                    self._queue.put(pending)
            return self.predictor.forward(pending.x[None])[0] if closed else pending.result.result()
        finally:
            with self._count:
                self._in_flight -= 1

    def close(self, wait: bool = True) -> None:
        """Stop the batcher's thread once what is queued has run (``wait``: until it has)."""
        with self._count:
            if not self._closed:
                self._closed = True
                self._queue.put(None)
        if wait:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = self._gather(first)
            try:
                probs = self.predictor.forward(np.stack([p.x for p in batch]))
            except BaseException as exc:  # every waiting request gets the error, the thread lives on
                for p in batch:
                    p.result.set_exception(exc)
            else:
                for p, prob in zip(batch, probs, strict=True):
                    p.result.set_result(prob)
            self.batches = [*self.batches[-999:], len(batch)]
            if stop:
                return

    def _gather(self, first: _Pending) -> tuple[list[_Pending], bool]:
        """``first`` and what joins it; True when the stop signal came meanwhile."""
        batch = [first]
        deadline = time.monotonic() + self.window_s
        while len(batch) < self.max_batch:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                with self._count:
                    preparing = self._in_flight > len(batch) + self._queue.qsize()
                remaining = deadline - time.monotonic()
                if not preparing or remaining <= 0:
                    break
                try:
                    nxt = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if nxt is None:
                return batch, True
            batch.append(nxt)
        return batch, False


class ModelCache:
    """Up to ``size`` loaded models (a ``MicroBatcher`` each), least recently used evicted first.
    Thread-safe: requests run in a threadpool, and two requests for one cold model must not both load
    it."""

    def __init__(self, size: int, device: str = "cpu", max_batch: int = 8, window_s: float = 0.005) -> None:
        if size < 1:
            raise ValueError(f"model cache size must be >= 1, got {size}.")
        self.size = size
        self.device = resolve_device(device)
        self.max_batch, self.window_s = max_batch, window_s
        self._items: OrderedDict[uuid.UUID, MicroBatcher] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._items

    def get(self, store: ObjectStore, model: Model) -> MicroBatcher:
        with self._lock:
            if model.id in self._items:
                self._items.move_to_end(model.id)
                return self._items[model.id]
            served = MicroBatcher(_load(store, model, self.device), self.max_batch, self.window_s)
            self._items[model.id] = served
            while len(self._items) > self.size:
                self._items.popitem(last=False)[1].close(wait=False)  # requests holding it finish
            return served

    def evict(self, model_id: uuid.UUID) -> None:
        """Forget one model (it was deleted); requests that still hold it finish."""
        with self._lock:
            served = self._items.pop(model_id, None)
        if served is not None:
            served.close(wait=False)

    def clear(self) -> None:
        with self._lock:
            for served in self._items.values():
                served.close()
            self._items.clear()


def _load(store: ObjectStore, model: Model, device: str) -> Predictor:
    try:
        data = store.get(model.weights_key)
    except ObjectNotFound as exc:
        raise NotFound(f"the weights of model {model.id} are missing from the object store.") from exc
    return Predictor(ModelBundle.from_bytes(data), device=device)


@dataclass(frozen=True)
class Encoded:
    """A segmentation answer: either raw bytes with a media type, or a JSON-ready dict."""

    media_type: str
    body: bytes | None = None
    payload: dict[str, Any] | None = None


MAX_NPY_BYTES = 256 << 20  # format=npy sends (K, H, W) float32: refuse what would be larger
# Answers are encoded once and sent once: zlib's fastest level (the default is 6) encodes a mask several
# times faster for a somewhat larger PNG (a few kilobytes either way).
ANSWER_PNG_LEVEL = 1


def check_npy(width: int, height: int, labels: LabelMap) -> None:
    """Refuse a format=npy answer larger than MAX_NPY_BYTES (checked from the header before decoding,
    and again on the prediction)."""
    nbytes = 4 * labels.num_classes * height * width
    if nbytes > MAX_NPY_BYTES:
        raise InvalidInput(
            f"format=npy would send {nbytes >> 20} MB of float32 probabilities for a {width}x{height} image "
            f"(at most {MAX_NPY_BYTES >> 20} MB); ask for format=probabilities (an 8-bit PNG), png "
            "or json, or send a smaller image.",
            field="format",
        )


def encode(prediction: Prediction, predictor: Predictor, model_id: uuid.UUID, fmt: str) -> Encoded:
    if fmt not in FORMATS:
        raise InvalidInput(f"format must be one of {FORMATS}, got {fmt!r}.", field="format")
    labels = predictor.label_map
    mask = prediction.mask
    if fmt == "png":
        return Encoded("image/png", body=mask_to_png(mask, labels, ANSWER_PNG_LEVEL))
    if fmt == "probabilities":
        grey = np.clip(np.round(prediction.foreground_probability() * 255.0), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(grey, mode="L").save(buffer, format="PNG", compress_level=ANSWER_PNG_LEVEL)
        return Encoded("image/png", body=buffer.getvalue())
    if fmt == "npy":
        h, w = prediction.size
        check_npy(w, h, labels)
        buffer = io.BytesIO()
        np.save(buffer, prediction.probabilities.astype(np.float32))
        return Encoded("application/x-npy", body=buffer.getvalue())
    areas = np.bincount(mask.ravel(), minlength=labels.num_classes)
    classes = [
        {"index": k, "name": name, "area": int(areas[k]), "rle": mask_to_rle(mask, k)}
        for k, name in enumerate(labels.names)
    ]
    payload = {
        "model_id": str(model_id),
        "width": int(mask.shape[1]),
        "height": int(mask.shape[0]),
        "mean_confidence": prediction.mean_confidence,
        "classes": classes,
    }
    return Encoded("application/json", payload=payload)


def segment_zip(
    predictor: Predictor,
    blobs: list[Blob],
    limits: UploadLimits,
    model_id: uuid.UUID,
    fmt: str,
    batch_size: int = 8,
    flips: bool = False,
) -> IO[bytes]:
    """Every image of ``blobs`` segmented: a zip (in a spooled temporary file, rewound) of one mask PNG
    per image (``fmt`` png or probabilities), named ``<stem>.png``, at the image's size, plus
    ``predictions.json`` (per image: width, height, mean confidence and pixel area per class). One image
    is decoded at a time under the process's pixel budget and kept only as the network's input, so up to
    ``batch_size`` of them go through the network together (``flips``: each averaged over its test-time
    flips). Bad files are collected and refused together (422 naming each)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    stems: dict[str, list[str]] = {}
    for blob in blobs:
        stems.setdefault(PurePosixPath(blob.name).stem, []).append(blob.name)
    clashes = [
        {"file": n, "reason": f"shares its name stem with {', '.join(o for o in names if o != n)}"}
        for names in stems.values()
        if len(names) > 1
        for n in names
    ]
    if clashes:
        raise InvalidInput(
            "masks are named after their images' stems; these would overwrite each other.",
            invalid_files=clashes,
        )
    out = tempfile.SpooledTemporaryFile(max_size=64 << 20)  # noqa: SIM115 (the caller streams it)
    try:
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
            _write_masks(_MaskArchive(archive, predictor, model_id, fmt, flips), blobs, limits, batch_size)
    except BaseException:
        out.close()
        raise
    out.seek(0)
    return out


@dataclass
class _Waiting:
    name: str
    x: np.ndarray  # (C, S, S): the network's input
    size: tuple[int, int]  # the image's H, W


class _MaskArchive:
    """The zip being written: one mask per image, and the per-image summary for ``predictions.json``."""

    def __init__(
        self, archive: zipfile.ZipFile, predictor: Predictor, model_id: uuid.UUID, fmt: str, flips: bool
    ) -> None:
        self.archive, self.predictor, self.model_id, self.fmt = archive, predictor, model_id, fmt
        self.flips = flips
        self.summary: list[dict[str, Any]] = []

    def add(self, waiting: list[_Waiting]) -> None:
        """Segment ``waiting`` in one forward pass and write their masks."""
        labels = self.predictor.label_map
        probs = self.predictor.forward(np.stack([w.x for w in waiting]), flips=self.flips)
        for w, low in zip(waiting, probs, strict=True):
            prediction = Prediction.from_low(low, w.size)
            name = f"{PurePosixPath(w.name).stem}.png"
            body = encode(prediction, self.predictor, self.model_id, self.fmt).body
            assert body is not None  # png and probabilities are bodies, not JSON payloads
            self.archive.writestr(name, body)
            areas = np.bincount(prediction.mask.ravel(), minlength=labels.num_classes)
            self.summary.append(
                {
                    "file": w.name,
                    "mask": name,
                    "width": w.size[1],
                    "height": w.size[0],
                    "mean_confidence": prediction.mean_confidence,
                    "area": {label: int(areas[k]) for k, label in enumerate(labels.names)},
                }
            )

    def close(self) -> None:
        body = {"model_id": str(self.model_id), "images": self.summary}
        self.archive.writestr("predictions.json", json.dumps(body, indent=1))


def segment_volume(
    predictor: Predictor, blob: Blob, limits: UploadLimits, batch_size: int = 8, flips: bool = False
) -> bytes:
    """A NIfTI image volume segmented slice-wise (as it was trained): a gzipped label volume in its
    space (its affine and header; voxels uint8 class indices). 422 naming the file when it is not a
    volume the service takes."""
    try:
        with volumes.reading(blob, limits) as volume:
            preds = predictor.predict(nifti.image_slices(volume), batch_size=batch_size, flips=flips)
            return nifti.label_volume_bytes(nifti.stack([p.mask for p in preds]), volume)
    except ValueError as exc:
        raise InvalidInput(
            str(exc), invalid_files=[{"file": blob.name, "reason": reason(exc, blob.name)}]
        ) from exc


def _read_upload(blob: Blob, max_pixels: int) -> np.ndarray:
    """An uploaded image to segment; ``ValueError`` naming the file for a NIfTI volume or a bad image."""
    if volumes.is_volume(blob):
        raise ValueError(f"{blob.name}: {NO_VOLUMES}.")
    return read_image(blob.data, name=blob.name, max_pixels=max_pixels)


def _write_masks(masks: _MaskArchive, blobs: list[Blob], limits: UploadLimits, batch_size: int) -> None:
    problems: list[dict[str, str]] = []
    waiting: list[_Waiting] = []
    for blob in blobs:
        with limits.decoding(blob):
            try:
                image = _read_upload(blob, limits.max_image_pixels)
            except ValueError as exc:
                problems.append({"file": blob.name, "reason": reason(exc, blob.name)})
                continue
            if problems:
                continue  # the request fails anyway: only check the remaining files
            size = (int(image.shape[0]), int(image.shape[1]))
            waiting.append(_Waiting(blob.name, masks.predictor.prepare(image), size))
            del image
        if len(waiting) == batch_size:
            masks.add(waiting)
            waiting = []
    if problems:
        raise InvalidInput(
            f"{len(problems)} of {len(blobs)} files are not readable images.", invalid_files=problems
        )
    if waiting:
        masks.add(waiting)
    masks.close()


def input_image(
    session: Session,
    store: ObjectStore,
    project: Project,
    *,
    upload: Blob | None,
    sample_id: uuid.UUID | None,
    max_pixels: int,
) -> np.ndarray:
    """The image to segment, (H, W, C) uint8: an uploaded file or a stored sample of the project."""
    if (upload is None) == (sample_id is None):
        raise InvalidInput("send exactly one of an image 'file' or a 'sample_id' form field.")
    if upload is not None:
        try:
            return _read_upload(upload, max_pixels)
        except ValueError as exc:
            raise InvalidInput(
                str(exc), invalid_files=[{"file": upload.name, "reason": reason(exc, upload.name)}]
            ) from exc
    sample = session.get(Sample, sample_id)
    dataset = session.get(Dataset, sample.dataset_id) if sample is not None else None
    if sample is None or dataset is None or dataset.project_id != project.id:
        raise NotFound(f"sample {sample_id} not found.")
    return read_image(read_object(store, sample.object_key), name=sample.file_name, max_pixels=max_pixels)
