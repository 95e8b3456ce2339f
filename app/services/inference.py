"""Segmentation with a stored model: an LRU cache of loaded predictors and the output encodings.

Shape legend: H, W the input image's height and width; K classes (0 = background).
"""

from __future__ import annotations

import io
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from sqlalchemy.orm import Session

from app.db.models import Dataset, Model, Project, Sample
from app.errors import InvalidInput, NotFound
from app.services.objects import read_object
from app.services.uploads import Blob, reason
from app.storage.base import ObjectNotFound, ObjectStore
from gtcorrect.data import read_image
from gtcorrect.export import mask_to_rle
from gtcorrect.inference import Prediction, Predictor, mask_to_png
from gtcorrect.model import ModelBundle

FORMATS = ("png", "json", "probabilities", "npy")


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class ModelCache:
    """Up to ``size`` loaded predictors, least recently used evicted first. Thread-safe: requests
    run in a threadpool, and two requests for one cold model must not both load it."""

    def __init__(self, size: int, device: str = "cpu") -> None:
        if size < 1:
            raise ValueError(f"model cache size must be >= 1, got {size}.")
        self.size = size
        self.device = resolve_device(device)
        self._items: OrderedDict[uuid.UUID, Predictor] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._items

    def get(self, store: ObjectStore, model: Model) -> Predictor:
        with self._lock:
            if model.id in self._items:
                self._items.move_to_end(model.id)
                return self._items[model.id]
            predictor = _load(store, model, self.device)
            self._items[model.id] = predictor
            while len(self._items) > self.size:
                self._items.popitem(last=False)
            return predictor

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def _load(store: ObjectStore, model: Model, device: str) -> Predictor:
    try:
        data = store.get(model.weights_key)
    except ObjectNotFound as exc:
        raise NotFound(
            f"the weights of model {model.id} are missing from the store ({model.weights_key})."
        ) from exc
    return Predictor(ModelBundle.from_bytes(data), device=device)


@dataclass(frozen=True)
class Encoded:
    """A segmentation answer: either raw bytes with a media type, or a JSON-ready dict."""

    media_type: str
    body: bytes | None = None
    payload: dict[str, Any] | None = None


def segment(predictor: Predictor, image: np.ndarray) -> Prediction:
    """(H, W, C) uint8 -> prediction at the same H, W."""
    return predictor.predict([image], batch_size=1)[0]


MAX_NPY_BYTES = 256 << 20  # format=npy sends (K, H, W) float32: refuse what would be larger


def encode(prediction: Prediction, predictor: Predictor, model_id: uuid.UUID, fmt: str) -> Encoded:
    if fmt not in FORMATS:
        raise InvalidInput(f"format must be one of {FORMATS}, got {fmt!r}.", field="format")
    labels = predictor.label_map
    mask = prediction.mask
    if fmt == "png":
        return Encoded("image/png", body=mask_to_png(mask, labels))
    if fmt == "probabilities":
        grey = np.clip(np.round(prediction.foreground_probability() * 255.0), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(grey, mode="L").save(buffer, format="PNG")
        return Encoded("image/png", body=buffer.getvalue())
    if fmt == "npy":
        h, w = prediction.size
        nbytes = 4 * labels.num_classes * h * w
        if nbytes > MAX_NPY_BYTES:
            raise InvalidInput(
                f"format=npy would send {nbytes >> 20} MB of float32 probabilities for a {w}x{h} image "
                f"(at most {MAX_NPY_BYTES >> 20} MB); ask for format=probabilities (an 8-bit PNG), png "
                "or json, or send a smaller image.",
                field="format",
            )
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
            return read_image(upload.data, name=upload.name, max_pixels=max_pixels)
        except ValueError as exc:
            raise InvalidInput(
                str(exc), invalid_files=[{"file": upload.name, "reason": reason(exc, upload.name)}]
            ) from exc
    sample = session.get(Sample, sample_id)
    dataset = session.get(Dataset, sample.dataset_id) if sample is not None else None
    if sample is None or dataset is None or dataset.project_id != project.id:
        raise NotFound(f"sample {sample_id} not found.")
    return read_image(read_object(store, sample.object_key), name=sample.file_name, max_pixels=max_pixels)
