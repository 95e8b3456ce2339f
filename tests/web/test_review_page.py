"""From a finished job to a curated nnU-Net dataset in the browser alone, on real Kvasir-SEG images.

``gtcorrect serve`` runs as a user starts it (embedded mode, its own worker). The test uploads 16
Kvasir-SEG images with masks from a careless annotator (6 of them grown by 9 px), trains a small job,
and then, in Debian's chromium: signs in with the API key, decides masks with the keyboard, keeps every
unflagged mask in bulk, creates the curated version and downloads its nnU-Net export from the page.
What the page did is checked over the API. Screenshots land in tests/web/screenshots.
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, expect
from scipy import ndimage

from tests.e2e.flow import e2e_config, wait_for_job
from tests.support.processes import embedded_serve
from tests.support.volumes import nifti_bytes, volume
from tests.web.conftest import SHOTS

pytestmark = pytest.mark.integration

KVASIR = Path(os.environ.get("GTC_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
N_IMAGES, N_SLOPPY = 16, 6


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """(base URL, API key, server log) of a fresh ``gtcorrect serve``."""
    with embedded_serve(tmp_path) as server:
        yield server.base_url, server.key, server.log


def _encoded(array: np.ndarray) -> bytes:
    """``array`` (uint8) as PNG bytes, values as they are."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _png(mask: np.ndarray) -> bytes:
    """A binary mask as a 0/255 PNG."""
    return _encoded((mask > 0).astype(np.uint8) * 255)


def _plain_job(epochs: int, batch_size: int) -> dict[str, object]:
    """A short plain-training config (no corrections, nothing held back) at 32 px."""
    return {
        "method": "noisy",
        "epochs": epochs,
        "image_size": 32,
        "batch_size": batch_size,
        "net": {"channels": [8, 16], "strides": [2], "num_res_units": 0},
        "quality": {"val_fraction": 0.0},
    }


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _annotated(
    client: httpx.Client,
    name: str,
    label_map: dict[str, str] | None,
    images: bytes,
    masks: bytes,
    annotator: str,
) -> str:
    """A dataset of the zipped ``images`` with one annotation batch of the zipped ``masks``; its id."""
    body = {"name": name} if label_map is None else {"name": name, "label_map": label_map}
    dataset = client.post("/v1/datasets", json=body).json()
    upload = client.post(f"/v1/datasets/{dataset['id']}/images", files={"files": ("i.zip", images)})
    assert upload.status_code == 201, upload.text
    batch = client.post(
        f"/v1/datasets/{dataset['id']}/annotation-batches",
        data={"annotator": annotator},
        files={"files": ("m.zip", masks)},
    )
    assert batch.status_code == 201, batch.text
    return str(dataset["id"])


def _finished_job(client: httpx.Client) -> tuple[str, str, set[str]]:
    """Upload Kvasir-SEG images and a sloppy annotator's masks, train; (job id, dataset id, sloppy)."""
    root = KVASIR / "kvasir-seg"
    names = sorted(p.name for p in (root / "images").glob("*.jpg"))[:N_IMAGES]
    assert len(names) == N_IMAGES, f"{root}: Kvasir-SEG is missing"
    sloppy = set(names[::3][:N_SLOPPY])
    masks = {}
    for name in names:
        mask = np.asarray(Image.open(root / "masks" / name).convert("L")) > 127
        if name in sloppy:
            mask = ndimage.binary_dilation(mask, iterations=9)
        masks[name.replace(".jpg", ".png")] = _png(mask)
    images = _zip({n: (root / "images" / n).read_bytes() for n in names})
    label_map = {"0": "background", "1": "polyp"}
    dataset_id = _annotated(client, "kvasir-review", label_map, images, _zip(masks), "vendor-b")
    # Small enough for 2 cores; the gate is off and the split is the paper's (it flags some masks whatever
    # the evidence) so that the page has corrections to decide on (a job this small flags and proposes
    # nothing by default, see QUALITY.md).
    config = {
        "image_size": 64,
        "batch_size": 4,
        "net": {"channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1},
        "g": {"warmup_epochs": 4, "rounds_max": 1, "epochs_per_round": 1, "detector": "loss"},
        "t": {"epochs": 2, "early_learning": "fixed", "early_learning_fixed_epochs": 1, "rampup_epochs": 1},
        "quality": {"gate": False, "val_fraction": 0.0},
    }
    job = client.post("/v1/jobs", json={"dataset_id": dataset_id, "config": config})
    assert job.status_code == 202, job.text
    done = wait_for_job(client, job.json()["id"])
    assert done["status"] == "succeeded", done
    return str(done["id"]), dataset_id, {n.replace(".jpg", ".png") for n in sloppy}


def _sign_in(page: Page, base_url: str, key: str) -> None:
    """Sign in on the login page with the API key; the job list opens."""
    page.goto(f"{base_url}/review/login")
    page.fill("#api_key", key)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base_url}/review/")


def _focused(page: Page) -> str:
    return str(page.locator(".card.focused .name").inner_text())


def test_review_to_curated_nnunet_dataset_in_the_browser(
    browser: Browser,
    served: tuple[str, str, Path],
) -> None:
    base_url, key, log = served
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        job_id, dataset_id, _ = _finished_job(client)
        report = client.get(f"/v1/jobs/{job_id}/noise-report", params={"limit": 100}).json()["items"]
    proposed = [r["file_name"] for r in report if r["correction_proposed"]]
    assert proposed, "the job proposed no correction to review"

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    page.goto(f"{base_url}/review/jobs/{job_id}")
    expect(page.locator("#api_key")).to_be_visible()  # not signed in: the sign-in form
    page.fill("#api_key", "gtc_not-a-key-at-all")
    page.click("button[type=submit]")
    expect(page.locator(".error")).to_contain_text("not valid")
    page.fill("#api_key", key)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base_url}/review/jobs/{job_id}")
    expect(page.locator(".card")).to_have_count(N_IMAGES)
    page.wait_for_function("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / "review-start.png"), full_page=True)

    # Most suspicious first; the keyboard decides and moves on.
    names = page.locator(".card .name").all_inner_texts()
    assert names[0] == report[0]["file_name"]
    decided: dict[str, str] = {}
    first = _focused(page)
    if first in proposed:
        page.keyboard.press("a")
        decided[first] = "accept_correction"
    else:
        page.keyboard.press("o")
        decided[first] = "keep_original"
    expect(page.locator(".card[data-sample] .decision").first).not_to_have_text("undecided")
    second = _focused(page)
    assert second == names[1]
    page.keyboard.press("r")
    decided[second] = "needs_reannotation"
    expect(page.locator(".card").nth(1).locator(".decision")).to_have_text("needs re-annotation")
    expect(page.locator(".card").nth(2)).to_have_class(re.compile(r"\bfocused\b"))
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    assert _focused(page) == first
    page.keyboard.press("t")  # given only
    expect(page.locator("#view")).to_have_value("given")
    page.keyboard.press("t")
    expect(page.locator("#view")).to_have_value("proposed")
    page.click("#bulk-keep")
    expect(page.locator("#status")).to_contain_text("masks decided")
    page.select_option("#filter-show", "undecided")
    page.screenshot(path=str(SHOTS / "review-undecided.png"), full_page=True)
    page.select_option("#filter-show", "all")

    # A filter that matches nothing says so instead of showing an empty grid.
    page.evaluate(
        "() => { const s = document.getElementById('filter-batch'); s.add(new Option('gone', 'gone'));"
        " s.value = 'gone'; s.dispatchEvent(new Event('change')); }"
    )
    expect(page.locator("#grid .empty")).to_contain_text("No mask matches these filters")
    page.select_option("#filter-batch", "")
    expect(page.locator(".card")).to_have_count(N_IMAGES)

    page.click("#curate")
    version = page.locator("#version-list li[data-batch]").last
    expect(version).to_be_visible()
    batch_id = version.get_attribute("data-batch")
    assert batch_id
    page.wait_for_function("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    page.screenshot(path=str(SHOTS / "review-curated.png"), full_page=True)
    # After a reload the version and its exports are still listed (they come from the server).
    page.reload()
    expect(page.locator(f"#version-list li[data-batch='{batch_id}']")).to_be_visible()
    with page.expect_download() as download:
        page.locator(f"#version-list li[data-batch='{batch_id}'] a", has_text="nnU-Net").click()
    archive = zipfile.ZipFile(download.value.path())
    page.close()

    # What the page did, over the API.
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        decisions = client.get(f"/v1/jobs/{job_id}/decisions", params={"limit": 100}).json()["items"]
        by_name = {d["file_name"]: d["decision"] for d in decisions}
        for name, decision in decided.items():
            assert by_name[name] == decision
        unflagged = {r["file_name"] for r in report if not r["flagged"]} - set(decided)
        assert all(by_name[n] == "keep_original" for n in unflagged)
        batch = client.get(f"/v1/datasets/{dataset_id}/annotation-batches/{batch_id}").json()
    assert batch["kind"] == "curated" and batch["provenance"]["job_id"] == job_id
    kept = {f["sample"] for f in batch["report"]["files"]}
    assert second not in kept and len(kept) == N_IMAGES - 1  # undecided masks keep theirs
    (meta_name,) = [n for n in archive.namelist() if n.endswith("/dataset.json")]
    meta = json.loads(archive.read(meta_name))
    assert meta["numTraining"] == len(kept) and meta["labels"] == {"background": 0, "polyp": 1}
    assert len([n for n in archive.namelist() if "/labelsTr/" in n]) == len(kept)
    # Offline: every request of the page went to the API itself. The key went once, in the sign-in
    # form's body: never in a URL, never in the server's log.
    assert not [u for u in urls if not u.startswith((base_url, "data:", "blob:"))]
    assert not [u for u in urls if key in u]
    assert log.read_text().count(key) == 1  # printed once, at the first start


N_MANY = 300


def _many(client: httpx.Client) -> tuple[str, str]:
    """300 small images with masks and a plain one-epoch job on them, started; (dataset id, job id)."""
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:48, :48]
    images, masks = {}, {}
    for i in range(N_MANY):
        cy, cx, r = rng.uniform(14, 34, 2).tolist() + [rng.uniform(6, 12)]
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        grey = (rng.normal(80, 15, (48, 48)) + 120 * disc).clip(0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(grey).save(buffer, format="PNG")
        images[f"m{i:03d}.png"], masks[f"m{i:03d}.png"] = buffer.getvalue(), _png(disc)
    dataset_id = _annotated(client, "many", None, _zip(images), _zip(masks), "vendor-a")
    config = {
        "method": "noisy",
        "epochs": 12,
        "image_size": 32,
        "batch_size": 16,
        "net": {"channels": [8, 16], "strides": [2], "num_res_units": 0},
    }
    job = client.post("/v1/jobs", json={"dataset_id": dataset_id, "preset": "quick", "config": config})
    assert job.status_code == 202, job.text
    return dataset_id, str(job.json()["id"])


def test_the_job_list_follows_a_running_job_and_a_report_of_300_masks_has_pages(
    browser: Browser, served: tuple[str, str, Path]
) -> None:
    base_url, key, _ = served
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    _sign_in(page, base_url, key)
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        _, job_id = _many(client)
        page.goto(f"{base_url}/review/")
        row = page.locator(f"tr[data-job='{job_id}']")
        expect(row.locator("code")).to_have_text(job_id)  # the whole id, which the API and CLI take
        assert row.locator(".status").inner_text() in ("queued", "running")  # what the page first showed
        expect(row.locator(".setup")).to_contain_text("preset quick")
        # The list refreshes itself: the epochs go by, then the job succeeds, without a reload.
        expect(row.locator(".progress")).to_contain_text("epoch", timeout=120_000)
        SHOTS.mkdir(exist_ok=True)
        page.screenshot(path=str(SHOTS / "jobs-running.png"), full_page=True)
        expect(row.locator(".status")).to_have_text("succeeded", timeout=240_000)
        expect(row.locator(".validation")).not_to_have_text("–")
        assert wait_for_job(client, job_id)["status"] == "succeeded"
    page.screenshot(path=str(SHOTS / "jobs-done.png"), full_page=True)

    row.locator("a").click()
    page.wait_for_url(f"{base_url}/review/jobs/{job_id}")
    expect(page.locator(".card")).to_have_count(48)
    expect(page.locator("#page-label")).to_have_text("page 1 of 7")
    page.screenshot(path=str(SHOTS / "review-page-1.png"))
    first_page = page.locator(".card .name").all_inner_texts()
    for _ in range(47):
        page.keyboard.press("j")
    page.keyboard.press("j")  # past the last card of the page: the next page
    expect(page.locator("#page-label")).to_have_text("page 2 of 7")
    second_page = page.locator(".card .name").all_inner_texts()
    assert not set(first_page) & set(second_page) and _focused(page) == second_page[0]
    page.click("#page-next")
    page.keyboard.press("p")
    expect(page.locator("#page-label")).to_have_text("page 2 of 7")
    while page.locator("#page-next").is_enabled():
        page.click("#page-next")
    expect(page.locator("#page-label")).to_have_text("page 7 of 7")
    expect(page.locator(".card")).to_have_count(N_MANY - 6 * 48)
    page.close()


def _two_structures(client: httpx.Client, n: int = 24, wrong: int = 6) -> tuple[str, set[str]]:
    """Images with a disc and a square, masks with both, the square drawn 10 px off in ``wrong`` of them;
    a short plain job on them, finished. (job id, the file names whose square is wrong)."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[:48, :48]
    images, masks, off = {}, {}, set()
    for i in range(n):
        cy, cx = rng.uniform(12, 20, 2)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= 36
        square = (yy >= 28) & (yy < 40) & (xx >= 26) & (xx < 38)
        grey = (rng.normal(60, 10, (48, 48)) + 100 * disc + 160 * square).clip(0, 255).astype(np.uint8)
        label = np.zeros((48, 48), np.uint8)
        label[disc] = 1
        name = f"s{i:02d}.png"
        drawn = np.roll(square, -10, axis=1) if i < wrong else square
        off |= {name} if i < wrong else set()
        label[drawn & ~disc] = 2
        images[name], masks[name] = _encoded(grey), _encoded(label)
    label_map = {"0": "background", "1": "disc", "2": "square"}
    dataset_id = _annotated(client, "two-structures", label_map, _zip(images), _zip(masks), "vendor-c")
    job = client.post("/v1/jobs", json={"dataset_id": dataset_id, "config": _plain_job(15, 8)})
    assert job.status_code == 202, job.text
    done = wait_for_job(client, job.json()["id"])
    assert done["status"] == "succeeded", done
    return str(done["id"]), off


def test_a_card_names_the_structure_that_looks_wrong(browser: Browser, served: tuple[str, str, Path]) -> None:
    base_url, key, _ = served
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        job_id, off = _two_structures(client)
        report = client.get(f"/v1/jobs/{job_id}/noise-report", params={"limit": 100}).json()["items"]
    # The square drawn 10 px off agrees least with what the network learnt from the other 18.
    worst = {r["file_name"]: r["worst_class"] for r in report}
    assert all(worst[name] == "square" for name in off), worst
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    _sign_in(page, base_url, key)
    page.goto(f"{base_url}/review/jobs/{job_id}")
    expect(page.locator(".card")).to_have_count(len(report))
    first = next(r for r in report if r["file_name"] in off)
    card = page.locator(f".card[data-sample='{first['sample_id']}']")
    expected = f"least agreement: square (Dice {first['worst_class_dice']:.2f})"
    expect(card.locator(".structure")).to_have_text(expected)
    assert "disc" in str(card.locator(".structure").get_attribute("title"))
    # Cards below the fold load their images lazily: wait for the ones on screen.
    page.wait_for_function(
        "Array.from(document.images).filter(i => i.getBoundingClientRect().top < innerHeight)"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / "review-structures.png"))


def test_a_volume_is_reviewed_slice_by_slice_with_a_slider(
    browser: Browser, served: tuple[str, str, Path]
) -> None:
    """Six NIfTI volumes, one reader's label volume missing the posterior part on four slices; a short job;
    the page shows each volume with a slider over its slices, and jumps to the flagged ones."""
    base_url, key, _ = served
    shape = (8, 28, 24)
    images, labels = {}, {}
    for i in range(6):
        image, label = volume(i, shape)
        if i == 0:
            label[:4][label[:4] == 2] = 0
        images[f"case_{i:03d}.nii.gz"], labels[f"case_{i:03d}.nii.gz"] = (
            nifti_bytes(image),
            nifti_bytes(label),
        )
    label_map = {"0": "background", "1": "anterior", "2": "posterior"}
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        dataset_id = _annotated(client, "volumes", label_map, _zip(images), _zip(labels), "reader-1")
        config = e2e_config(0)
        config["quality"]["gate"] = True  # what a user gets: 48 slices are too few to correct any
        job = client.post("/v1/jobs", json={"dataset_id": dataset_id, "config": config})
        assert job.status_code == 202, job.text
        done = wait_for_job(client, job.json()["id"])
        assert done["status"] == "succeeded", done
        verdicts = {v["volume"]: v for v in client.get(f"/v1/jobs/{done['id']}/volumes").json()["items"]}
        report = client.get(f"/v1/jobs/{done['id']}/noise-report", params={"limit": 100}).json()["items"]
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    _sign_in(page, base_url, key)
    page.goto(f"{base_url}/review/jobs/{done['id']}")
    expect(page.locator("figure.volume")).to_have_count(6)
    # A flagged slice's card says why no correction was proposed: the job withheld every one.
    assert done["quality"]["corrections"]["status"] == "withheld"
    row = next(r for r in report if r["flagged"] and not r["held_out"])
    assert row["withheld_because"] == "the job withheld every correction"
    expect(page.locator(f".card[data-sample='{row['sample_id']}'] .proposal")).to_have_text(
        "flagged, no correction proposed: the job withheld every correction"
    )
    case = page.locator("figure.volume[data-volume='case_000']")
    ids = verdicts["case_000"]["slice_sample_ids"]
    # It opens on its most doubtful slice; a flagged slice's button and the slider move it.
    first = verdicts["case_000"]["flagged_slices"][0]
    expect(case.locator("output")).to_have_text(str(first))
    case.locator("button.jump[data-slice='2']").click()
    expect(case.locator("img")).to_have_attribute("src", re.compile(f"/overlays/{ids[2]}.png"))
    expect(case.locator(".slice-state")).to_contain_text("flagged")
    case.locator("input[type=range]").fill("6")
    expect(case.locator("output")).to_have_text("6")
    expect(case.locator("img")).to_have_attribute("src", re.compile(f"/overlays/{ids[6]}.png"))
    page.select_option("#view", "given")
    expect(case.locator("img")).to_have_attribute("src", re.compile(r"show=given"))
    case.locator("button.jump[data-slice='2']").click()
    page.wait_for_function(
        "Array.from(document.querySelectorAll('figure.volume img'))"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / "review-volumes.png"))


def test_the_page_says_what_the_job_made_of_its_input(
    browser: Browser, served: tuple[str, str, Path]
) -> None:
    """Two readers outline the same discs, one 3 px wide; a job judges their consensus and learns from
    every reader's mask: its review page says so, with the readers' weights."""
    base_url, key, _ = served
    yy, xx = np.mgrid[:48, :48]
    images, exact, wide = {}, {}, {}
    for i in range(12):
        disc = (yy - 20 - i % 5) ** 2 + (xx - 24) ** 2 <= (6 + i % 4) ** 2
        grey = (np.random.default_rng(i).normal(60, 10, (48, 48)) + 120 * disc).clip(0, 255)
        name = f"d{i:02d}.png"
        images[name] = _encoded(grey.astype(np.uint8))
        exact[name], wide[name] = _png(disc), _png(ndimage.binary_dilation(disc, iterations=3))
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        dataset_id = _annotated(client, "two-readers", None, _zip(images), _zip(exact), "reader-exact")
        second = client.post(
            f"/v1/datasets/{dataset_id}/annotation-batches",
            data={"annotator": "reader-wide"},
            files={"files": ("m.zip", _zip(wide))},
        )
        assert second.status_code == 201, second.text
        config = _plain_job(3, 4)
        body = {"dataset_id": dataset_id, "consensus": "staple", "train_on": "every_reader", "config": config}
        job = client.post("/v1/jobs", json=body)
        assert job.status_code == 202, job.text
        done = wait_for_job(client, job.json()["id"])
    assert done["status"] == "succeeded" and done["train_on"] == "every_reader", done
    [note] = done["notes"]
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    _sign_in(page, base_url, key)
    page.goto(f"{base_url}/review/jobs/{done['id']}")
    expect(page.locator(".quality .notes li")).to_have_text(note)
    assert "reader-exact" in note and "reader-wide" in note and "judges the consensus" in note
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / "review-notes.png"))
