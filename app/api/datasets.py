"""/v1/datasets: datasets, their samples and image uploads."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, File, Form, Response, UploadFile

from app.api.deps import (
    DatasetDep,
    Limit,
    LimitsDep,
    Multipart,
    Offset,
    ProjectDep,
    RecentModelsDep,
    SessionDep,
    StoreDep,
    read_uploads,
)
from app.schemas.common import FileOutcome, Page
from app.schemas.datasets import (
    DatasetCreate,
    DatasetOut,
    DatasetRename,
    ImageUploadOut,
    NnUNetImportOut,
    SampleOut,
    VolumeOut,
)
from app.schemas.results import AnnotatorOut, DatasetAnnotatorOut
from app.services import cleanup, datasets, images, nnunet, reports, volumes
from app.services.objects import read_object

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


def _out(session: SessionDep, dataset: datasets.Dataset) -> DatasetOut:
    out = DatasetOut.model_validate(dataset)
    out.sample_count = datasets.sample_count(session, dataset.id)
    return out


@router.post(
    "",
    status_code=201,
    summary="Create a dataset",
    response_model=DatasetOut,
    responses={409: {"description": "The project already has a dataset of that name."}},
)
def create_dataset(
    body: DatasetCreate, session: SessionDep, project: ProjectDep, response: Response
) -> DatasetOut:
    """A new, empty dataset with its label map (class names, background first)."""
    dataset = datasets.create_dataset(session, project, body.name, body.label_map, body.image_settings)
    response.headers["Location"] = f"/v1/datasets/{dataset.id}"
    return _out(session, dataset)


@router.post(
    "/import/nnunet",
    dependencies=[Multipart],
    status_code=201,
    summary="Import an nnU-Net v2 raw dataset (one zip): a dataset, its samples and one batch of labels",
    response_model=NnUNetImportOut,
    responses={
        422: {
            "description": "A problem in dataset.json, a case or a file; `invalid_files` names each entry "
            "with the reason. Nothing was stored."
        },
        409: {"description": "The project already has a dataset of that name."},
        413: {"description": "The upload is larger than the limit."},
    },
)
def import_nnunet(
    session: SessionDep,
    project: ProjectDep,
    store: StoreDep,
    limits: LimitsDep,
    response: Response,
    file: Annotated[
        UploadFile,
        File(
            description="A zip of the dataset folder: dataset.json, imagesTr/{case}_{XXXX}.png, "
            "labelsTr/{case}.png (optional imagesTs/, left out); with or without its top folder."
        ),
    ],
    name: Annotated[
        str | None,
        Form(
            min_length=1,
            max_length=200,
            description="The new dataset's name (default: dataset.json's "
            "name, else the folder's, e.g. Dataset004_Hippocampus).",
        ),
    ] = None,
    annotator: Annotated[
        str, Form(min_length=1, max_length=200, description="Who drew labelsTr, for the batch.")
    ] = nnunet.DEFAULT_ANNOTATOR,
) -> NnUNetImportOut:
    """All or nothing: a new dataset whose label map is dataset.json's `labels` (by index), one sample per
    training case named `{case}.png` (1 channel file as it is; 3 channel files become one RGB image),
    and one accepted annotation batch of the labelsTr masks (source "nnU-Net v2 raw import").
    `file_ending` .png, .bmp or .tif; or .nii.gz / .nii (one channel): each case a volume whose slices
    are the samples, its label volume their masks. Other 3D formats are a 422. The upload limits apply
    as for any upload."""
    (upload,) = read_uploads([file])
    done = nnunet.import_dataset(session, store, project, upload, limits, name=name, annotator=annotator)
    response.headers["Location"] = f"/v1/datasets/{done.dataset.id}"
    return NnUNetImportOut(
        dataset=_out(session, done.dataset),
        batch_id=done.batch.id,
        samples=done.samples,
        masks=int(done.batch.report["accepted"]),
        test_images_left_out=done.layout.test_images,
        ignored_files=list(done.layout.ignored),
    )


@router.get("", summary="List datasets", response_model=Page[DatasetOut])
def list_datasets(
    session: SessionDep, project: ProjectDep, limit: Limit = 50, offset: Offset = 0, name: str | None = None
) -> Page[DatasetOut]:
    """The project's datasets, newest first, as a page."""
    rows, total = datasets.list_datasets(session, project, name=name, limit=limit, offset=offset)
    return Page(items=[_out(session, d) for d in rows], total=total, limit=limit, offset=offset)


@router.get("/{dataset_id}", summary="Get a dataset", response_model=DatasetOut)
def get_dataset(dataset: DatasetDep, session: SessionDep) -> DatasetOut:
    """One dataset with its label map and sample count."""
    return _out(session, dataset)


@router.patch(
    "/{dataset_id}",
    summary="Rename a dataset",
    response_model=DatasetOut,
    responses={409: {"description": "The project already has a dataset of that name."}},
)
def rename_dataset(body: DatasetRename, dataset: DatasetDep, session: SessionDep) -> DatasetOut:
    """A new name (the label map, samples and results stay)."""
    return _out(session, cleanup.rename_dataset(session, dataset, body.name))


@router.delete(
    "/{dataset_id}/samples/{sample_id}",
    status_code=204,
    summary="Delete a sample (its image and every mask of it)",
    responses={409: {"description": "A job trained on the sample: delete the job first."}},
)
def delete_sample(
    dataset: DatasetDep, sample_id: uuid.UUID, session: SessionDep, store: StoreDep
) -> Response:
    """The image, every annotation batch's mask of it, rows and objects; 409 naming the jobs that trained
    on it."""
    cleanup.delete_sample(session, store, images.get_sample(session, dataset, sample_id))
    return Response(status_code=204)


@router.delete(
    "/{dataset_id}", status_code=204, summary="Delete a dataset with its samples, masks and results"
)
def delete_dataset(
    dataset: DatasetDep, session: SessionDep, store: StoreDep, recent: RecentModelsDep
) -> Response:
    """Delete the dataset with its samples, batches, jobs, models and stored objects."""
    datasets.delete_dataset(session, store, dataset)
    recent.forget(lambda model: model.dataset_id == dataset.id)  # its models are no longer served
    return Response(status_code=204)


@router.post(
    "/{dataset_id}/images",
    dependencies=[Multipart],
    status_code=201,
    summary="Upload images (multipart files or one zip); all or nothing",
    response_model=ImageUploadOut,
    responses={
        422: {"description": "Some files are not valid images; `invalid_files` names each with the reason."},
        413: {"description": "The upload is larger than the limit."},
    },
)
def upload_images(
    dataset: DatasetDep,
    session: SessionDep,
    store: StoreDep,
    limits: LimitsDep,
    files: Annotated[
        list[UploadFile],
        File(
            description="Image files (PNG, JPEG, TIFF, BMP or single-frame DICOM), NIfTI volumes (.nii.gz, "
            ".nii), or one zip."
        ),
    ],
) -> ImageUploadOut:
    """Add images (files or one zip) as samples, all or nothing: unreadable files and duplicate names are
    refused with a reason per file. A NIfTI volume is kept as sent and its slices along the first axis
    become samples `<volume>_s012.png` (8-bit grey, one grey scale per volume; `slices` in its row).
    """
    outcomes = images.upload_images(session, store, dataset, read_uploads(files), limits)
    return ImageUploadOut(
        created=sum(o.status == "created" for o in outcomes),
        duplicates=sum(o.status == "duplicate" for o in outcomes),
        files=[FileOutcome.model_validate(o) for o in outcomes],
    )


@router.get("/{dataset_id}/volumes", summary="List NIfTI volumes", response_model=Page[VolumeOut])
def list_volumes(
    dataset: DatasetDep, session: SessionDep, limit: Limit = 50, offset: Offset = 0
) -> Page[VolumeOut]:
    """The dataset's image volumes in name order: shape, spacing, how many slices (samples) each is."""
    rows = volumes.list_volumes(session, dataset)
    items = [VolumeOut.model_validate(v) for v in rows[offset : offset + limit]]
    return Page(items=items, total=len(rows), limit=limit, offset=offset)


@router.get("/{dataset_id}/volumes/{volume_id}", summary="Get a NIfTI volume", response_model=VolumeOut)
def get_volume(dataset: DatasetDep, volume_id: uuid.UUID, session: SessionDep) -> VolumeOut:
    """One image volume: file, shape, spacing, slices."""
    return VolumeOut.model_validate(volumes.get_volume(session, dataset.id, volume_id))


@router.delete(
    "/{dataset_id}/volumes/{volume_id}",
    status_code=204,
    summary="Delete a volume (its file, its slices and every mask of them)",
    responses={409: {"description": "A job trained on its slices: delete the job first."}},
)
def delete_volume(
    dataset: DatasetDep, volume_id: uuid.UUID, session: SessionDep, store: StoreDep
) -> Response:
    """The volume as uploaded, its slices' samples and every mask of them; 409 naming the jobs that
    trained on them."""
    cleanup.delete_volume(session, store, volumes.get_volume(session, dataset.id, volume_id))
    return Response(status_code=204)


@router.get("/{dataset_id}/samples", summary="List samples", response_model=Page[SampleOut])
def list_samples(
    dataset: DatasetDep,
    session: SessionDep,
    limit: Limit = 50,
    offset: Offset = 0,
    file_name: str | None = None,
) -> Page[SampleOut]:
    """The dataset's samples in file-name order, as a page."""
    rows, total = images.list_samples(session, dataset, file_name=file_name, limit=limit, offset=offset)
    return Page(items=[SampleOut.model_validate(s) for s in rows], total=total, limit=limit, offset=offset)


@router.get(
    "/{dataset_id}/annotators",
    summary="The dataset's annotators: uploads, and the latest job's verdict on each",
    response_model=Page[DatasetAnnotatorOut],
)
def list_annotators(
    dataset: DatasetDep, session: SessionDep, limit: Limit = 50, offset: Offset = 0
) -> Page[DatasetAnnotatorOut]:
    """Every annotator who uploaded masks to the dataset: batches, masks, last upload, and their row of the
    annotator report of the dataset's latest succeeded job (offset, edge alignment, suspect, verdict;
    docs/ANNOTATORS.md). Suspects first."""
    rows = reports.dataset_annotators(session, dataset)
    items = [
        DatasetAnnotatorOut(
            annotator=r.annotator,
            n_batches=r.n_batches,
            n_masks=r.n_masks,
            last_upload_at=r.last_upload_at,
            job_id=r.job_id,
            report=None if r.report is None else AnnotatorOut.model_validate(r.report),
        )
        for r in rows[offset : offset + limit]
    ]
    return Page(items=items, total=len(rows), limit=limit, offset=offset)


@router.get("/{dataset_id}/samples/{sample_id}", summary="Get a sample", response_model=SampleOut)
def get_sample(dataset: DatasetDep, sample_id: uuid.UUID, session: SessionDep) -> SampleOut:
    """One sample: file name, size, channels."""
    return SampleOut.model_validate(images.get_sample(session, dataset, sample_id))


@router.get(
    "/{dataset_id}/samples/{sample_id}/image",
    summary="The stored image (PNG)",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
def get_sample_image(
    dataset: DatasetDep, sample_id: uuid.UUID, session: SessionDep, store: StoreDep
) -> Response:
    """The sample's image as uploaded."""
    sample = images.get_sample(session, dataset, sample_id)
    return Response(read_object(store, sample.object_key), media_type="image/png")
