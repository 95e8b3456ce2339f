"""The engine CLI end to end on tiny synthetic PNG folders (gtcorrect.cli)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gtcorrect.cli import REPORT_FIELDS, main
from gtcorrect.config import NetConfig, TrainConfig
from gtcorrect.data import read_image
from gtcorrect.inference import Predictor
from gtcorrect.model import ModelBundle
from gtcorrect.networks import build_network
from gtcorrect.types import LabelMap
from tests.gtcorrect.synthetic import plumbing_config

TINY = NetConfig(channels=(4, 8), strides=(2,), num_res_units=0)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _png(path: Path, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    path.write_bytes(buf.getvalue())


def _folders(tmp_path: Path, n: int = 8, prefix: str = "") -> tuple[Path, Path]:
    """n grey images (36 x 44) with a bright disc and 0/255 masks of the disc."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:36, :44]
    for i in range(n):
        cy, cx, r = rng.uniform(12, 24), rng.uniform(14, 30), rng.uniform(5, 10)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        img = (rng.normal(60, 10, (36, 44)) + 120 * disc).clip(0, 255).astype(np.uint8)
        _png(images / f"img{i}.png", img)
        _png(masks / f"{prefix}img{i}.png", (disc * 255).astype(np.uint8))
    return images, masks


def test_simulate_noise_writes_noisy_copy_and_truth(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, masks = _folders(tmp_path, prefix="seg_")
    out = tmp_path / "noisy"
    argv = ["simulate-noise", "--masks", str(masks), "--out", str(out), "--alpha", "0.5"]
    assert main([*argv, "--preset", "strong", "--seed", "3", "--mask-prefix", "seg_"]) == 0
    truth = json.loads((out / "truth.json").read_text())
    assert truth["n_masks"] == 8 and truth["n_corrupted"] == 4 and truth["spec"]["alpha"] == 0.5
    for entry in truth["masks"]:
        noisy = np.asarray(Image.open(out / entry["file"]))
        clean = np.asarray(Image.open(masks / entry["file"]))
        assert set(np.unique(noisy).tolist()) <= {0, 255}
        assert (not np.array_equal(noisy, clean)) == entry["flag"]
    assert "corrupted 4 of 8 masks" in capsys.readouterr().out


def test_bad_input_returns_2_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, masks = _folders(tmp_path)
    (masks / "img0.png").write_bytes(b"garbage")
    assert main(["simulate-noise", "--masks", str(masks), "--out", str(tmp_path / "o")]) == 2
    assert "img0.png: not a readable image" in capsys.readouterr().err
    assert main(["predict", "--model", str(tmp_path / "nope.pt"), "--images", str(masks), "--out", "x"]) == 2
    assert "nope.pt: cannot read the model file" in capsys.readouterr().err
    (tmp_path / "ok").mkdir()
    images, masks = _folders(tmp_path / "ok")
    config = tmp_path / "config.json"
    train = ["train", "--images", str(images), "--masks", str(masks), "--out", str(tmp_path / "t")]
    for bad, field in (({"t": {"epochs": 10**9}}, "t.epochs"), ({"lr": "abc"}, "lr"), ({"seed": -1}, "seed")):
        config.write_text(json.dumps(bad))
        assert main([*train, "--config", str(config)]) == 2
        assert f"error: {field}: " in capsys.readouterr().err
    assert main([*train, "--size", "16"]) == 2
    assert "error: image_size: must be a multiple of 16" in capsys.readouterr().err


def test_predict_writes_masks_at_original_size(tmp_path: Path) -> None:
    images, _ = _folders(tmp_path, n=3)
    net = build_network(TINY, 3, 2)
    bundle = ModelBundle(TrainConfig(image_size=32, net=TINY), LabelMap(), 3, net.state_dict())
    bundle.save(str(tmp_path / "model.pt"))
    out = tmp_path / "pred"
    assert (
        main(["predict", "--model", str(tmp_path / "model.pt"), "--images", str(images), "--out", str(out)])
        == 0
    )
    for i in range(3):
        mask = np.asarray(Image.open(out / f"img{i}.png"))
        assert mask.shape == (36, 44) and set(np.unique(mask).tolist()) <= {0, 255}
    summary = json.loads((out / "predictions.json").read_text())
    assert [s["id"] for s in summary] == ["img0", "img1", "img2"]
    assert all(sum(s["class_fractions"]) == pytest.approx(1.0) for s in summary)
    # --flips: the masks of the flip-averaged prediction, as the engine's Predictor makes them.
    flipped = tmp_path / "pred-flips"
    args = ["predict", "--model", str(tmp_path / "model.pt"), "--images", str(images), "--out", str(flipped)]
    assert main([*args, "--flips"]) == 0
    image = read_image(images / "img0.png")
    expected = Predictor(bundle).predict([image], flips=True)[0]
    np.testing.assert_array_equal(np.asarray(Image.open(flipped / "img0.png")) > 0, expected.mask > 0)
    confidence = json.loads((flipped / "predictions.json").read_text())[0]["mean_confidence"]
    assert confidence == pytest.approx(expected.mean_confidence)
    assert confidence != pytest.approx(summary[0]["mean_confidence"])  # not the plain prediction


def test_train_writes_model_report_corrections_and_plots(tmp_path: Path) -> None:
    pytest.importorskip("gtcorrect.trainer", reason="the training engine (gtcorrect.trainer) has not landed")
    images, masks = _folders(tmp_path)
    noisy = tmp_path / "noisy"
    assert main(["simulate-noise", "--masks", str(masks), "--out", str(noisy), "--alpha", "0.5"]) == 0
    # The plumbing of files, on 8 tiny masks: the paper's split flags some whatever the evidence.
    config = plumbing_config(image_size=32, t_epochs=2)
    (tmp_path / "config.json").write_text(config.to_json())
    who = tmp_path / "annotators.csv"
    who.write_text("mask,annotator\n" + "".join(f"img{i}.png,{'ab'[i % 2]}\n" for i in range(8)))
    out = tmp_path / "run"
    argv = [
        "train",
        "--images",
        str(images),
        "--masks",
        str(noisy),
        "--out",
        str(out),
        "--annotators",
        str(who),
    ]
    # The preset first, the config file on top, then the flags.
    assert main([*argv, "--preset", "quick", "--config", str(tmp_path / "config.json"), "--seed", "1"]) == 0
    bundle = ModelBundle.load(str(out / "model.pt"))
    assert bundle.in_channels == 1 and bundle.image_size == 32 and bundle.config.seed == 1
    rows = list(csv.DictReader(io.StringIO((out / "noise_report.csv").read_text())))
    assert [r["file_name"] for r in rows] == [f"img{i}.png" for i in range(8)]
    assert all(0.0 <= float(r["clean_probability"]) <= 1.0 for r in rows)
    assert {r["flagged"] for r in rows} <= {"true", "false"} and all("." in r["file_name"] for r in rows)
    report = json.loads((out / "noise_report.json").read_text())
    assert set(report[0]) == {*REPORT_FIELDS}
    flagged = {r["file_name"].removesuffix(".png") for r in report if r["flagged"]}
    written = {p.stem for p in (out / "corrected").iterdir()}
    assert flagged and written == flagged  # hard correction: every flagged image gets a corrected mask
    for p in (out / "corrected").iterdir():
        assert np.asarray(Image.open(p)).shape == (36, 44)
    # The annotator report, per annotator, from the same run (the annotator check ran on the CLI too).
    assert [a["annotator"] for a in json.loads((out / "annotators.json").read_text())] == ["a", "b"]
    plots = sorted(p.name for p in (out / "plots").iterdir())
    assert "gmm_round_0.png" in plots
    assert (out / "plots" / "gmm_round_0.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mask,who\nimg0.png,a\n", "needs the columns mask,annotator"),
        ("mask,annotator\nimg0.png,a\nimg0,b\n", "line 3: mask 'img0' is named twice"),
        ("mask,annotator\nimg0.png,a\nnope.png,b\n", "no mask named 'nope'"),
        ("mask,annotator\nimg0.png,a\n", "no annotator for mask 'img1'"),
        ("mask,annotator\nimg0.png,\nimg1.png,b\n", "line 2: mask 'img0.png' has no annotator"),
    ],
)
def test_annotators_file_errors_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    from gtcorrect.cli_commands import read_annotators

    path = tmp_path / "a.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_annotators(path, ["img0", "img1"])


def test_python_dash_m_entry_point() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gtcorrect", "simulate-noise", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0 and "--preset" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "gtcorrect"], capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "required: command" in proc.stderr
