"""/v1/jobs/{id}/...: results of a succeeded job (noise report, corrected masks, GMM plots)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse

from app.api.deps import JobDep, Limit, Offset, SessionDep, StoreDep
from app.schemas.common import Page
from app.schemas.results import AnnotatorOut, GmmRoundOut, NoiseFlagOut, PlotOut, VolumeVerdictOut
from app.services import reports, volumes

router = APIRouter(prefix="/v1/jobs/{job_id}", tags=["results"])
_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"description": "The job has not succeeded; results exist only for succeeded jobs."}
}
_PNG: dict[int | str, dict[str, Any]] = {200: {"content": {"image/png": {}}}}


@router.get(
    "/noise-report",
    summary="Which annotations look wrong: clean probability per sample (JSON page or CSV download)",
    response_model=Page[NoiseFlagOut],
    responses={**_CONFLICT, 200: {"content": {"text/csv": {}}}},
)
def noise_report(
    job: JobDep,
    session: SessionDep,
    limit: Limit = 50,
    offset: Offset = 0,
    flagged: bool | None = None,
    annotator: Annotated[
        str | None, Query(max_length=200, description="Only this annotator's masks.")
    ] = None,
    batch_id: Annotated[uuid.UUID | None, Query(description="Only masks of this annotation batch.")] = None,
    decided: Annotated[
        bool | None, Query(description="Only samples with (or without) a review decision.")
    ] = None,
    sort: Annotated[
        str, Query(description="clean_probability, loss, file_name or round_decided; '-' = desc")
    ] = "clean_probability",
    format: Literal["json", "csv"] = "json",  # the public query parameter name
) -> Page[NoiseFlagOut] | Response:
    """Per training mask: clean probability, flag, score, the round that decided it, whether a correction is
    proposed and how many pixels it changes, the annotator and the review decision; JSON pages or CSV, with
    filters.
    """
    only = reports.ReportFilter(flagged, annotator, batch_id, decided)
    if format == "csv":
        rows, _ = reports.noise_report(session, job, only=only, sort=sort, limit=None)
        return Response(
            reports.report_csv(rows),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="noise-report-{job.id}.csv"'},
        )
    rows, total = reports.noise_report(session, job, only=only, sort=sort, limit=limit, offset=offset)
    items = [NoiseFlagOut.model_validate(r, from_attributes=True) for r in rows]
    return Page(items=items, total=total, limit=limit, offset=offset)


@router.get(
    "/corrected-masks.zip",
    summary="All corrected masks as one zip (streamed)",
    response_class=StreamingResponse,
    responses={**_CONFLICT, 200: {"content": {"application/zip": {}}}},
)
def corrected_masks_zip(job: JobDep, session: SessionDep, store: StoreDep) -> StreamingResponse:
    """Every proposed corrected mask of the job as PNGs in one zip (withheld corrections are not in it; see
    `quality.corrections`).
    """
    entries = reports.corrected_entries(session, job)  # read now: the session closes before streaming
    return StreamingResponse(
        reports.stream_zip(store, entries),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="corrected-masks-{job.id}.zip"'},
    )


@router.get(
    "/review-task.xml",
    summary="The flagged masks as a CVAT task annotation file, corrections as pre-annotations",
    response_class=Response,
    responses={**_CONFLICT, 200: {"content": {"application/xml": {}}}},
)
def review_task(job: JobDep, session: SessionDep, store: StoreDep) -> Response:
    """CVAT for images 1.1 annotations of every flagged sample: its proposed correction, or the given mask
    where none is proposed, one `<mask>` per class. Create a CVAT task with those images, upload this file
    ("CVAT 1.1"), fix the masks there, export the task as "CVAT for images 1.1" and upload that file back
    as an annotation batch."""
    return Response(
        reports.review_task(session, store, job),
        media_type="application/xml",
        headers={"Content-Disposition": f'attachment; filename="review-task-{job.id}.xml"'},
    )


@router.get(
    "/review-task.json",
    summary="The flagged masks as Label Studio tasks, correction and given mask as predictions",
    response_class=Response,
    responses={**_CONFLICT, 200: {"content": {"application/json": {}}}},
)
def review_task_label_studio(job: JobDep, session: SessionDep, store: StoreDep) -> Response:
    """Label Studio tasks, one per flagged sample (`data.image`: its file name; point it at where Label
    Studio serves the image), with two brush predictions: the proposed correction (`model_version` the
    model id, `score` the noise probability) and the mask as given (`model_version` "given mask").
    Labeling config: `<Image name="image" value="$image"/>` and `<BrushLabels name="label"
    toName="image">` with a `<Label>` per class. Import it, submit the right mask of each task, export the
    project as "JSON" and upload that file back as an annotation batch."""
    return Response(
        reports.review_task_label_studio(session, store, job),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="review-task-{job.id}.json"'},
    )


@router.get(
    "/corrected-masks/{sample_id}",
    summary="One corrected mask (PNG, class indices)",
    response_class=Response,
    responses={**_CONFLICT, **_PNG},
)
def corrected_mask(job: JobDep, sample_id: uuid.UUID, session: SessionDep, store: StoreDep) -> Response:
    """The proposed corrected mask of one sample (PNG, class indices, at the image's own size)."""
    return Response(reports.corrected_mask(session, store, job, sample_id), media_type="image/png")


@router.get(
    "/volumes",
    summary="The verdict per NIfTI volume: flagged when any slice is, and which slices look wrong",
    response_model=Page[VolumeVerdictOut],
    responses=_CONFLICT,
)
def volume_verdicts(
    job: JobDep, session: SessionDep, limit: Limit = 50, offset: Offset = 0
) -> Page[VolumeVerdictOut]:
    """One row per volume the job trained on (empty for a job on 2D images), most doubtful first: its
    slices' highest noise probability, the flagged slices and those with a proposed correction. The
    slices' own rows are in the noise report (samples `<volume>_s012.png`)."""
    rows = volumes.volume_verdicts(session, job)
    items = [VolumeVerdictOut.model_validate(r) for r in rows[offset : offset + limit]]
    return Page(items=items, total=len(rows), limit=limit, offset=offset)


@router.get(
    "/volumes/{volume_id}/masks.nii.gz",
    summary="The job's masks of one volume as a NIfTI label volume (corrections applied)",
    response_class=Response,
    responses={**_CONFLICT, 200: {"content": {"application/gzip": {}}}},
)
def volume_masks(job: JobDep, volume_id: uuid.UUID, session: SessionDep, store: StoreDep) -> Response:
    """A label volume in the image volume's space (its affine, header, shape; voxels uint8 class
    indices): each slice's proposed correction where the job proposes one, the mask it trained on
    otherwise. Withheld corrections are not applied (see `quality.corrections`)."""
    volume = volumes.get_volume(session, job.dataset_id, volume_id)
    body = volumes.corrected_volume(session, store, job, volume)
    name = f"{volume.name}.nii.gz"
    return Response(
        body, media_type=volumes.GZIP, headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )


@router.get(
    "/given-masks/{sample_id}",
    summary="The mask the job trained on for one sample (PNG, class indices)",
    response_class=Response,
    responses={**_CONFLICT, **_PNG},
)
def given_mask(job: JobDep, sample_id: uuid.UUID, session: SessionDep, store: StoreDep) -> Response:
    """The mask the job trained on for one sample (PNG, class indices)."""
    return Response(reports.given_mask(session, store, job, sample_id), media_type="image/png")


@router.get(
    "/overlays/{sample_id}.png",
    summary="The image with the given mask (amber) and the proposed correction's outline (cyan)",
    response_class=Response,
    responses={**_CONFLICT, **_PNG},
)
def overlay(
    job: JobDep,
    sample_id: uuid.UUID,
    session: SessionDep,
    store: StoreDep,
    show: Literal["both", "given", "proposed"] = "both",
) -> Response:
    """The image with the given mask (amber) and the proposed correction (cyan) drawn on it, for review."""
    return Response(reports.overlay_png(session, store, job, sample_id, show), media_type="image/png")


@router.get(
    "/annotators",
    summary="Per annotator: masks, flags, and whether their outlines are consistently wider or narrower",
    response_model=Page[AnnotatorOut],
    responses={**_CONFLICT, 200: {"content": {"text/csv": {}}}},
)
def annotators(
    job: JobDep, session: SessionDep, format: Literal["json", "csv"] = "json"
) -> Page[AnnotatorOut] | Response:
    """Per annotator of the job's masks: masks, flagged, Dice with the model, outline offset (wider or
    narrower than the others, in pixels), edge alignment, and a verdict in words (docs/ANNOTATORS.md);
    JSON page or CSV."""
    rows = [AnnotatorOut.model_validate(r) for r in reports.annotator_stats(session, job)]
    if format == "csv":
        return Response(
            reports.rows_csv(rows, list(AnnotatorOut.model_fields)),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="annotators-{job.id}.csv"'},
        )
    return Page(items=rows, total=len(rows), limit=max(len(rows), 1), offset=0)


@router.get(
    "/gmm-rounds",
    summary="Every GMM fit of the job as data: separation, means, weights, flagged count per round",
    response_model=Page[GmmRoundOut],
    responses=_CONFLICT,
)
def gmm_round_rows(job: JobDep, session: SessionDep) -> Page[GmmRoundOut]:
    """The job's GMM splits, one row per round: separation, component weights and means, masks flagged and
    changed.
    """
    rows = [GmmRoundOut.model_validate(r) for r in reports.gmm_rounds(session, job)]
    return Page(items=rows, total=len(rows), limit=max(len(rows), 1), offset=0)


@router.get(
    "/plots/gmm-rounds",
    summary="The GMM fit of each round (G-stage rounds, then the final split)",
    response_model=Page[PlotOut],
    responses=_CONFLICT,
)
def gmm_rounds(job: JobDep, store: StoreDep) -> Page[PlotOut]:
    """The job's GMM round plots: one PNG per round with its URL (a page like every list, all rounds)."""
    rows = [
        PlotOut(round=k, url=f"/v1/jobs/{job.id}/plots/gmm-rounds/{k}.png")
        for k in reports.plot_rounds(store, job)
    ]
    return Page(items=rows, total=len(rows), limit=max(len(rows), 1), offset=0)


@router.get(
    "/plots/annotators.png",
    summary="The annotator report as a plot: each annotator's outline offset, suspects in red (PNG)",
    response_class=Response,
    responses={**_CONFLICT, **_PNG},
)
def annotators_png(job: JobDep, session: SessionDep) -> Response:
    """One bar per annotator: the mean offset of their outlines from the others' (+ wider, - narrower, in
    pixels of the original images) with its spread over their masks; suspects of a bias in red."""
    return Response(reports.annotator_plot_png(session, job), media_type="image/png")


@router.get(
    "/plots/gmm-rounds/{round_k}.png",
    summary="One GMM round plot (PNG)",
    response_class=Response,
    responses={**_CONFLICT, **_PNG},
)
def gmm_round_png(job: JobDep, round_k: int, store: StoreDep) -> Response:
    """The plot of one GMM round: the score histogram with the two fitted components and the threshold."""
    return Response(reports.plot_png(store, job, round_k), media_type="image/png")
