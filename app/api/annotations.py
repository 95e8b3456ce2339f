"""/v1/datasets/{id}/annotation-batches: upload masks from one annotator, all or nothing."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Query, Response, UploadFile
from fastapi.responses import JSONResponse, StreamingResponse

from app.api.deps import (
    DatasetDep,
    Limit,
    LimitsDep,
    Multipart,
    Offset,
    ProjectDep,
    SessionDep,
    StoreDep,
    read_uploads,
)
from app.db.models import BatchStatus
from app.schemas.annotations import BatchOut, ConsensusIn
from app.schemas.common import Page
from app.services import annotations as batches
from app.services import cleanup, consensus, exports
from app.services.reports import stream_zip

router = APIRouter(prefix="/v1/datasets/{dataset_id}/annotation-batches", tags=["annotations"])


@router.post(
    "",
    dependencies=[Multipart],
    status_code=201,
    summary="Upload an annotation batch (mask files or one zip, optional manifest; or a tool's export)",
    response_model=BatchOut,
    responses={
        422: {
            "description": "Some masks are invalid; `invalid_files` names each with the reason. "
            "Nothing was stored."
        },
        413: {"description": "The upload is larger than the limit."},
    },
)
def create_batch(
    dataset: DatasetDep,
    session: SessionDep,
    store: StoreDep,
    limits: LimitsDep,
    response: Response,
    annotator: Annotated[str, Form(min_length=1, max_length=200, description="Who drew the masks.")],
    files: Annotated[
        list[UploadFile],
        File(
            description="Mask PNGs named like their images, or one zip; NIfTI label volumes named like "
            "their image volumes; or one COCO JSON, Label Studio JSON or CVAT for images XML export "
            "(polygons, RLE, boxes, masks, brushes; labels named like the label map's classes)."
        ),
    ],
    source: Annotated[str, Form(max_length=2000, description="Free note: vendor, tool, round.")] = "",
    mask_mode: Annotated[
        Literal["index", "binary"],
        Form(
            description="index: pixel value = class index (0/255 accepted for two classes); binary: "
            "grey > threshold is the foreground, for lossy (JPEG) masks of a two-class dataset."
        ),
    ] = "index",
    threshold: Annotated[int, Form(ge=0, le=254, description="Foreground threshold for binary.")] = 127,
) -> BatchOut:
    """Store one annotator's masks as a new batch, all or nothing: every file is matched to a sample by name
    (or by the manifest), decoded and checked against the dataset's label map; one bad file rejects the
    batch and names the reason per file. A COCO JSON document (as CVAT, Label Studio or pycocotools write
    it) or a CVAT for images 1.1 XML file gives one mask per listed image, drawn as pycocotools draws it;
    a problem names the entry (`annotations[3]`, `category 'tumour'`, `a.png: <polyline> 1`).
    """
    batch = batches.create_batch(
        session,
        store,
        dataset,
        annotator=annotator,
        source=source,
        files=read_uploads(files),
        limits=limits,
        encoding=batches.MaskEncoding(mask_mode, threshold),
    )
    response.headers["Location"] = f"/v1/datasets/{dataset.id}/annotation-batches/{batch.id}"
    return BatchOut.model_validate(batch)


@router.post(
    "/consensus",
    status_code=201,
    summary="Agree one mask per sample from several annotators' batches (STAPLE or majority): a new batch",
    response_model=BatchOut,
    responses={
        422: {"description": "Fewer than two annotators, no sample they share, or an unknown batch."},
    },
)
def create_consensus(
    dataset: DatasetDep, body: ConsensusIn, session: SessionDep, store: StoreDep, response: Response
) -> BatchOut:
    """Samples that several annotators outlined get the consensus of their masks; samples only one
    outlined keep that mask. The provenance says how reliable each annotator was against the consensus.
    Train on it like any batch (a job's ``batch_ids``)."""
    batch = consensus.create_consensus_batch(
        session, store, dataset, body.batch_ids, body.method, annotator=body.annotator, note=body.note
    )
    response.headers["Location"] = f"/v1/datasets/{dataset.id}/annotation-batches/{batch.id}"
    return BatchOut.model_validate(batch)


@router.get("", summary="List annotation batches", response_model=Page[BatchOut])
def list_batches(
    dataset: DatasetDep,
    session: SessionDep,
    limit: Limit = 50,
    offset: Offset = 0,
    annotator: str | None = None,
    status: BatchStatus | None = None,
) -> Page[BatchOut]:
    """The dataset's annotation batches, newest first, as a page (`limit`, `offset`, `total`)."""
    rows, total = batches.list_batches(
        session, dataset, annotator=annotator, status=status, limit=limit, offset=offset
    )
    return Page(items=[BatchOut.model_validate(b) for b in rows], total=total, limit=limit, offset=offset)


@router.get("/{batch_id:uuid}", summary="Get an annotation batch with its report", response_model=BatchOut)
def get_batch(dataset: DatasetDep, batch_id: uuid.UUID, session: SessionDep) -> BatchOut:
    """One batch with its report: every mask file and the sample it was matched to; curated and consensus
    batches also carry their provenance.
    """
    return BatchOut.model_validate(batches.get_batch(session, dataset, batch_id))


@router.delete(
    "/{batch_id:uuid}",
    status_code=204,
    summary="Delete an annotation batch and its masks",
    responses={409: {"description": "A job trained on the batch's masks: delete the job first."}},
)
def delete_batch(
    dataset: DatasetDep, batch_id: uuid.UUID, session: SessionDep, store: StoreDep, project: ProjectDep
) -> Response:
    """The batch, its masks' rows and objects; 409 naming the jobs that trained on them."""
    cleanup.delete_batch(session, store, batches.get_batch(session, dataset, batch_id), project)
    return Response(status_code=204)


@router.get(
    "/{batch_id}/masks/{sample_id}",
    summary="One mask of the batch (PNG, class indices)",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
def get_mask(
    dataset: DatasetDep, batch_id: uuid.UUID, sample_id: uuid.UUID, session: SessionDep, store: StoreDep
) -> Response:
    """The batch's mask of one sample as a PNG of class indices (two-class datasets: 0 and 255 so the mask is
    visible).
    """
    batch = batches.get_batch(session, dataset, batch_id)
    return Response(exports.batch_mask(session, store, batch, sample_id), media_type="image/png")


@router.get(
    "/{batch_id}/export",
    summary="Export the batch: PNG mask zip (re-uploadable), nnU-Net v2 raw dataset (zip) or COCO JSON (RLE)",
    response_model=None,
    responses={
        200: {"content": {"application/zip": {}, "application/json": {}}},
        422: {"description": "nnU-Net needs one channel count across the batch's images."},
    },
)
def export_batch(
    dataset: DatasetDep,
    batch_id: uuid.UUID,
    session: SessionDep,
    store: StoreDep,
    format: exports.ExportFormat = "png",  # the public query parameter name
    dataset_number: Annotated[int, Query(ge=1, le=999, description="nnU-Net's DatasetNNN id.")] = 501,
) -> Response:
    """The batch for other tools: `png` (a zip of masks with a manifest that uploads again as a batch),
    `nnunet` (an nnU-Net v2 raw dataset with dataset.json) or `coco` (COCO JSON with RLE masks).
    """
    batch = batches.get_batch(session, dataset, batch_id)
    if format == "coco":
        return JSONResponse(
            exports.coco(session, store, dataset, batch),
            headers={"Content-Disposition": f'attachment; filename="coco-{batch.id}.json"'},
        )
    if format == "nnunet":
        root, entries = exports.nnunet_entries(session, store, dataset, batch, dataset_number)
        filename = f"{root}.zip"
    else:
        entries, filename = exports.png_entries(session, store, dataset, batch), f"masks-{batch.id}.zip"
    return StreamingResponse(
        stream_zip(store, entries),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
