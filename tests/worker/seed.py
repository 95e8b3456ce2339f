"""Put a synthetic dataset, one accepted annotation batch and a queued job straight into the database
and the object store (the worker's inputs), bypassing the HTTP upload path."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from app.db.models import (
    Annotation,
    AnnotationBatch,
    BatchStatus,
    Dataset,
    JobStatus,
    Project,
    Sample,
    TrainingJob,
)
from app.db.session import session_scope
from app.storage import keys
from app.storage.base import ObjectStore
from gtcorrect.config import AugmentConfig, GStageConfig, NetConfig, TrainConfig, TStageConfig
from tests.gtcorrect.synthetic import PLUMBING
from tests.worker.synthetic import SyntheticSet, png_bytes


def tiny_config(seed: int = 0, *, rounds: int = 2, t_epochs: int = 2) -> TrainConfig:
    """A G-T config that trains in seconds on 2 CPU cores at 32 px."""
    return TrainConfig(
        method="gt",
        seed=seed,
        image_size=32,
        batch_size=4,
        net=NetConfig(channels=(8, 16, 32), strides=(2, 2), num_res_units=1),
        augment=AugmentConfig(enabled=False),
        g=GStageConfig(warmup_epochs=2, rounds_max=rounds, epochs_per_round=1, max_flagged_share=1.0),
        t=TStageConfig(
            epochs=t_epochs, early_learning="fixed", early_learning_fixed_epochs=1, rampup_epochs=1
        ),
        quality=PLUMBING,
    )


@dataclass(frozen=True)
class Seeded:
    project_id: uuid.UUID
    dataset_id: uuid.UUID
    batch_id: uuid.UUID
    job_id: uuid.UUID
    sample_ids: list[uuid.UUID]  # aligned with the SyntheticSet
    annotation_ids: list[uuid.UUID]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def seed_job(
    factory: sessionmaker[Session], store: ObjectStore, data: SyntheticSet, config: TrainConfig
) -> Seeded:
    with session_scope(factory) as session:
        project = Project(name=f"p-{uuid.uuid4().hex[:8]}")
        session.add(project)
        session.flush()
        dataset = Dataset(project_id=project.id, name="synthetic", label_map={"0": "background", "1": "disc"})
        session.add(dataset)
        session.flush()
        batch = AnnotationBatch(dataset_id=dataset.id, annotator="vendor-a", status=BatchStatus.accepted)
        session.add(batch)
        session.flush()
        sample_ids, annotation_ids = [], []
        for name, image, mask in zip(data.names, data.images, data.given, strict=True):
            image_png, mask_png = png_bytes(image), png_bytes(mask)
            sample = Sample(
                id=uuid.uuid4(),
                dataset_id=dataset.id,
                sha256=_sha(image_png),
                file_name=name,
                height=image.shape[0],
                width=image.shape[1],
                channels=3,
                object_key="",
            )
            sample.object_key = keys.sample(project.id, dataset.id, sample.id)
            annotation = Annotation(
                id=uuid.uuid4(), sample_id=sample.id, batch_id=batch.id, sha256=_sha(mask_png), object_key=""
            )
            annotation.object_key = keys.annotation(project.id, dataset.id, annotation.id)
            store.put(sample.object_key, image_png, "image/png")
            store.put(annotation.object_key, mask_png, "image/png")
            session.add(sample)
            session.flush()
            session.add(annotation)
            sample_ids.append(sample.id)
            annotation_ids.append(annotation.id)
        job = TrainingJob(
            project_id=project.id,
            dataset_id=dataset.id,
            batch_ids={"batches": [str(batch.id)]},
            config=config.to_dict(),
            status=JobStatus.queued,
            progress={"phase": "queued"},
        )
        session.add(job)
        session.flush()
        return Seeded(project.id, dataset.id, batch.id, job.id, sample_ids, annotation_ids)
