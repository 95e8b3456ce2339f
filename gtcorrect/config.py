"""Training configuration: frozen dataclasses that round-trip to JSON.

The service stores ``TrainConfig.to_dict()`` with every job, so every field must be a JSON scalar,
a tuple of scalars or a nested config. Defaults follow ``docs/METHOD.md``; every choice that the paper
(Gao et al., Med Biol Eng Comput 2024, doi 10.1007/s11517-024-03170-4) does not state is a field here.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from gtcorrect.errors import ConfigError

Method = Literal["gt", "noisy", "clean", "gmm_select", "coteaching"]
# "ce+dice"/"ce"/"dice": the paper-style per-image loss (reference). "confident": disagreement between
# the given mask and the network's own confident prediction. "excess": disagreement beyond what the
# network's own uncertainty explains (difficulty-normalised, see gtcorrect.losses). "trajectory":
# "ce+dice" averaged over the last GStageConfig.trajectory_epochs epochs (see gtcorrect.gstage).
SampleLoss = Literal["ce+dice", "ce", "dice", "confident", "excess", "trajectory"]
ScoreTransform = Literal["none", "log"]
# "evidence": the learned verdict of gtcorrect.verdict over every evidence column (the default);
# "loss": the paper's GMM on one per-sample loss (g.sample_loss).
Detector = Literal["evidence", "loss"]
ScoreNet = Literal["ema", "student"]
EarlyLearning = Literal["curve", "fixed", "none"]
Correction = Literal["hard", "soft", "none"]
KeepModel = Literal["teacher", "student"]
AmpMode = Literal["auto", "on", "off"]
NoiseRegime = Literal[
    "moderate", "strong", "systematic", "systematic_erosion"
]  # the presets of gtcorrect.noise
CopyFamily = Literal["dilation", "erosion", "affine", "polygon", "boundary"]  # gtcorrect.noise types

METHODS: tuple[str, ...] = typing.get_args(Method)
AMP_MODES: tuple[str, ...] = typing.get_args(AmpMode)


@dataclass(frozen=True)
class NetConfig:
    """MONAI ``UNet`` (2-D). ``channels``/``strides`` as in ``monai.networks.nets.UNet``."""

    channels: tuple[int, ...] = (16, 32, 64, 128, 256)  # filters per level of the U-Net, shallow to deep
    strides: tuple[int, ...] = (2, 2, 2, 2)  # downsampling factor between levels (one fewer than channels)
    num_res_units: int = 2  # residual units per block (0: plain convolutions)
    dropout: float = 0.0  # dropout probability inside the blocks


@dataclass(frozen=True)
class AugmentConfig:
    """Train-time augmentation; never applied when scoring samples or at inference."""

    enabled: bool = True  # False: no augmentation at all
    flip: bool = True  # random horizontal and vertical flips
    affine_degrees: float = 10.0  # max random rotation, degrees
    affine_scale: float = 0.1  # max relative random zoom
    intensity: float = 0.1  # max relative brightness/contrast jitter


@dataclass(frozen=True)
class GStageConfig:
    """G stage: GMM split of the per-sample loss, iterated as positive feedback (docs/METHOD.md)."""

    warmup_epochs: int = 10  # epochs on every mask before the first GMM split (gt, gmm_select: >= 1)
    # How every split decides (each G-stage round and the final verdict). "evidence": a detector learnt
    # from the job's own corrupted copies over every evidence column, and a mixture anchored by them
    # (gtcorrect.verdict): on Kvasir-SEG (strong mixed, alpha 0.5) AUROC 0.97 against 0.87 for the
    # best single score, and 2-4 % flagged on clean masks (BENCHMARKS.md, "Recognition that
    # transfers"). "loss": the paper's GMM on g.sample_loss (the reference configuration, preset paper).
    detector: Detector = "evidence"
    # g.detector="loss": the per-sample score. "excess", not the paper's "ce+dice": on Kvasir-SEG (strong
    # mixed, alpha 0.5, 700 images) it ranks noisy masks better (BENCHMARKS.md, sections evidence-strong
    # and full40-strong05); gmm_select always splits on it.
    sample_loss: SampleLoss = "excess"
    rounds_max: int = 5  # most positive-feedback rounds (train on the clean set, split again)
    epochs_per_round: int = 5  # epochs of each feedback round
    feedback: bool = True  # False: one GMM fit after warm-up (ablation)
    tau: float = 0.5  # clean set C = {w_i > tau}
    stop_change_frac: float = 0.01  # stop when fewer than this fraction of images change side
    gmm_max_iter: int = 10  # EM iterations of each GMM fit
    gmm_tol: float = 1e-2  # EM convergence tolerance
    gmm_reg_covar: float = 5e-4  # added to the GMM variances for stability
    histogram_bins: int = 50  # bins of the score histogram stored with each round (plots)
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
    # Scores are scaled between these quantiles (q and 1 - q) and clipped before the GMM, so that one
    # odd mask (a tiny object, a mask eroded to a few pixels) cannot sit alone at one end and take a
    # component of its own. 0: DivideMix's min-max scaling. (Tukey's far fences, tried instead, kept the
    # hard-image tail of clean Kvasir-SEG masks apart: 20 % flagged at alpha 0, BENCHMARKS.md.)
    robust_quantile: float = 0.01
    # g.detector="loss": a split whose smaller side (mixture weight or flagged share) is below this
    # share of the masks, or that flags more than max_flagged_share of them (its clean component has
    # collapsed onto a few masks: BU-BIL, seed 0, 94 of 97 flagged at S 2.87), shows no two groups; the
    # masks with the highest loss are flagged instead, as many as the mixture's noisy weight clipped to
    # these bounds (the same rule whichever bound failed).
    min_component_weight: float = 0.03
    max_flagged_share: float = 0.8  # g.detector="loss": most masks one split may flag (see above)


@dataclass(frozen=True)
class TStageConfig:
    """T stage: mean teacher, early-learning switch, confident correcting (docs/METHOD.md)."""

    epochs: int = 20  # epochs of the T stage (mean teacher and correction)
    # The T stage also trains the feedback epochs the G stage left unused (its rounds stop once few masks
    # change side), so a job trains every epoch of its schedule; false: exactly ``epochs``.
    fill_schedule: bool = True
    ema_decay: float = 0.99  # the teacher's exponential moving average of the student's weights
    flagged_fraction: float = 0.5  # share of each batch drawn from the flagged set
    consistency_noise_std: float = 0.1  # Gaussian noise on the teacher's input (consistency loss)
    consistency_noise_clip: float = 0.2  # that noise is clipped to +- this
    lambda_max: float = 0.1  # sigmoid ramp-up target of lambda(t)
    rampup_epochs: int = 5  # epochs over which lambda(t) ramps up to lambda_max
    flagged_weight: float = 5.0  # weight of the flagged masks' segmentation loss
    # "curve": switch to corrected masks when the flagged Dice curve flattens; "fixed": after
    # early_learning_fixed_epochs; "none": at once.
    early_learning: EarlyLearning = "curve"
    early_learning_fixed_epochs: int = 5  # fallback, and the switch for early_learning="fixed"
    early_learning_slope_frac: float = 0.1  # ADELE: correct once slope < 10 % of the initial slope
    # "hard": confident pixels take the teacher's class; "soft": its probabilities; "none": no correction.
    correction: Correction = "hard"
    confidence_floor: float = 0.8  # a pixel is corrected only where the teacher is at least this sure
    threshold_ema: float = 0.0  # 0: per-class thresholds from the whole flagged set each epoch
    elr: bool = False  # early-learning regularisation (Liu et al. 2020) on the flagged masks
    elr_beta: float = 0.7  # ELR's moving average of the predictions
    elr_lambda: float = 3.0  # ELR's weight
    keep: KeepModel = "teacher"  # the network returned as the model
    # Bias-aware training: with the annotator of each mask known, the annotator check
    # (gtcorrect.bias) runs on the network at the end of the warm-up and again when the T stage starts;
    # a suspect annotator's masks are learnt from with their outlines moved back from then on (the given
    # masks stay what the report, the scores and the splits compare against).
    annotator_targets: bool = True


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
    # The self-test (gtcorrect.selftest): this many training masks (all, when fewer) are copied and each
    # copy corrupted once per family at the preset's lengths; the detector of g.detector="evidence"
    # learns from them, and they measure the verdict's recall. "boundary" distortions and "moderate"
    # lengths made the detector flag correct masks on Kvasir-SEG (BENCHMARKS.md, "Recognition that
    # transfers"): they are not the default.
    selftest_pool: int = 256
    selftest_families: tuple[CopyFamily, ...] = ("dilation", "erosion", "affine", "polygon")  # one copy each
    selftest_strength: NoiseRegime = "strong"  # the gtcorrect.noise preset whose lengths the copies take
    min_selftest_recall: float = 0.5  # the self-test caught fewer of its copies than this: a warning
    # The gate hands corrections back only while the verdict estimates at most this share of the
    # flagged masks to be correct (their mean clean probability).
    max_false_flag_rate: float = 0.1
    # ... and while the lower end of its noise-rate interval is at least this. Below, the flags are as likely
    # hard images as wrong masks (on clean Kvasir-SEG 4-5 % of the masks are flagged, and their "corrections"
    # would cost them 37-44 Dice points, BENCHMARKS.md): they are a list to review, not masks to replace.
    min_noise_rate: float = 0.1
    max_flagged_fraction: float = 0.7  # more masks flagged than this: a warning (half wrong happens)
    # A correction is proposed only for a mask whose noisy probability (1 - clean probability) is at least
    # this, whose expected gain is positive, and whose corrected outline follows the image's edges at
    # least as well as the given one.
    min_noise_prob: float = 0.9
    # ... and only at a size where the flags come from the masks, not from the network: of this many
    # held-back masks nearest in predicted area, no more are flagged than the job's noise rate explains
    # (a binomial test at reach_significance).
    reach_neighbours: int = 16
    reach_significance: float = 0.01  # the binomial test's level: smaller vetoes fewer corrections
    bootstrap: int = 100  # resamples for the noise-rate interval
    # With the annotator of each mask known (two or more annotators): flag a biased annotator's masks and
    # propose their outlines moved back by the annotator's offset (gtcorrect.bias).
    annotators: bool = True


@dataclass(frozen=True)
class CoteachingConfig:
    forget_rate: float | None = None  # None: the G stage's estimated noise rate is not known, use 0.3
    num_gradual: int = 10  # epochs over which the forget rate ramps up


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``gtcorrect.fit`` needs besides the data. Round-trips through ``to_dict``/``from_dict``."""

    # "gt": G-T correcting; "noisy"/"clean": plain training; "gmm_select", "coteaching": peers.
    method: Method = "gt"
    seed: int = 0  # seeds weights, batches and augmentation: same seed, same result on CPU
    image_size: int = 128  # images and masks are resized to this square side for training (pixels)
    batch_size: int = 8  # images per optimizer step
    lr: float = 1e-3  # Adam learning rate
    weight_decay: float = 0.0  # Adam's L2 weight decay
    epochs: int = 40  # total epochs for the baselines (>= 1); G-T uses warm-up + rounds + T epochs
    num_workers: int = 0  # DataLoader worker processes (0: load in the training process)
    # bfloat16 mixed precision and channels-last: "auto" (on CUDA devices with bfloat16), "on", "off"
    amp: AmpMode = "auto"
    net: NetConfig = field(default_factory=NetConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    g: GStageConfig = field(default_factory=GStageConfig)
    t: TStageConfig = field(default_factory=TStageConfig)
    coteaching: CoteachingConfig = field(default_factory=CoteachingConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError("method", f"must be one of {METHODS}, got {self.method!r}")
        if self.amp not in AMP_MODES:
            raise ConfigError("amp", f"must be one of {AMP_MODES}, got {self.amp!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any], limits: ConfigLimits | None = None) -> TrainConfig:
        """Parse and ``check_config`` JSON data; ``ConfigError`` names the first bad field."""
        config = _from_dict(cls, data)
        check_config(config, limits)
        return config

    @classmethod
    def from_json(cls, text: str, limits: ConfigLimits | None = None) -> TrainConfig:
        return cls.from_dict(json.loads(text), limits)

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> TrainConfig:
        """A config this project wrote earlier (a job row, a model file): fields that were retired since
        are dropped, so old models still load and old jobs still run; user input goes to ``from_dict``."""
        cleaned = dict(data)
        for section, names in RETIRED_FIELDS.items():
            if isinstance(cleaned.get(section), dict):
                cleaned[section] = {k: v for k, v in cleaned[section].items() if k not in names}
        return cls.from_dict(cleaned)


# Fields that existed in stored configs and no longer do (section -> names).
RETIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "g": ("robust_iqr",),
    "t": ("final_split", "final_split_min_separation"),
    "quality": (
        "min_separation",
        "calibration_samples",
        "calibration_regimes",
        "min_calibration_recall",
        "boundary",
        "min_edge_auroc",
        "min_edge_confirmation",
    ),
}

_T = TypeVar("_T")


def _from_dict(cls: type[_T], data: Any, path: str = "") -> _T:
    """Build a (nested) frozen dataclass from plain JSON data, checking every value's type against the
    field's annotation; errors are ``ConfigError`` naming the dotted field."""
    if not isinstance(data, dict):
        raise ConfigError(path.rstrip(".") or cls.__name__, f"expects an object, got {_kind(data)}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{path}{unknown[0]}", f"unknown field (known: {', '.join(sorted(names))})")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint) and isinstance(hint, type):
            kwargs[name] = _from_dict(hint, value, f"{path}{name}.")
        else:
            kwargs[name] = _typed(hint, value, f"{path}{name}")
    return cls(**kwargs)


def _kind(value: Any) -> str:
    return "null" if value is None else f"{type(value).__name__} {value!r}"[:80]


def _typed(hint: Any, value: Any, field_path: str) -> Any:
    """``value`` converted to ``hint`` (int, float, bool, str Literal, tuple[X, ...], X | None)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _typed(inner, value, field_path)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(field_path, f"expects a list, got {_kind(value)}")
        return tuple(_typed(args[0], v, f"{field_path}[{i}]") for i, v in enumerate(value))
    if origin is Literal:
        if value not in args:
            raise ConfigError(field_path, f"must be one of {', '.join(map(repr, args))}, got {_kind(value)}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(field_path, f"expects true or false, got {_kind(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(field_path, f"expects an integer, got {_kind(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ConfigError(field_path, f"expects a finite number, got {_kind(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(field_path, f"expects a string, got {_kind(value)}")
        return value
    raise TypeError(f"{field_path}: unsupported annotation {hint!r}")


@dataclass(frozen=True)
class ConfigLimits:
    """What one job may ask for, on top of the engine's own rules. The service reads these from its
    settings (``GTC_MAX_EPOCHS`` ...); ``gtcorrect train`` applies the defaults."""

    max_epochs: int = 500  # the whole schedule: G-T's warm-up + rounds + T stage, or ``epochs``
    max_image_size: int = 1024
    max_batch_size: int = 256
    max_num_workers: int = 8
    max_channels: int = 1024  # filters of one network level
    max_levels: int = 7  # network levels (len(net.channels))
    # What one training step may need (``training_memory_bytes``): values each within bounds can still
    # multiply into terabytes (1024 px x batch 256 x 512 filters x 8 residual units), which would kill the
    # worker on every attempt.
    max_train_memory_bytes: int = 40 * 1024**3


# (lowest, highest, lowest excluded) of every bounded scalar; None: unbounded on that side.
_RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    "seed": (0, 2**32 - 1, False),
    "lr": (0, 1, True),
    "weight_decay": (0, 1, False),
    "net.num_res_units": (0, 8, False),
    "net.dropout": (0, 0.9, False),
    "augment.affine_degrees": (0, 180, False),
    "augment.affine_scale": (0, 0.9, False),
    "augment.intensity": (0, 1, False),
    "g.epochs_per_round": (1, None, False),
    "g.rounds_max": (0, 100, False),
    "g.tau": (0, 1, True),
    "g.stop_change_frac": (0, 1, False),
    "g.gmm_max_iter": (1, 1000, False),
    "g.gmm_tol": (0, 1, True),
    "g.gmm_reg_covar": (0, 1, True),
    "g.histogram_bins": (2, 1000, False),
    "g.trajectory_epochs": (1, 100, False),
    "g.confident_floor": (0, 1, False),
    "g.gmm_components": (0, 4, False),
    "g.robust_quantile": (0, 0.25, False),
    "g.min_component_weight": (0, 0.49, False),
    "g.max_flagged_share": (0.5, 1, False),
    "t.epochs": (0, None, False),
    "t.ema_decay": (0, 0.99999, False),
    "t.flagged_fraction": (0, 0.99, True),
    "t.consistency_noise_std": (0, 10, False),
    "t.consistency_noise_clip": (0, 10, False),
    "t.lambda_max": (0, 100, False),
    "t.rampup_epochs": (0, None, False),
    "t.flagged_weight": (0, 1000, False),
    "t.early_learning_fixed_epochs": (0, None, False),
    "t.early_learning_slope_frac": (0, 1, False),
    "t.confidence_floor": (0, 1, False),
    "t.threshold_ema": (0, 0.99999, False),
    "t.elr_beta": (0, 0.99999, False),
    "t.elr_lambda": (0, 100, False),
    "quality.val_fraction": (0, 0.5, False),
    "quality.min_val_samples": (1, None, False),
    "quality.min_samples": (0, None, False),
    "quality.min_val_dice": (0, 1, False),
    "quality.selftest_pool": (4, 4096, False),
    "quality.min_selftest_recall": (0, 1, False),
    "quality.max_false_flag_rate": (0, 1, False),
    "quality.min_noise_rate": (0, 1, False),
    "quality.max_flagged_fraction": (0, 1, False),
    "quality.min_noise_prob": (0, 1, False),
    "quality.reach_neighbours": (1, None, False),
    "quality.reach_significance": (0, 1, False),
    "quality.bootstrap": (1, 10000, False),
    "coteaching.forget_rate": (0, 0.99, False),
    "coteaching.num_gradual": (0, None, False),
}


def _get(config: TrainConfig, path: str) -> Any:
    value: Any = config
    for part in path.split("."):
        value = getattr(value, part)
    return value


def schedule_epochs(config: TrainConfig) -> int:
    """The epochs the method trains: G-T's warm-up + every feedback round + T stage (with
    ``t.fill_schedule`` the T stage trains the epochs of rounds the G stage stops before; without it, this
    is the longest G-T trains), else ``epochs``."""
    g = config.g
    if config.method == "gt":
        return g.warmup_epochs + (g.rounds_max * g.epochs_per_round if g.feedback else 0) + config.t.epochs
    return config.epochs


def check_config(config: TrainConfig, limits: ConfigLimits | None = None) -> None:
    """Raise ``ConfigError`` (naming the field) unless ``config`` can be trained: the engine's own rules
    and, when given, an operator's ``limits``. The one validator of the API, the worker and the CLI."""
    _from_dict(type(config), config.to_dict())  # every field's type, also of configs built in code
    for path, (lo, hi, lo_open) in _RANGES.items():
        value = _get(config, path)
        if value is None:
            continue
        if lo is not None and (value <= lo if lo_open else value < lo):
            raise ConfigError(path, f"must be {'>' if lo_open else '>='} {lo:g}, got {value!r}")
        if hi is not None and value > hi:
            raise ConfigError(path, f"must be <= {hi:g}, got {value!r}")
    net = config.net
    if len(net.channels) < 2:
        raise ConfigError("net.channels", f"needs at least 2 levels, got {list(net.channels)}")
    if len(net.strides) != len(net.channels) - 1:
        raise ConfigError(
            "net.strides",
            f"needs one stride per level after the first ({len(net.channels) - 1}), got {list(net.strides)}",
        )
    if any(c < 1 for c in net.channels):
        raise ConfigError("net.channels", f"every level needs >= 1 filter, got {list(net.channels)}")
    if any(not 1 <= s <= 4 for s in net.strides):
        raise ConfigError("net.strides", f"every stride must lie in 1..4, got {list(net.strides)}")
    down = math.prod(net.strides)
    size = config.image_size
    if size % down or size // down < 2:
        raise ConfigError(
            "image_size",
            f"must be a multiple of {down} (the product of net.strides) and at least {2 * down}, so that "
            f"the network's deepest level keeps 2x2 pixels; got {size}",
        )
    if config.batch_size < 2:
        raise ConfigError("batch_size", f"must be >= 2, got {config.batch_size}")
    if config.num_workers < 0:
        raise ConfigError("num_workers", f"must be >= 0, got {config.num_workers}")
    families = config.quality.selftest_families
    if not families or len(set(families)) != len(families):
        raise ConfigError(
            "quality.selftest_families", f"needs at least one family, each once, got {list(families)}"
        )
    if config.method in ("gt", "gmm_select") and config.g.warmup_epochs < 1:
        raise ConfigError("g.warmup_epochs", f"must be >= 1, got {config.g.warmup_epochs}")
    if config.method != "gt" and config.epochs < 1:
        raise ConfigError("epochs", f"must be >= 1, got {config.epochs}")
    if limits is not None:
        _check_limits(config, limits)


# Bytes per activation value of a training step (forward, backward and the loss), fitted to the peak
# memory of MONAI's UNet on the CPU: 0.17-0.53 GB at 128-256 px, batch 8-32, 16-512 filters.
_BYTES_PER_ACTIVATION = 12


def training_memory_bytes(config: TrainConfig) -> int:
    """About how much memory one training step of ``config`` needs: batch x, per level, filters x pixels
    at that level x (1 + residual units), at ``_BYTES_PER_ACTIVATION`` each. A rough figure (within 2x
    of what was measured), enough to refuse configs that cannot fit anywhere."""
    net, side, values = config.net, float(config.image_size), 0.0
    for level, channels in enumerate(net.channels):
        values += channels * side * side * (1 + net.num_res_units)
        if level < len(net.strides):
            side /= net.strides[level]
    return int(_BYTES_PER_ACTIVATION * config.batch_size * values)


def _check_limits(config: TrainConfig, limits: ConfigLimits) -> None:
    net = config.net
    bounded = [
        ("image_size", config.image_size, limits.max_image_size),
        ("batch_size", config.batch_size, limits.max_batch_size),
        ("num_workers", config.num_workers, limits.max_num_workers),
        ("net.channels", max(net.channels), limits.max_channels),
        ("net.channels", len(net.channels), limits.max_levels),
    ]
    for path, value, most in bounded:
        if value > most:
            what = "levels" if path == "net.channels" and most == limits.max_levels else "value"
            raise ConfigError(path, f"{what} {value} is above this service's limit of {most}")
    total = schedule_epochs(config)
    if total > limits.max_epochs:
        g = config.g
        parts = (
            {
                "g.warmup_epochs": g.warmup_epochs,
                "g.rounds_max": g.rounds_max * g.epochs_per_round,
                "t.epochs": config.t.epochs,
            }
            if config.method == "gt"
            else {"epochs": config.epochs}
        )
        raise ConfigError(
            max(parts, key=lambda k: parts[k]),
            f"the schedule would train {total} epochs; this service's limit is {limits.max_epochs}",
        )
    need = training_memory_bytes(config)
    if need > limits.max_train_memory_bytes:
        gib, net = 1024**3, config.net
        raise ConfigError(
            "batch_size",
            f"this config needs about {need / gib:,.0f} GiB per training step (image_size "
            f"{config.image_size}, batch_size {config.batch_size}, net.channels {list(net.channels)}, "
            f"net.num_res_units {net.num_res_units}); this service allows "
            f"{limits.max_train_memory_bytes / gib:,.0f} GiB: make one of them smaller",
        )


@dataclass(frozen=True)
class Preset:
    """A named starting point for a job: ``config`` is a partial ``TrainConfig`` (omitted fields keep
    their defaults); a job's own ``config`` is applied on top of it."""

    name: str
    description: str
    config: dict[str, Any]


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "quick",
            "A first look in minutes on a CPU: 64 px, 6 warm-up epochs, up to 2 feedback rounds of 2 "
            "epochs, 4 T-stage epochs. Too short to trust its verdicts on a real dataset: on 80 Kvasir-SEG "
            "images with 30 % of the masks wrong it found 67-92 % of them (every box over empty tissue) "
            "but 27-29 % of its flags were correct masks, and its network reached validation Dice "
            "0.45-0.53 (BENCHMARKS.md, newcomer; 17 s a run on 2 CPU cores).",
            {
                "image_size": 64,
                "g": {"warmup_epochs": 6, "rounds_max": 2, "epochs_per_round": 2},
                "t": {"epochs": 4},
            },
        ),
        Preset(
            "standard",
            "The defaults: 128 px, 10 warm-up epochs, up to 5 feedback rounds of 5 epochs, 20 T-stage "
            "epochs, more when the rounds stop early (55 epochs in all). On the same 80 images, 8x "
            "quick's time (129-134 s): 88-92 % of the wrong masks found, 24-34 % of the flags on "
            "correct masks, validation Dice 0.42-0.64; on 300 images 89-92 % found, 20-25 % false "
            "flags, 87-90 % of the 30 most doubtful masks wrong, validation Dice 0.59-0.65 "
            "(BENCHMARKS.md, newcomer).",
            {},
        ),
        Preset(
            "benchmark",
            "The protocol of BENCHMARKS.md's Kvasir-SEG figures: 128 px, 40 epochs (22 warm-up, up to 3 "
            "feedback rounds of 3, 9 T-stage epochs and those of the rounds left unused).",
            {"g": {"warmup_epochs": 22, "rounds_max": 3, "epochs_per_round": 3}, "t": {"epochs": 9}},
        ),
        Preset(
            "paper",
            "The paper's reference G stage (Gao et al. 2024): every split is a GMM on the student's "
            "per-image CE + Dice loss, on raw scores; our other defaults stay.",
            {
                "g": {
                    "detector": "loss",
                    "sample_loss": "ce+dice",
                    "score_transform": "none",
                    "score_net": "student",
                }
            },
        ),
    )
}


def merge_config(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` applied on top of ``base`` (partial config dicts), section by section."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_config(out[key], value)
        else:
            out[key] = value
    return out


def preset_config(name: str, override: dict[str, Any] | None = None) -> dict[str, Any]:
    """The partial config of preset ``name`` with ``override`` on top; ``ConfigError`` for an unknown name."""
    if name not in PRESETS:
        raise ConfigError("preset", f"unknown preset {name!r} (known: {', '.join(PRESETS)})")
    return merge_config(PRESETS[name].config, override or {})
