"""/v1/models: trained models and segmentation with them."""

from __future__ import annotations

import contextlib
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from app.api.deps import (
    DatasetDep,
    FormBody,
    Limit,
    LimitsDep,
    ModelCacheDep,
    Offset,
    ProjectDep,
    RecentModelsDep,
    SessionDep,
    StoreDep,
    read_uploads,
)
from app.errors import InvalidInput
from app.schemas.common import Page
from app.schemas.results import ModelOut, SegmentationOut
from app.services import cleanup, inference, models, volumes
from app.services.uploads import Blob, UploadLimits, expand, image_header
from gtcorrect.inference import Predictor

FlipsQuery = Annotated[
    bool,
    Query(
        description="Test-time flips: average the network over each image (each slice of a volume) and its "
        "horizontal, vertical and double flips. Four forward passes for a closer outline on the benchmarks "
        "(BENCHMARKS.md); a single image is then segmented on its own, not in the batch shared with other "
        "requests."
    ),
]

router = APIRouter(tags=["models"])


@router.get("/v1/models", summary="List trained models", response_model=Page[ModelOut])
def list_models(
    session: SessionDep,
    project: ProjectDep,
    limit: Limit = 50,
    offset: Offset = 0,
    dataset_id: uuid.UUID | None = None,
) -> Page[ModelOut]:
    """The project's trained models, newest first, as a page."""
    rows, total = models.list_models(session, project, dataset_id=dataset_id, limit=limit, offset=offset)
    return Page(items=[ModelOut.model_validate(m) for m in rows], total=total, limit=limit, offset=offset)


@router.get("/v1/models/{model_id}", summary="Get a model", response_model=ModelOut)
def get_model(model_id: uuid.UUID, session: SessionDep, project: ProjectDep) -> ModelOut:
    """One model: its dataset, version, job, label map and metrics."""
    return ModelOut.model_validate(models.get_model(session, project, model_id))


@router.delete("/v1/models/{model_id}", status_code=204, summary="Delete a model and its weights")
def delete_model(
    model_id: uuid.UUID,
    session: SessionDep,
    project: ProjectDep,
    store: StoreDep,
    recent: RecentModelsDep,
    cache: ModelCacheDep,
) -> Response:
    """The model is no longer served (this process forgets it at once, others within
    ``GTC_LOOKUP_CACHE_SECONDS``); the job that trained it and its report stay."""
    model = models.get_model(session, project, model_id)
    cleanup.delete_model(session, store, model)
    recent.forget(lambda m: m.id == model_id)
    cache.evict(model_id)
    return Response(status_code=204)


@router.get(
    "/v1/datasets/{dataset_id}/models/latest",
    summary="The latest model of a dataset",
    response_model=ModelOut,
)
def latest_model(dataset: DatasetDep, session: SessionDep, project: ProjectDep) -> ModelOut:
    """The dataset's newest model."""
    return ModelOut.model_validate(models.latest_model(session, project, dataset.id))


@router.post(
    "/v1/models/{model_ref}/segment-batch",
    dependencies=[FormBody],
    summary="Segment several images in one call: a zip of masks",
    response_class=Response,
    responses={
        200: {"content": {"application/zip": {}}},
        422: {"description": "Unreadable images or clashing names (each named in invalid_files)."},
    },
)
def segment_batch(
    model_ref: str,
    session: SessionDep,
    project: ProjectDep,
    store: StoreDep,
    cache: ModelCacheDep,
    limits: LimitsDep,
    recent: RecentModelsDep,
    files: Annotated[
        list[UploadFile], File(description="Images (PNG, JPEG, TIFF, BMP or single-frame DICOM), or one zip.")
    ],
    dataset_id: uuid.UUID | None = None,
    format: Literal["png", "probabilities"] = "png",  # the public query parameter name
    flips: FlipsQuery = False,
) -> StreamingResponse:
    """Segment every uploaded image with a model (an id, or `latest` with `dataset_id`) in one request:
    a zip with one mask PNG per image, `<image stem>.png` at the image's own size (`format=png`: class
    indices, 0/255 for two classes; `probabilities`: the foreground probability as 8-bit grey), and
    `predictions.json` (per image: size, mean confidence, pixel area per class). Images are decoded one
    at a time and go through the network up to `GTC_INFER_MAX_BATCH` together; an unreadable file fails the
    whole request, naming every such file."""
    model = models.resolve_model(session, project, model_ref, dataset_id, recent)
    blobs = expand(read_uploads(files), limits)
    predictor = cache.get(store, model).predictor
    archive = inference.segment_zip(predictor, blobs, limits, model.id, format, cache.max_batch, flips)
    return StreamingResponse(
        iter(lambda: archive.read(1 << 16), b""),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="masks-{model.id}.zip"'},
        background=BackgroundTask(archive.close),
    )


@router.post(
    "/v1/models/{model_ref}/segment",
    dependencies=[FormBody],
    summary="Segment an uploaded image or a stored sample",
    description="`format`: png (class-index mask at the original size; binary masks as 0/255), json (RLE and "
    "pixel area per class, mean confidence), probabilities (foreground probability as 8-bit grey PNG), npy "
    "((K, H, W) float32 probabilities). A NIfTI volume (.nii.gz, .nii) is segmented slice-wise and answered "
    "as a NIfTI label volume in its space (its affine and header; uint8 class indices).",
    response_model=SegmentationOut,
    responses={200: {"content": {"image/png": {}, "application/x-npy": {}, "application/gzip": {}}}},
)
def segment(
    model_ref: str,
    session: SessionDep,
    project: ProjectDep,
    store: StoreDep,
    cache: ModelCacheDep,
    limits: LimitsDep,
    recent: RecentModelsDep,
    dataset_id: uuid.UUID | None = None,
    format: Literal["png", "json", "probabilities", "npy"] = "png",  # the public query parameter name
    file: Annotated[
        UploadFile | None,
        File(description="The image to segment, or a NIfTI volume (answered as a NIfTI label volume)."),
    ] = None,
    sample_id: Annotated[uuid.UUID | None, Form(description="Or: a stored sample of this project.")] = None,
    flips: FlipsQuery = False,
) -> Response:
    """Segment images with a model (an id, or `latest` with `dataset_id`): masks as PNG, COCO RLE JSON or a
    zip, at each image's own size.
    """
    model = models.resolve_model(session, project, model_ref, dataset_id, recent)
    upload: Blob | None = read_uploads([file])[0] if file is not None else None
    served = cache.get(store, model)
    if upload is not None and volumes.is_volume(upload):
        return _segment_volume(served.predictor, upload, format, limits, flips)
    header = image_header(upload) if upload is not None and format == "npy" else None
    if header is not None:  # refused before anything is decoded
        inference.check_npy(header.width, header.height, served.predictor.label_map)
    # An uploaded image holds the process's decode budget until its answer is encoded.
    with limits.decoding(upload) if upload is not None else contextlib.nullcontext():
        image = inference.input_image(
            session, store, project, upload=upload, sample_id=sample_id, max_pixels=limits.max_image_pixels
        )
        prediction = served.segment(image, flips)  # with concurrent requests' images, in one forward pass
        del image  # the decoded input is not needed to encode the answer
        encoded = inference.encode(prediction, served.predictor, model.id, format)
    if encoded.payload is not None:
        return JSONResponse(encoded.payload)
    return Response(encoded.body, media_type=encoded.media_type)


def _segment_volume(
    predictor: Predictor, upload: Blob, fmt: str, limits: UploadLimits, flips: bool
) -> Response:
    """A NIfTI volume's answer: its label volume (``format`` png, the default: class indices)."""
    if fmt != "png":
        raise InvalidInput(
            f"a NIfTI volume is answered as a NIfTI label volume; format={fmt} is for 2D images.",
            field="format",
        )
    name = f"{volumes.name(upload)}.nii.gz"
    return Response(
        inference.segment_volume(predictor, upload, limits, flips=flips),
        media_type=volumes.GZIP,
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
