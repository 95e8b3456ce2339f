"""The slice-wise volume figures of the benchmark (``bench.common.per_volume_dice``, ``bench.hippocampus``)
on small arrays whose answer is known by hand."""

from __future__ import annotations

import numpy as np
import pytest

from bench.common import per_class_dice, per_volume_dice
from bench.hippocampus import volume_of

NAMES = ("background", "anterior", "posterior")


def test_a_volume_is_one_dice_per_label_over_all_its_slices() -> None:
    truth = np.zeros((3, 4, 4), dtype=np.int64)
    truth[0, :2, :2] = 1  # 4 px of label 1 in slice 0
    truth[1, :1, :4] = 1  # 4 px in slice 1
    truth[2, 2:, 2:] = 2  # label 2 in the second volume only
    pred = truth.copy()
    pred[1] = 0  # slice 1 missed entirely: the first volume's label 1 finds 4 of its 8 px
    groups = np.array([0, 0, 1])
    got = per_volume_dice(pred, truth, groups, NAMES)
    assert got["anterior"] == pytest.approx(2 * 4 / (4 + 8))  # pooled, not the mean of 1.0 and 0.0
    assert got["posterior"] == pytest.approx(1.0)  # only the volume that has it counts
    per_slice = per_class_dice(pred, truth, NAMES)
    assert per_slice["anterior"] == pytest.approx(0.5)  # the 2D figure averages the slices instead


def test_slices_map_back_to_their_volumes() -> None:
    ids = ["hippocampus_003_s000", "hippocampus_003_s001", "hippocampus_001_s000"]
    assert volume_of(ids).tolist() == [0, 0, 1]


def test_the_label_table_shows_each_seed_per_label_over_images_and_volumes() -> None:
    from bench.report import class_table

    def rec(seed: int, a: float) -> dict[str, object]:
        spec = {"regime": "strong", "alpha": 0.5, "method": "gt", "variant": "default", "seed": seed}
        return {
            "spec": spec,
            "test_per_class": {"anterior": a, "posterior": 0.5},
            "test_per_volume": {"anterior": a + 0.1, "posterior": 0.6},
        }

    text = class_table({"a": rec(0, 0.7), "b": rec(1, 0.8)})
    assert "anterior (images) | anterior (volumes) | posterior (images) | posterior (volumes)" in text
    assert "| 0.700 / 0.800 | 0.800 / 0.900 | 0.500 / 0.500 | 0.600 / 0.600 |" in text
    assert class_table({"a": {"spec": rec(0, 0.7)["spec"], "test_per_class": {"polyp": 0.8}}}) == ""
