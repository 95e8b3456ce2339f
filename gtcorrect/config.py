"""Training configuration: frozen dataclasses that round-trip to JSON.

The service stores ``TrainConfig.to_dict()`` with every job, so every field must be a JSON scalar,
a tuple of scalars or a nested config. Defaults follow ``ALGORITHM.md``; every choice that the paper
(Gao et al., Med Biol Eng Comput 2024, doi 10.1007/s11517-024-03170-4) does not state is a field here.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

Method = Literal["gt", "noisy", "clean", "gmm_select", "coteaching"]
# "ce+dice"/"ce"/"dice": the paper-style per-image loss (reference). "confident": disagreement between
# the given mask and the network's own confident prediction. "excess": disagreement beyond what the
# network's own uncertainty explains (difficulty-normalised, see gtcorrect.losses). "trajectory":
# "ce+dice" averaged over the last GStageConfig.trajectory_epochs epochs (see gtcorrect.gstage).
SampleLoss = Literal["ce+dice", "ce", "dice", "confident", "excess", "trajectory"]
ScoreTransform = Literal["none", "log"]
ScoreNet = Literal["ema", "student"]
EarlyLearning = Literal["curve", "fixed", "none"]
Correction = Literal["hard", "soft", "none"]
KeepModel = Literal["teacher", "student"]

METHODS: tuple[str, ...] = typing.get_args(Method)


@dataclass(frozen=True)
class NetConfig:
    """MONAI ``UNet`` (2-D). ``channels``/``strides`` as in ``monai.networks.nets.UNet``."""

    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    strides: tuple[int, ...] = (2, 2, 2, 2)
    num_res_units: int = 2
    dropout: float = 0.0


@dataclass(frozen=True)
class AugmentConfig:
    """Train-time augmentation; never applied when scoring samples or at inference."""

    enabled: bool = True
    flip: bool = True
    affine_degrees: float = 10.0
    affine_scale: float = 0.1
    intensity: float = 0.1  # max relative brightness/contrast jitter


@dataclass(frozen=True)
class GStageConfig:
    """G stage: GMM split of the per-sample loss, iterated as positive feedback (ALGORITHM.md)."""

    warmup_epochs: int = 10
    # "excess", not the paper's "ce+dice": on Kvasir-SEG (strong mixed, alpha 0.5, 700 images) it ranks
    # noisy masks better (BENCHMARKS.md, sections evidence-strong and full40-strong05); variant
    # "paper" of bench/plan.py keeps the reference configuration.
    sample_loss: SampleLoss = "excess"
    rounds_max: int = 5
    epochs_per_round: int = 5
    feedback: bool = True  # False: one GMM fit after warm-up (ablation)
    tau: float = 0.5  # clean set C = {w_i > tau}
    stop_change_frac: float = 0.01  # stop when fewer than this fraction of images change side
    gmm_max_iter: int = 10
    gmm_tol: float = 1e-2
    gmm_reg_covar: float = 5e-4
    histogram_bins: int = 50
    trajectory_epochs: int = 5  # sample_loss="trajectory": epochs averaged (scored every epoch)
    confident_floor: float = 0.8  # sample_loss="confident": min. max-probability of a counted pixel
    # 2 = the paper/DivideMix split. More components model several noise types (e.g. shifted masks far
    # above dilated ones); clean is then the lowest-mean component and noisy all the others.
    # 0: choose 2, 3 or 4 components by BIC.
    gmm_components: int = 2
    # "log": fit the GMM to log(normalised score + 0.01). Noisy scores are often spread over several
    # modes (one per corruption type) far above a tight clean mode; the log compresses the noisy side
    # so two components fit clean vs noisy instead of splitting the noisy modes; on raw scores the GMM
    # fits a tight clean mode and a wide noisy one and underestimates the noise rate. "none": the paper.
    score_transform: ScoreTransform = "log"
    # "ema": score with the exponential moving average of the student's weights (decay t.ema_decay),
    # kept from the first step; it goes on as the T-stage teacher. One network's ranking of the masks
    # jumps from epoch to epoch; the average's does not (with t.final_split: +2 points of recognition
    # accuracy and AUROC on Kvasir-SEG, BENCHMARKS.md section full40-ema). "student": the paper's
    # choice; the teacher then starts as a copy of the student when the G stage ends.
    score_net: ScoreNet = "ema"
    # Scores beyond Tukey's far fences (Q1 - k IQR, Q3 + k IQR) are clipped to them before the GMM, so
    # that one odd mask (a tiny object, a mask eroded to a few pixels) cannot sit alone at one end and
    # take a component of its own; scores inside the fences keep DivideMix's min-max scaling. 0: no
    # clipping (DivideMix).
    robust_iqr: float = 3.0
    # A split whose smaller side (mixture weight or flagged share) is below this share of the masks
    # is no evidence of two groups: it changes nothing (the flags of the round before stand).
    min_component_weight: float = 0.03


@dataclass(frozen=True)
class TStageConfig:
    """T stage: mean teacher, early-learning switch, confident correcting (ALGORITHM.md)."""

    epochs: int = 20
    ema_decay: float = 0.99
    flagged_fraction: float = 0.5  # share of each batch drawn from the flagged set
    consistency_noise_std: float = 0.1
    consistency_noise_clip: float = 0.2
    lambda_max: float = 0.1  # sigmoid ramp-up target of lambda(t)
    rampup_epochs: int = 5
    flagged_weight: float = 5.0
    early_learning: EarlyLearning = "curve"
    early_learning_fixed_epochs: int = 5  # fallback, and the switch for early_learning="fixed"
    early_learning_slope_frac: float = 0.1  # ADELE: correct once slope < 10 % of the initial slope
    correction: Correction = "hard"
    confidence_floor: float = 0.8
    threshold_ema: float = 0.0  # 0: per-class thresholds from the whole flagged set each epoch
    elr: bool = False
    elr_beta: float = 0.7
    elr_lambda: float = 3.0
    keep: KeepModel = "teacher"
    # After the last epoch, score every image with the teacher and split once more (a last GMM round,
    # reported like the others); the corrections are then made for that final flagged set. The
    # teacher has trained for the whole T stage by then and ranks the noisy masks better than the
    # network that ended the G stage (BENCHMARKS.md). False: the G stage's split is final.
    final_split: bool = True
    # The final split is kept only if its mixture has two modes: two equal Gaussians are bimodal when
    # their means lie more than 2 sd apart, i.e. separation S > sqrt(2). On clean masks the teacher's
    # scores can form one skewed mode that a GMM still cuts in two (on Kvasir-SEG at alpha 0 one seed
    # gave S 0.28 and flagged 99 % of the masks); the G stage's split then stands.
    final_split_min_separation: float = 1.41


@dataclass(frozen=True)
class QualityConfig:
    """How a job judges itself after training (``gtcorrect.quality``): a held-back validation split, a
    self-test on corrupted copies of trusted masks, and the gate that decides whether corrected masks
    are proposed at all."""

    # False: propose the correction of every flagged training mask whatever the evidence (the paper's
    # behaviour; for experiments and for tests of the plumbing on tiny data). The quality is still reported.
    gate: bool = True
    val_fraction: float = 0.1  # share of the samples held back from training (never trained on)
    min_val_samples: int = 8  # fewer held-back samples than this: no validation split (a warning)
    min_samples: int = 50  # fewer training samples: too few to judge noise (a warning; gate closed)
    min_val_dice: float = 0.5  # validation Dice (against the given masks) below this: weak network
    # Evidence of noise needs a bimodal final split: S >= this (two equal Gaussians are bimodal when
    # S > sqrt(2)) and each side at least g.min_component_weight of the masks.
    min_separation: float = 1.41
    calibration_samples: int = 64  # trusted masks corrupted for the self-test
    # gtcorrect.noise presets the self-test corrupts copies with (all mixed types); the headline figures
    # are those of the preset whose copies are about as wrong as the flagged masks look to the network.
    calibration_regimes: tuple[str, ...] = ("moderate", "strong")
    min_calibration_recall: float = 0.5  # below this: a warning that many wrong masks may be missed
    # The gate hands corrections back only while the job's own mixture says at most this share of the
    # flagged masks is clean (mean clean probability of the flagged masks).
    max_false_flag_rate: float = 0.1
    max_flagged_fraction: float = 0.5  # more masks flagged than this: a warning
    bootstrap: int = 100  # resamples for the noise-rate interval


@dataclass(frozen=True)
class CoteachingConfig:
    forget_rate: float | None = None  # None: the G stage's estimated noise rate is not known, use 0.3
    num_gradual: int = 10


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``gtcorrect.fit`` needs besides the data. Round-trips through ``to_dict``/``from_dict``."""

    method: Method = "gt"
    seed: int = 0
    image_size: int = 128
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.0
    epochs: int = 40  # total epochs for the baselines; G-T uses warm-up + rounds + T epochs
    num_workers: int = 0
    net: NetConfig = field(default_factory=NetConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    g: GStageConfig = field(default_factory=GStageConfig)
    t: TStageConfig = field(default_factory=TStageConfig)
    coteaching: CoteachingConfig = field(default_factory=CoteachingConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}.")
        if self.image_size < 16 or self.image_size % 16:
            raise ValueError(f"image_size must be a multiple of 16 and >= 16, got {self.image_size}.")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2, got {self.batch_size}.")
        if not 0.0 < self.g.tau < 1.0:
            raise ValueError(f"g.tau must lie in (0, 1), got {self.g.tau}.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return _from_dict(cls, data)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        return cls.from_dict(json.loads(text))


_T = TypeVar("_T")


def _from_dict(cls: type[_T], data: dict[str, Any]) -> _T:
    """Build a (nested) frozen dataclass from plain JSON data, rejecting unknown keys by name."""
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__} expects an object, got {type(data).__name__}.")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}.")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint) and isinstance(hint, type):
            kwargs[name] = _from_dict(hint, value)
        elif _is_tuple(hint):
            if not isinstance(value, list | tuple):
                raise ValueError(f"{cls.__name__}.{name} expects a list, got {value!r}.")
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def _is_tuple(hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin is tuple:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(typing.get_origin(a) is tuple for a in typing.get_args(hint))
    return False
