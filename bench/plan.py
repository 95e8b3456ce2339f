"""What the quality benchmark runs: schedules, the experiment grid and G-T variants.

A run is (regime, alpha, method, variant, seed). Runs that do not depend on the noise share one key:
the clean-label upper bound is trained once per seed, and at alpha 0 the noisy baseline *is* the clean
run, so alpha 0 rows of every regime reuse the same runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gtcorrect.config import CoteachingConfig, GStageConfig, TrainConfig, TStageConfig

ALL_METHODS = ("clean", "noisy", "gmm_select", "coteaching", "gt")


@dataclass(frozen=True)
class Schedule:
    """Training-set size and epochs per phase. G-T's longest schedule (warm-up + all rounds + T) equals
    the baselines' ``epochs``, so every method gets at most the same number of epochs."""

    n_train: int
    epochs: int
    warmup: int
    rounds_max: int
    epochs_per_round: int
    t_epochs: int
    batch_size: int = 8

    def __post_init__(self) -> None:
        gt_max = self.warmup + self.rounds_max * self.epochs_per_round + self.t_epochs
        if gt_max != self.epochs:
            raise ValueError(
                f"G-T's longest schedule is {gt_max} epochs but the baselines get {self.epochs}."
            )


SCHEDULES = {
    # ~60 min on this 2-core machine when it is not shared (see bench/README.md for measured times).
    "default": Schedule(n_train=200, epochs=30, warmup=10, rounds_max=3, epochs_per_round=3, t_epochs=11),
    # The reference protocol: the full 700-image training set, 40 epochs. The long warm-up
    # matters: the ranking of noisy masks keeps improving while the network learns (AUROC of the excess
    # score 0.68 / 0.76 / 0.84 / 0.86 at epochs 10 / 20 / 30 / 40 on strong mixed alpha 0.5, section
    # evidence-strong of BENCHMARKS.md). 11-14 min a run with two runs sharing the 2 cores.
    "full": Schedule(n_train=700, epochs=40, warmup=22, rounds_max=3, epochs_per_round=3, t_epochs=9),
    # "full" with every phase twice as long: does more training lift recognition (engine issue)?
    "long": Schedule(n_train=700, epochs=80, warmup=44, rounds_max=3, epochs_per_round=6, t_epochs=18),
    "quick": Schedule(n_train=160, epochs=18, warmup=6, rounds_max=2, epochs_per_round=3, t_epochs=6),
    "smoke": Schedule(
        n_train=24, epochs=3, warmup=1, rounds_max=1, epochs_per_round=1, t_epochs=1, batch_size=4
    ),
}


def _g(**kw: object) -> Callable[[TrainConfig], TrainConfig]:
    return lambda c: dataclasses.replace(c, g=dataclasses.replace(c.g, **kw))  # type: ignore[arg-type]


def _t(**kw: object) -> Callable[[TrainConfig], TrainConfig]:
    return lambda c: dataclasses.replace(c, t=dataclasses.replace(c.t, **kw))  # type: ignore[arg-type]


def _scaled_g(warmup: float, rounds: float) -> Callable[[TrainConfig], TrainConfig]:
    """More G-stage epochs taken from the T stage, so the total stays the same."""

    def apply(c: TrainConfig) -> TrainConfig:
        w = round(c.g.warmup_epochs * warmup)
        r = round(c.g.rounds_max * rounds)
        extra = (w - c.g.warmup_epochs) + (r - c.g.rounds_max) * c.g.epochs_per_round
        if extra >= c.t.epochs:
            raise ValueError(f"schedule too short to move {extra} epochs from the T stage ({c.t.epochs}).")
        c = _g(warmup_epochs=w, rounds_max=r)(c)
        return _t(epochs=c.t.epochs - extra)(c)

    return apply


# G-T variants: the ablations of the method and the G-stage options for the side-by-side.
VARIANTS: dict[str, Callable[[TrainConfig], TrainConfig]] = {
    "default": lambda c: c,
    # The paper's G stage: every split a GMM on the student's CE + Dice, on raw scores (preset paper).
    "paper": _g(detector="loss", sample_loss="ce+dice", score_transform="none", score_net="student"),
    # The default before 2026-12-06: every split a GMM on the EMA's "excess" score (one score, no learnt
    # detector): isolates what the evidence detector adds.
    "loss": _g(detector="loss"),
    "no_feedback": _g(feedback=False),
    "no_early_learning": _t(early_learning="none"),
    "no_correction": _t(correction="none"),
    "soft": _t(correction="soft"),
    "loss_ce": _g(detector="loss", sample_loss="ce"),
    "loss_dice": _g(detector="loss", sample_loss="dice"),
    "loss_confident": _g(detector="loss", sample_loss="confident"),
    "loss_trajectory": _g(detector="loss", sample_loss="trajectory"),
    # Wider scale augmentation (zoom 0.7-1.3 instead of 0.9-1.1): does seeing more object sizes stop the
    # network from shrinking large polyps and growing small ones (section full40-size)?
    "scale_aug_0.3": lambda c: dataclasses.replace(
        c, augment=dataclasses.replace(c.augment, affine_scale=0.3)
    ),
    # Nothing held back: every sample trains and is judged in-sample; the job validates on the benchmark's
    # clean validation split instead. Separates what holding back 10 % costs recognition and correction.
    "no_holdout": lambda c: dataclasses.replace(c, quality=dataclasses.replace(c.quality, val_fraction=0.0)),
    # The T stage trains exactly t.epochs, however early the G stage ends (the default before 2026-12-07).
    "fixed_t": _t(fill_schedule=False),
    "warmup_x1.5": _scaled_g(1.5, 1.0),
    "rounds_x1.5": _scaled_g(1.0, 1.5),
}
ABLATIONS = ("no_feedback", "no_early_learning", "no_correction", "soft")


@dataclass(frozen=True)
class RunSpec:
    regime: str  # "none" for runs on clean masks (clean method, alpha 0)
    alpha: float
    method: str
    variant: str
    seed: int

    @property
    def key(self) -> str:
        return f"{self.regime}|a{self.alpha:g}|{self.method}|{self.variant}|s{self.seed}"


def make_config(spec: RunSpec, schedule: Schedule, size: int) -> TrainConfig:
    """The TrainConfig of one run. Co-teaching gets the true alpha as its forget rate (an oracle, as
    in Han et al. 2018), so it is the strongest version of that peer."""
    s = schedule
    cfg = TrainConfig(
        method=spec.method,  # type: ignore[arg-type]
        seed=spec.seed,
        image_size=size,
        batch_size=s.batch_size,
        epochs=s.epochs,
        g=GStageConfig(warmup_epochs=s.warmup, rounds_max=s.rounds_max, epochs_per_round=s.epochs_per_round),
        t=TStageConfig(epochs=s.t_epochs),
        coteaching=CoteachingConfig(forget_rate=spec.alpha, num_gradual=min(10, max(1, s.epochs // 2))),
    )
    return VARIANTS[spec.variant](cfg)


def expand(
    regimes: Sequence[str],
    alphas: Sequence[float],
    methods: Sequence[str],
    seeds: Sequence[int],
    variants: Sequence[str] = (),
    variant_alpha: float = 0.5,
) -> list[RunSpec]:
    """The cartesian grid, with noise-free runs merged and G-T variants at ``variant_alpha``."""
    out: dict[str, RunSpec] = {}
    for seed in seeds:
        for regime in regimes:
            for alpha in alphas:
                for method in methods:
                    clean = method == "clean" or alpha == 0
                    m = "clean" if method == "noisy" and alpha == 0 else method
                    spec = (
                        RunSpec("none", 0.0, m, "default", seed)
                        if clean
                        else RunSpec(regime, alpha, m, "default", seed)
                    )
                    out.setdefault(spec.key, spec)
                if "gt" in methods and alpha == variant_alpha:
                    for v in variants:
                        spec = RunSpec(regime, alpha, "gt", v, seed)
                        out.setdefault(spec.key, spec)
    return list(out.values())


def default_plan(seeds: Sequence[int], variants: Sequence[str]) -> list[RunSpec]:
    """Strong mixed alpha sweep (G-T vs noisy; all peers at 0.5) plus systematic 0.5 with every peer."""
    runs = expand(["strong"], [0.0, 0.3, 0.5, 0.7], ["clean", "noisy", "gt"], seeds)
    runs += expand(["strong"], [0.5], ["gmm_select", "coteaching", "gt"], seeds, variants)
    runs += expand(["systematic"], [0.5], ["noisy", "gmm_select", "coteaching", "gt"], seeds)
    return _dedupe(runs)


def quick_plan(seeds: Sequence[int], variants: Sequence[str]) -> list[RunSpec]:
    """Alpha 0.5 strong mixed, every method."""
    return expand(["strong"], [0.5], ALL_METHODS, seeds, variants)


def _dedupe(runs: list[RunSpec]) -> list[RunSpec]:
    return list({r.key: r for r in runs}.values())
