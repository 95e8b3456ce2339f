"""Deterministic object keys, built here and nowhere else (docs/ARCHITECTURE.md, "Object keys").

A re-run of the same job writes the same keys, so it overwrites instead of duplicating.
"""

from __future__ import annotations

import uuid


def dataset_prefix(project: uuid.UUID, dataset: uuid.UUID) -> str:
    return f"{project}/datasets/{dataset}/"


def sample(project: uuid.UUID, dataset: uuid.UUID, sample_id: uuid.UUID) -> str:
    return f"{dataset_prefix(project, dataset)}samples/{sample_id}.png"


def volume(project: uuid.UUID, dataset: uuid.UUID, volume_id: uuid.UUID, file_name: str) -> str:
    """An image volume as uploaded; its ending (``.nii.gz`` or ``.nii``) kept, so it reads as sent."""
    ending = ".nii.gz" if file_name.lower().endswith(".gz") else ".nii"
    return f"{dataset_prefix(project, dataset)}volumes/{volume_id}{ending}"


def annotation(project: uuid.UUID, dataset: uuid.UUID, annotation_id: uuid.UUID) -> str:
    return f"{dataset_prefix(project, dataset)}annotations/{annotation_id}.png"


def job_prefix(project: uuid.UUID, job: uuid.UUID) -> str:
    return f"{project}/jobs/{job}/"


def checkpoint(project: uuid.UUID, job: uuid.UUID, epoch: int) -> str:
    return f"{job_prefix(project, job)}checkpoints/{epoch:05d}.pt"


def corrected(project: uuid.UUID, job: uuid.UUID, sample_id: uuid.UUID) -> str:
    return f"{job_prefix(project, job)}corrected/{sample_id}.png"


def plot(project: uuid.UUID, job: uuid.UUID, name: str) -> str:
    return f"{job_prefix(project, job)}plots/{name}.png"


def model(project: uuid.UUID, model_id: uuid.UUID) -> str:
    return f"{project}/models/{model_id}.pt"
