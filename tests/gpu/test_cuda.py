"""The engine on CUDA (run by bench/gpu.sh on a GPU machine; skipped where there is no CUDA): fit and
resume there, checkpoints and models that move between CUDA and the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gtcorrect.checkpoint import Checkpoint
from gtcorrect.errors import TrainingStopped
from gtcorrect.inference import Predictor
from gtcorrect.model import ModelBundle
from gtcorrect.trainer import fit
from gtcorrect.types import Progress
from tests.gtcorrect.synthetic import make_noisy_set
from tests.gtcorrect.test_fit import tiny

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def test_fit_on_cuda_resumes_there_and_on_the_cpu() -> None:
    data = make_noisy_set(24, 32, alpha=0.5, seed=2).training_data()
    config = tiny(epochs=4)
    full = fit(config, data, device="cuda")
    assert full.model.state_dict and all(t.device.type == "cpu" for t in full.model.state_dict.values())
    saved: list[Checkpoint] = []
    events: list[Progress] = []
    with pytest.raises(TrainingStopped):
        fit(
            config,
            data,
            device="cuda",
            callbacks=[events.append],
            should_stop=lambda: len(events) >= 4,
            checkpoint=saved.append,
        )
    checkpoint = Checkpoint.from_bytes(saved[-1].to_bytes())
    on_cuda = fit(config, data, device="cuda", resume=checkpoint)
    on_cpu = fit(config, data, device="cpu", resume=checkpoint)
    for result in (on_cuda, on_cpu):
        assert len(result.history) == len(full.history) and result.rounds
        # cuDNN kernels are not bit-exact: the flags may differ a little, not the run's shape.
        assert (result.flagged == full.flagged).mean() >= 0.8


def test_a_model_trained_on_cuda_segments_the_same_on_the_cpu() -> None:
    data = make_noisy_set(16, 32, alpha=0.0, seed=3).training_data()
    result = fit(tiny("noisy", epochs=3), data, device="cuda")
    bundle = ModelBundle.from_bytes(result.model.to_bytes())
    images = [np.asarray(img.transpose(1, 2, 0) * 255, dtype=np.uint8) for img in data.images[:4]]
    cuda = Predictor(bundle, "cuda").predict(images)
    cpu = Predictor(bundle, "cpu").predict(images)
    for a, b in zip(cuda, cpu, strict=True):  # bfloat16 on CUDA, float32 on the CPU
        assert (a.mask == b.mask).mean() >= 0.97


def test_cuda_uses_bfloat16_where_it_can() -> None:
    data = make_noisy_set(16, 32, alpha=0.0, seed=3).training_data()
    for amp in ("auto", "off"):  # mixed precision (the default on CUDA) and float32 both train
        result = fit(tiny("noisy", epochs=2, amp=amp), data, device="cuda")
        assert result.history and all(np.isfinite(v) for p in result.history for v in p.losses.values())
    predictor = Predictor(result.model, "cuda")
    seen: list[torch.dtype] = []
    conv = next(m for m in predictor.network.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    predictor.predict([np.zeros((40, 40, 3), dtype=np.uint8)])
    assert seen == [torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32]
