"""Small pure helpers of the worker (no services)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from gtcorrect.types import json_safe
from worker.push import full_size_mask
from worker.runner import choose_device


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"loss": float("nan"), "dice": np.float32(0.5)}, {"loss": None, "dice": 0.5}),
        ([np.int64(3), (1.0, float("inf"))], [3, [1.0, None]]),
        ({1: np.bool_(True)}, {"1": True}),
    ],
)
def test_json_safe_gives_plain_json_postgres_accepts(value: Any, expected: Any) -> None:
    assert json_safe(value) == expected


def test_explicit_cuda_without_cuda_is_a_clear_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert choose_device("auto") == "cpu"
    with pytest.raises(RuntimeError, match="GTC_DEVICE='cuda:1' but CUDA is not available"):
        choose_device("cuda:1")


def test_corrected_masks_return_to_the_original_size() -> None:
    hard = np.zeros((32, 32), dtype=np.int64)
    hard[8:24, 8:24] = 1
    full = full_size_mask(hard, (40, 48), 2)
    assert full.shape == (40, 48) and full[20, 24] == 1 and full[0, 0] == 0
    soft = np.stack([1.0 - hard, hard]).astype(np.float32)  # (K, S, S) soft targets
    assert np.array_equal(full_size_mask(soft, (40, 48), 2), full)
