"""NIfTI volumes end to end over HTTP: ``gtcorrect client run`` on a folder of image volumes and a folder
of label volumes against ``gtcorrect serve`` (its own worker trains slice-wise), then the label volumes
it downloads and a segmentation of a new volume, checked with nibabel: the image's affine and shape,
class indices of the label map."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.e2e.flow import e2e_config
from tests.support.processes import client_cli, embedded_serve
from tests.support.volumes import AFFINE, nifti, volume

pytestmark = pytest.mark.integration

SHAPE = (8, 28, 24)  # 8 slices of 28 x 24 per volume
N_VOLUMES = 6
CLI_TIMEOUT_S = 600


def test_client_run_on_nifti_volumes_against_the_embedded_server(tmp_path: Path) -> None:
    images, masks = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    masks.mkdir()
    given = {}
    for i in range(N_VOLUMES):
        image, labels = volume(i, SHAPE)
        if i == 0:  # one reader missed the posterior part on half the slices
            labels[:4][labels[:4] == 2] = 0
        given[f"case_{i:03d}"] = labels
        nib.save(nifti(image), images / f"case_{i:03d}.nii.gz")
        nib.save(nifti(labels), masks / f"case_{i:03d}.nii.gz")
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps(e2e_config(0)))
    with embedded_serve(tmp_path) as served:
        env = {**served.env, "GTC_URL": served.base_url, "GTC_API_KEY": served.key}

        cli = client_cli(env, tmp_path, CLI_TIMEOUT_S)

        out = tmp_path / "out"
        run = cli(
            "run",
            "--images", images,
            "--masks", masks,
            "--name", "hippocampus",
            "--labels", "background,anterior,posterior",
            "--config", config,
            "--out", out,
        )  # fmt: skip
        assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
        verdicts = json.loads((out / "volumes.json").read_text())
        assert sorted(v["volume"] for v in verdicts) == sorted(given)
        assert all(v["slices"] == SHAPE[0] for v in verdicts)
        by_name = {v["volume"]: v for v in verdicts}
        assert {0, 1, 2, 3} <= set(by_name["case_000"]["flagged_slices"])  # the reader's misses found
        flagged = sum(v["flagged"] for v in verdicts)
        assert f"{flagged} of {N_VOLUMES} volumes flagged" in run.stdout, run.stdout
        rows = json.loads((out / "report.json").read_text())
        assert len(rows) == N_VOLUMES * SHAPE[0]
        for verdict in verdicts:
            written = nib.load(out / "volumes" / f"{verdict['volume']}.nii.gz")
            np.testing.assert_allclose(written.affine, AFFINE)
            assert written.shape == SHAPE and written.get_data_dtype() == np.uint8
            data = np.asarray(written.dataobj)
            # Handed back as given, but on the slices with a proposed correction.
            kept = [k for k in range(SHAPE[0]) if k not in verdict["corrected_slices"]]
            np.testing.assert_array_equal(data[kept], given[verdict["volume"]][kept])
            assert set(np.unique(data).tolist()) <= {0, 1, 2}

        new = tmp_path / "new"
        new.mkdir()
        nib.save(nifti(volume(9, SHAPE)[0]), new / "case_new.nii.gz")
        segmented = cli("segment", new, "--out", tmp_path / "seg", "--dataset", "hippocampus")
        assert segmented.returncode == 0, segmented.stderr
        answer = nib.load(tmp_path / "seg" / "case_new.nii.gz")
        np.testing.assert_allclose(answer.affine, AFFINE)
        assert answer.shape == SHAPE and set(np.unique(np.asarray(answer.dataobj)).tolist()) <= {0, 1, 2}
    assert served.exit_code == 0, f"gtcorrect serve exited with {served.exit_code}"
