"""Learning from several readers' masks per image (``TrainingData.readers``), the given masks judged."""

from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import torch

from gtcorrect import fit
from gtcorrect.gt import final_corrections
from gtcorrect.loop import Run
from gtcorrect.types import ReaderMasks, TrainingData
from tests.gtcorrect.synthetic import PLUMBING, make_noisy_set
from tests.gtcorrect.test_fit import _one_thread, tiny  # noqa: F401 (_one_thread: autouse)


def _panel() -> tuple[TrainingData, np.ndarray]:
    """Four images; image 0 has readers A, B (weights 3, 1), image 1 readers C, D, E (1, 1, 2), images 2
    and 3 none. Reader mask m covers the top 4 (m + 1) rows, so each is told apart by its pixels."""
    data = make_noisy_set(4, 32, alpha=0.0, seed=3).training_data()
    owner = np.array([0, 0, 1, 1, 1])
    masks = np.zeros((5, 32, 32), dtype=np.uint8)
    for m in range(5):
        masks[m, : 4 * (m + 1)] = 1
    weights = np.array([3.0, 1.0, 1.0, 1.0, 2.0])
    readers = ReaderMasks(masks=masks, owner=owner, weights=weights)
    return TrainingData(data.images, data.masks, data.ids, readers=readers), masks


def _drawn(run: Run, masks: np.ndarray, image: int) -> int:
    target = run.targets[image].numpy()
    return next(m for m in range(len(masks)) if np.array_equal(target, masks[m]))


def test_each_epoch_learns_an_image_from_one_reader_in_proportion_to_their_weight() -> None:
    data, masks = _panel()
    run = Run(tiny("noisy"), data, torch.device("cpu"), [], None, None)
    first: Counter[int] = Counter()
    second: Counter[int] = Counter()
    for epoch in range(600):
        run.start_epoch(epoch)
        first[_drawn(run, masks, 0)] += 1
        second[_drawn(run, masks, 1)] += 1
        # images without readers are learnt from their given masks; the given masks are never touched
        assert torch.equal(run.targets[2:], run.masks[2:])
        assert np.array_equal(run.masks.numpy(), data.masks)
    assert set(first) == {0, 1} and set(second) == {2, 3, 4}
    assert first[0] / 600 == pytest.approx(0.75, abs=0.06)
    assert [second[m] / 600 for m in (2, 3, 4)] == pytest.approx([0.25, 0.25, 0.5], abs=0.06)
    # one draw per epoch, whatever the stream (every net of the epoch learns the same masks): a resumed
    # run repeats it
    run.start_epoch(7)
    drawn = run.targets.clone()
    run.start_epoch(3, stream=1)
    run.start_epoch(7, stream=2)
    assert torch.equal(run.targets, drawn)


def test_an_image_given_its_own_target_keeps_it_over_the_readers() -> None:
    data, masks = _panel()
    run = Run(tiny("noisy"), data, torch.device("cpu"), [], None, None)
    own = np.ones((32, 32), dtype=np.int64)
    run.retarget({0: own})
    for epoch in range(20):
        run.start_epoch(epoch)
        assert np.array_equal(run.targets[0].numpy(), own)
        assert _drawn(run, masks, 1) in (2, 3, 4)


def test_the_final_corrections_start_from_the_judged_masks_not_a_drawn_reader() -> None:
    """The same network corrects the same given masks alike, with or without readers' masks drawn."""
    data, _ = _panel()
    corrected = []
    for readers in (data.readers, None):
        plain = TrainingData(data.images, data.masks, data.ids, readers=readers)
        run = Run(tiny(), plain, torch.device("cpu"), [], None, None)
        run.add_net("teacher", optimizer=False)  # seeded: the same weights both times
        run.start_epoch(9)
        assert torch.equal(run.targets[:2], run.masks[:2]) == (readers is None)
        corrected.append(final_corrections(run, "teacher", np.array([0, 1, 2])))
    for i in (0, 1, 2):
        np.testing.assert_array_equal(corrected[0][i], corrected[1][i])


def test_training_follows_the_readers_not_the_judged_masks() -> None:
    """Given masks all empty, the readers' masks the true shapes: the network learns the shapes, while
    the result still judges (and reports on) the given masks; a quarter of the masks held back (never
    learnt from), as a job does to check itself."""
    noisy = make_noisy_set(24, 32, alpha=0.0, seed=5)
    empty = np.zeros_like(noisy.clean)
    images = noisy.training_data().images
    n = len(images)
    readers = ReaderMasks(
        masks=np.concatenate([noisy.clean, noisy.clean]).astype(np.uint8),
        owner=np.concatenate([np.arange(n), np.arange(n)]),
        weights=np.ones(2 * n),
    )
    ids = [str(i) for i in range(n)]
    config = tiny("noisy", epochs=6, quality=replace(PLUMBING, val_fraction=0.25, min_val_samples=4))
    with_readers = fit(config, TrainingData(images, empty, ids, readers=readers))
    without = fit(config, TrainingData(images, empty, ids))
    assert with_readers.predicted is not None and without.predicted is not None
    shapes = noisy.clean > 0

    def found(predicted: np.ndarray) -> float:
        return float(((predicted > 0) & shapes).sum() / shapes.sum())

    assert found(with_readers.predicted) > 0.8 and found(without.predicted) < 0.3
    assert np.all(with_readers.sample_loss > 0)  # scored against the empty masks it was given
    assert with_readers.held_out is not None and with_readers.held_out.sum() == 6


def test_a_subset_keeps_the_readers_of_its_images_renumbered() -> None:
    _, masks = _panel()
    readers = ReaderMasks(masks=masks, owner=np.array([0, 0, 1, 1, 3]), weights=np.arange(1.0, 6.0))
    part = readers.subset(np.array([3, 1, 2]))
    assert part.owner.tolist() == [1, 1, 0] and part.weights.tolist() == [3.0, 4.0, 5.0]
    np.testing.assert_array_equal(part.masks, masks[2:])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"owner": np.array([0, 4])}, "owners must be training indices 0..3"),
        ({"weights": np.array([1.0, 0.0])}, "weights must be finite and above 0"),
        ({"weights": np.array([1.0, np.nan])}, "weights must be finite and above 0"),
        ({"masks": np.full((2, 32, 32), 2, dtype=np.uint8)}, "outside the label map 0..1"),
        ({"masks": np.zeros((2, 16, 16), dtype=np.uint8)}, "reader masks must be"),
        ({"owner": np.array([0])}, "reader masks must be"),
    ],
)
def test_readers_masks_that_do_not_fit_are_refused(change: dict, message: str) -> None:
    data = make_noisy_set(4, 32, alpha=0.0, seed=3).training_data()
    base = {"masks": np.zeros((2, 32, 32), dtype=np.uint8), "owner": np.array([0, 1]), "weights": np.ones(2)}
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        TrainingData(data.images, data.masks, data.ids, readers=ReaderMasks(**{**base, **change}))
