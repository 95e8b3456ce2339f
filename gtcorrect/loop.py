"""The machinery shared by every training method: data on the device, seeded epochs, progress,
checkpoints and the result. The methods themselves live in ``gtcorrect.methods`` and ``gtcorrect.gt``.

Shape legend: N training images, C channels, K classes, S size.
Determinism: every epoch derives its generator (shuffling, augmentation, input noise) and the global
torch seed (dropout) from (seed, epoch, stream), so a run resumed at epoch k replays epoch k + 1
exactly as the uninterrupted run does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from gtcorrect.augment import augment_batch
from gtcorrect.checkpoint import Checkpoint, pack_mask, unpack_mask
from gtcorrect.config import TrainConfig
from gtcorrect.errors import CheckpointError, TrainingStopped
from gtcorrect.evidence import EvidenceTable, edge_maps, network_columns, static_columns
from gtcorrect.losses import seg_loss
from gtcorrect.model import ModelBundle
from gtcorrect.networks import build_network, mixed_precision, use_amp, view_probs
from gtcorrect.selftest import Copies, make_copies, pool_indices
from gtcorrect.tstage import ema_update
from gtcorrect.types import GmmRound, Progress, ProgressCallback, StopCheck, TrainingData

_CHUNK = 256  # images scored at a time when measuring evidence


@dataclass(frozen=True)
class SelfTestSet:
    """The run's self-test copies: ``pool`` (P,) training indices copied, the ``copies`` of their masks,
    and the columns that need no network, of the training masks (``static``) and of the copies."""

    pool: np.ndarray
    copies: Copies
    static: dict[str, np.ndarray]
    copy_static: dict[str, np.ndarray]


def _chunked_static(images: np.ndarray, masks: np.ndarray) -> dict[str, np.ndarray]:
    parts = [
        static_columns(edge_maps(images[s : s + _CHUNK]), masks[s : s + _CHUNK])
        for s in range(0, len(masks), _CHUNK)
    ]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


_READER_STREAM = 5003  # the epoch seed's stream of the readers' draw (``Run._draw_readers``)


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A 63-bit seed that depends only on (seed, epoch, stream)."""
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(2, dtype=np.uint64)[0] >> 1)


@dataclass
class RunState:
    """Method state that a checkpoint must carry (besides nets and optimizers)."""

    clean_prob: np.ndarray  # (N,)
    flagged: np.ndarray  # (N,) bool
    round_decided: np.ndarray  # (N,) int
    sample_loss: np.ndarray  # (N,)
    epoch: int = 0
    phase: str = ""
    step: int = 0  # optimizer steps (the EMA teacher's warm start)
    rounds: list[GmmRound] = field(default_factory=list)
    scores: list[np.ndarray] = field(default_factory=list)  # per-epoch "ce+dice" scores (trajectory)
    g_end: int = 0  # global epoch at which the G stage ended; 0 while it runs
    detector: dict[str, Any] = field(default_factory=dict)
    thresholds: np.ndarray | None = None
    corrections: dict[int, np.ndarray] = field(default_factory=dict)
    # Masks learnt from in place of the given ones (bias-aware training, gtcorrect.bias.bias_targets).
    targets: dict[int, np.ndarray] = field(default_factory=dict)
    elr_memory: torch.Tensor | None = None  # (N, K, S, S)
    history: list[Progress] = field(default_factory=list)

    @classmethod
    def initial(cls, n: int) -> RunState:
        return cls(np.ones(n), np.zeros(n, dtype=bool), np.zeros(n, dtype=np.int64), np.zeros(n))

    def to_engine(self) -> dict[str, Any]:
        return {
            "clean_prob": torch.tensor(self.clean_prob, dtype=torch.float64),
            "flagged": torch.tensor(self.flagged, dtype=torch.bool),
            "round_decided": torch.tensor(self.round_decided, dtype=torch.int64),
            "sample_loss": torch.tensor(self.sample_loss, dtype=torch.float64),
            "step": self.step,
            "rounds": [asdict(r) for r in self.rounds],
            "scores": [torch.tensor(s) for s in self.scores],
            "g_end": self.g_end,
            "detector": dict(self.detector),
            "thresholds": None if self.thresholds is None else torch.tensor(np.asarray(self.thresholds)),
            "corrections": {int(i): pack_mask(m) for i, m in self.corrections.items()},
            "targets": {int(i): pack_mask(m) for i, m in self.targets.items()},
            "elr_memory": None if self.elr_memory is None else self.elr_memory.detach().cpu().clone(),
        }

    def load_engine(
        self, engine: dict[str, Any], epoch: int, phase: str, history: list[dict[str, Any]]
    ) -> None:
        self.clean_prob = engine["clean_prob"].numpy()
        self.flagged = engine["flagged"].numpy()
        self.round_decided = engine["round_decided"].numpy()
        self.sample_loss = engine["sample_loss"].numpy()
        self.step, self.g_end, self.epoch, self.phase = (
            int(engine["step"]),
            int(engine["g_end"]),
            epoch,
            phase,
        )
        self.rounds = [_gmm_round(r) for r in engine["rounds"]]
        self.scores = [s.numpy() for s in engine["scores"]]
        self.detector = dict(engine["detector"])
        self.thresholds = None if engine["thresholds"] is None else engine["thresholds"].numpy()
        self.corrections = {int(i): unpack_mask(m) for i, m in engine["corrections"].items()}
        self.targets = {int(i): unpack_mask(m) for i, m in engine.get("targets", {}).items()}
        self.elr_memory = engine["elr_memory"]
        self.history = [Progress(**h) for h in history]


def _gmm_round(d: dict[str, Any]) -> GmmRound:
    return GmmRound(
        round=int(d["round"]),
        means=(float(d["means"][0]), float(d["means"][1])),
        variances=(float(d["variances"][0]), float(d["variances"][1])),
        weights=(float(d["weights"][0]), float(d["weights"][1])),
        separation=float(d["separation"]),
        hist_counts=tuple(int(c) for c in d["hist_counts"]),
        hist_edges=tuple(float(e) for e in d["hist_edges"]),
        n_flagged=int(d["n_flagged"]),
        n_changed=int(d["n_changed"]),
        applied=bool(d.get("applied", True)),
        score=str(d.get("score", GmmRound.score)),
        distribution=str(d.get("distribution", GmmRound.distribution)),
    )


class Run:
    """One call of ``fit``: tensors on the device, nets by name, state, callbacks and checkpoints."""

    def __init__(
        self,
        config: TrainConfig,
        data: TrainingData,
        device: torch.device,
        callbacks: Sequence[ProgressCallback],
        should_stop: StopCheck | None,
        checkpoint: Callable[[Checkpoint], None] | None,
    ) -> None:
        self.config, self.data, self.device = config, data, device
        self.images = torch.as_tensor(data.images, dtype=torch.float32).to(device)
        self.masks = torch.as_tensor(data.masks, dtype=torch.int64).to(device)
        # What the samples are learnt from (``retarget``; with readers' masks, redrawn every epoch).
        self.targets = self.masks if data.readers is None else self.masks.clone()
        self._readers = None
        if data.readers is not None:
            self._readers = torch.as_tensor(data.readers.masks, dtype=torch.uint8).to(device)
        self.n, self.c = data.images.shape[0], data.images.shape[1]
        self.k = data.label_map.num_classes
        self.callbacks, self.should_stop, self.checkpoint_fn = callbacks, should_stop, checkpoint
        self.nets: dict[str, nn.Module] = {}
        self.opts: dict[str, torch.optim.Optimizer] = {}
        self.state = RunState.initial(self.n)
        self._selftest: SelfTestSet | None = None

    def retarget(self, targets: dict[int, np.ndarray]) -> None:
        """Learn samples ``targets`` (index -> mask) from those masks instead of the given ones; the given
        masks (``self.masks``) stay what scores and reports compare against."""
        self.state.targets = dict(targets)
        self.targets = self.masks
        if targets or self._readers is not None:
            self.targets = self.masks.clone()
            for i, mask in targets.items():
                self.targets[i] = torch.as_tensor(mask, device=self.device)

    def add_net(self, name: str, seed_offset: int = 0, optimizer: bool = True) -> nn.Module:
        torch.manual_seed(self.config.seed + seed_offset)
        net = build_network(self.config.net, self.c, self.k).to(self.device)
        if use_amp(self.config.amp, self.device):
            mixed_precision(net, self.device)
        self.nets[name] = net
        if optimizer:
            self.opts[name] = torch.optim.Adam(
                net.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay
            )
        return net

    def start_epoch(self, epoch: int, stream: int = 0) -> torch.Generator:
        """Seed the global torch RNG (dropout), draw this epoch's readers' masks and return this epoch's CPU
        generator."""
        self._draw_readers(epoch)
        torch.manual_seed(epoch_seed(self.config.seed, epoch, stream + 1000))
        return torch.Generator().manual_seed(epoch_seed(self.config.seed, epoch, stream))

    def _draw_readers(self, epoch: int) -> None:
        """Learn every image with readers' masks from one of them this epoch, drawn with probability
        proportional to its weight (the Gumbel-max trick: the largest log weight + Gumbel noise of each
        image's masks wins); the same draw for every net and stream of the epoch, so resuming repeats it.
        Images given a target by ``retarget`` keep it."""
        readers = self.data.readers
        if readers is None or self._readers is None or readers.owner.size == 0:
            return
        rng = np.random.default_rng(epoch_seed(self.config.seed, epoch, _READER_STREAM))
        keys = np.log(readers.weights) + rng.gumbel(size=readers.weights.size)
        order = np.lexsort((-keys, readers.owner))  # by image, the winning key first
        owners = readers.owner[order]
        winners = order[np.r_[True, owners[1:] != owners[:-1]]]
        winners = winners[self._not_retargeted(readers.owner[winners])]
        rows = torch.as_tensor(readers.owner[winners], dtype=torch.int64, device=self.device)
        picked = torch.as_tensor(winners, dtype=torch.int64, device=self.device)
        self.targets[rows] = self._readers[picked].long()

    def restore_given(self) -> None:
        """Learn the images with readers' masks from their given masks again (``retarget``'s targets
        kept): what the final corrections start from, since the given masks are what the job judges."""
        readers = self.data.readers
        if readers is None or readers.owner.size == 0:
            return
        drawn = np.unique(readers.owner)
        rows = torch.as_tensor(drawn[self._not_retargeted(drawn)], device=self.device)
        self.targets[rows] = self.masks[rows]

    def _not_retargeted(self, images: np.ndarray) -> np.ndarray:
        """(len,) bool: which of training ``images`` have no target of their own (``retarget``)."""
        return ~np.isin(images, list(self.state.targets))

    def check_stop(self, epoch: int) -> None:
        if self.should_stop is not None and self.should_stop():
            raise TrainingStopped(epoch)

    def batches(self, indices: np.ndarray, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
        """Shuffled index batches; a trailing batch of one image is dropped (normalisation needs 2)."""
        order = torch.as_tensor(indices, dtype=torch.int64)[torch.randperm(len(indices), generator=generator)]
        out = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        if len(out) > 1 and len(out[-1]) < 2:
            out.pop()
        return [b.to(self.device) for b in out]

    def train_plain_epoch(
        self, name: str, indices: np.ndarray, epoch: int, *, ema: str | None = None
    ) -> float:
        """One epoch of L_seg on the given masks of ``indices``; returns the mean batch loss.

        ``ema``: a net that follows ``name`` as the exponential moving average of its weights
        (decay ``config.t.ema_decay``), updated after every step.
        """
        net, opt = self.nets[name], self.opts[name]
        gen = self.start_epoch(epoch)
        net.train()
        losses = []
        for batch in self.batches(indices, self.config.batch_size, gen):
            self.check_stop(epoch)
            x, y = augment_batch(self.images[batch], self.targets[batch], self.config.augment, gen)
            loss = seg_loss(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if ema is not None:
                ema_update(self.nets[ema], net, self.config.t.ema_decay, self.state.step)
            self.state.step += 1
            losses.append(float(loss.detach()))
        return float(np.mean(losses)) if losses else 0.0

    def predict_probs(self, name: str, indices: np.ndarray) -> np.ndarray:
        """Softmax of net ``name`` in eval mode on training images ``indices``: (len, K, S, S) float32."""
        return self.probs_of(
            name, self.images[torch.as_tensor(indices, dtype=torch.int64, device=self.device)]
        )

    def predicted(self, name: str, chunk: int = 256) -> np.ndarray:
        """(N, S, S) uint8: net ``name``'s prediction on every training image, a chunk at a time."""
        out = np.zeros((self.n, *self.images.shape[2:]), dtype=np.uint8)
        for start in range(0, self.n, chunk):
            idx = np.arange(start, min(start + chunk, self.n))
            out[idx] = self.predict_probs(name, idx).argmax(1)
        return out

    @torch.no_grad()
    def probs_of(self, name: str, images: torch.Tensor, views: int = 1) -> np.ndarray:
        """Softmax of net ``name`` in eval mode on images (M, C, S, S) (any device): (M, K, S, S) float32.
        ``views`` 4: the mean over the image and its horizontal, vertical and double flips."""
        net = self.nets[name]
        was_training = net.training
        net.eval()
        out = []
        bs = self.config.batch_size
        for start in range(0, images.shape[0], bs):
            out.append(view_probs(net, images[start : start + bs].to(self.device), views).cpu())
        net.train(was_training)
        if not out:
            return np.zeros((0, self.k, *self.images.shape[2:]), dtype=np.float32)
        return torch.cat(out).numpy()

    def selftest(self) -> SelfTestSet:
        """The self-test's pool and copies (made once per run, the same on resume: they depend on the
        seed and the masks only) with the columns that do not change with the network."""
        if self._selftest is None:
            q, masks = self.config.quality, np.asarray(self.data.masks)
            pool = pool_indices(self.n, q.selftest_pool, self.config.seed)
            copies = make_copies(
                masks[pool], tuple(q.selftest_families), q.selftest_strength, self.config.seed
            )
            static = _chunked_static(np.asarray(self.data.images), masks)
            edges = edge_maps(np.asarray(self.data.images)[pool])
            copy_static = static_columns(edges[copies.source], copies.masks)
            self._selftest = SelfTestSet(pool, copies, static, copy_static)
        return self._selftest

    def evidence(self, name: str, views: int = 1) -> tuple[EvidenceTable, EvidenceTable, np.ndarray]:
        """The evidence table of every training mask and of the self-test's copies under net ``name``
        (one pass over the images, a chunk at a time), and the pool images' probabilities."""
        st = self.selftest()
        masks = np.asarray(self.data.masks)
        parts, copy_parts, pool_probs = [], [], []
        by_image = st.pool[st.copies.source]  # training index of each copy's image
        for start in range(0, self.n, _CHUNK):
            idx = np.arange(start, min(start + _CHUNK, self.n))
            probs = self.probs_of(name, self.images[torch.as_tensor(idx, device=self.device)], views)
            cols, per_class = network_columns(probs, masks[idx])
            parts.append(EvidenceTable({**cols, **{k: v[idx] for k, v in st.static.items()}}, per_class))
            mine = np.flatnonzero((by_image >= start) & (by_image < idx[-1] + 1))
            cols, per_class = network_columns(probs[by_image[mine] - start], st.copies.masks[mine])
            copy_parts.append((mine, cols, per_class))
            in_pool = (st.pool >= start) & (st.pool <= idx[-1])
            pool_probs.append(probs[st.pool[in_pool] - start])
        order = np.concatenate([m for m, _, _ in copy_parts])
        copy_cols = {k: np.empty(order.size) for k in copy_parts[0][1]}
        copy_class = np.empty((order.size, copy_parts[0][2].shape[1]))
        for m, cols, per_class in copy_parts:
            for k, v in cols.items():
                copy_cols[k][m] = v
            copy_class[m] = per_class
        copy_table = EvidenceTable({**copy_cols, **st.copy_static}, copy_class)
        return EvidenceTable.concat(parts), copy_table, np.concatenate(pool_probs)

    def end_epoch(
        self, epoch: int, phase: str, total: int, losses: dict[str, float], rnd: int | None = None
    ) -> None:
        """Record and announce the epoch, then hand out its checkpoint."""
        self.state.epoch, self.state.phase = epoch, phase
        noise = float(self.state.flagged.mean()) if self.state.rounds else None
        progress = Progress(phase, epoch, total, rnd, dict(losses), noise)
        self.state.history.append(progress)
        for callback in self.callbacks:
            callback(progress)
        if self.checkpoint_fn is not None:
            self.checkpoint_fn(self.snapshot())

    def announce(self, phase: str) -> None:
        """Tell the callbacks what the run does after its last epoch ("assessing"): no epoch, so
        nothing is recorded in the history or checkpointed."""
        noise = float(self.state.flagged.mean()) if self.state.rounds else None
        progress = Progress(phase, self.state.epoch, self.state.epoch, None, {}, noise)
        for callback in self.callbacks:
            callback(progress)

    def snapshot(self) -> Checkpoint:
        rng: dict[str, Any] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return Checkpoint(
            config_json=self.config.to_json(),
            epoch=self.state.epoch,
            phase=self.state.phase,
            ids=list(self.data.ids),
            nets={
                k: {n: t.detach().cpu().clone() for n, t in v.state_dict().items()}
                for k, v in self.nets.items()
            },
            optimizers={k: _cpu(o.state_dict()) for k, o in self.opts.items()},
            engine=self.state.to_engine(),
            rng=rng,
            history=[asdict(p) for p in self.state.history],
        )

    def restore(self, ckpt: Checkpoint) -> None:
        """Load a checkpoint of this exact config and data into the nets created so far."""
        if ckpt.config_json != self.config.to_json():
            raise CheckpointError(
                "checkpoint config differs from the run's config; resume with the same config."
            )
        if list(ckpt.ids) != list(self.data.ids):
            raise CheckpointError(
                f"checkpoint holds {len(ckpt.ids)} sample ids that differ from the data's ids."
            )
        if set(ckpt.nets) != set(self.nets):
            raise CheckpointError(f"checkpoint nets {sorted(ckpt.nets)} do not match {sorted(self.nets)}.")
        for name, net in self.nets.items():
            net.load_state_dict(ckpt.nets[name])
        for name, opt in self.opts.items():
            opt.load_state_dict(ckpt.optimizers[name])
        self.state.load_engine(ckpt.engine, ckpt.epoch, ckpt.phase, ckpt.history)
        torch.set_rng_state(ckpt.rng["torch"])

    def bundle(self, name: str, metrics: dict[str, float]) -> ModelBundle:
        state = {k: v.detach().cpu().clone() for k, v in self.nets[name].state_dict().items()}
        return ModelBundle(self.config, self.data.label_map, self.c, state, metrics=dict(metrics))

    @torch.no_grad()
    def val_metrics(self, name: str) -> dict[str, float]:
        """Mean foreground Dice (argmax, classes 1..K-1) on the validation set, if any."""
        if self.data.val_images is None or self.data.val_masks is None:
            return {}
        net = self.nets[name].eval()
        images = torch.as_tensor(self.data.val_images, dtype=torch.float32)
        masks = torch.as_tensor(self.data.val_masks, dtype=torch.int64)
        dices = []
        for start in range(0, images.shape[0], self.config.batch_size):
            pred = net(images[start : start + self.config.batch_size].to(self.device)).argmax(1).cpu()
            true = masks[start : start + self.config.batch_size]
            for cls in range(1, self.k):
                p, t = pred == cls, true == cls
                denom = (p.sum((1, 2)) + t.sum((1, 2))).float()
                inter = (p & t).sum((1, 2)).float()
                dices.append(torch.where(denom > 0, 2 * inter / denom.clamp_min(1), torch.ones_like(denom)))
        return {"val_dice": float(torch.cat(dices).mean())}


def _cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, dict):
        return {k: _cpu(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_cpu(v) for v in value)
    return value
