"""Episodic training with PyTorch Lightning.

Training episode ``i`` of rank ``r`` is drawn, cropped and augmented from a generator
seeded with ``(seed, i, r)``: the same seed gives the same episodes and weights, ranks of
a distributed run see different episodes, and a resumed run replays exactly the
episodes an uninterrupted run would have seen.

Lightning's "epochs" here are blocks of ``val_every`` steps: validation, checkpointing and
resumption happen at block boundaries.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fslcli.config import AugmentConfig, EpisodeConfig, RunConfig
from fslcli.datasets import DataSource
from fslcli.episodes import Episode, Pool, check_pool, draw_episodes, episode_rng, sample_episode, sample_split_episode
from fslcli.evaluation import (
    TRAIN_STREAM,
    VAL_STREAM,
    clip_onset,
    clip_windows,
    embed_windows,
    score_episodes,
)
from fslcli.features import WaveCache
from fslcli.model import ProtoNet, shift_bands

RUN_FILE = "run.json"
HISTORY_FILE = "history.jsonl"
OPTIMIZERS: tuple[str, ...] = ("adamw", "adam")
SCHEDULES: tuple[str, ...] = ("cosine", "constant")


def quiet_lightning() -> None:
    """Silence Lightning's tips, adverts and warnings that do not concern the user.

    Call it after importing Lightning too: its ``__init__`` resets its loggers to INFO.
    """
    os.environ.setdefault("POSSIBLE_USER_WARNINGS", "off")
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for pattern in (
        ".*does not have many workers.*",
        ".*litlogger.*",
        ".*weights_only.*",
        ".*LeafSpec.*",
        ".*TensorBoard.*",
        ".*tensorboardX.*",
        ".*The number of training batches.*",
        ".*Checkpoint directory.*exists and is not empty.*",
        ".*`training_step` returned `None`.*",
        ".*You're resuming from a checkpoint that ended.*",
        ".*Precision.*is not supported by the model summary.*",
        ".*GPU available but not used.*",
        ".*TPU available but not used.*",
        ".*srun.*",
        ".*Trying to infer the `batch_size`.*",
        ".*litlogger.*",
    ):
        warnings.filterwarnings("ignore", message=pattern)


# --- data ------------------------------------------------------------------------------


def spec_mask_params(
    rng: np.random.Generator, n: int, n_mels: int, n_frames: int, aug: AugmentConfig
) -> tuple[np.ndarray, np.ndarray]:
    """SpecAugment masks drawn from ``rng``: ``(n, time_masks, 2)`` and ``(n, freq_masks, 2)`` (start, width)."""
    tm = np.zeros((n, aug.spec_time_masks, 2), dtype=np.int64)
    fm = np.zeros((n, aug.spec_freq_masks, 2), dtype=np.int64)
    for k in range(aug.spec_time_masks):
        w = rng.integers(0, aug.time_mask_frames + 1, size=n)
        tm[:, k, 0] = rng.integers(0, np.maximum(1, n_frames - w + 1))
        tm[:, k, 1] = w
    for k in range(aug.spec_freq_masks):
        w = rng.integers(0, aug.freq_mask_bins + 1, size=n)
        fm[:, k, 0] = rng.integers(0, np.maximum(1, n_mels - w + 1))
        fm[:, k, 1] = w
    return tm, fm


def apply_spec_masks(x: torch.Tensor, time_masks: torch.Tensor, freq_masks: torch.Tensor) -> torch.Tensor:
    """Zero the masked frames and bands of ``x`` ``(batch, 1, n_mels, frames)``; returns a new tensor."""
    _, _, n_mels, n_frames = x.shape
    t = torch.arange(n_frames, device=x.device)
    f = torch.arange(n_mels, device=x.device)
    keep = torch.ones(x.shape[0], n_mels, n_frames, dtype=torch.bool, device=x.device)
    for k in range(time_masks.shape[1]):
        s, w = time_masks[:, k, 0:1], time_masks[:, k, 1:2]
        keep &= ~((t[None] >= s) & (t[None] < s + w))[:, None, :]
    for k in range(freq_masks.shape[1]):
        s, w = freq_masks[:, k, 0:1], freq_masks[:, k, 1:2]
        keep &= ~((f[None] >= s) & (f[None] < s + w))[:, :, None]
    return x * keep.unsqueeze(1).to(x.dtype)


def episode_batch(
    cache: WaveCache,
    episode: Episode,
    excerpt: int,
    aug: AugmentConfig | None,
    rng: np.random.Generator,
    n_mels: int,
    n_frames: int,
    class_index: dict[str, int] | None = None,
    onsets: np.ndarray | None = None,
    onset_span: int = 0,
    chain: Any = None,
) -> dict[str, torch.Tensor]:
    """Waveforms of one episode: support (class-major) then queries, ``(ways * (shots + queries), excerpt)``.

    With ``class_index``, ``labels`` ``(ways * (shots + queries),)`` gives each clip's index in it.
    With ``onsets`` (each cached clip's onset sample) random crops start within ``onset_span``
    samples after the clip's onset rather than anywhere in it.
    """
    ids = np.concatenate([episode.support.reshape(-1), episode.query.reshape(-1)])
    if aug is not None and aug.random_crop:
        room = np.maximum(cache.lengths[ids] - excerpt, 0)
        if onsets is not None:
            first = np.minimum(onsets[ids], room)
            room = np.minimum(room - first, onset_span)
        else:
            first = np.zeros(len(ids), dtype=np.int64)
        starts = first + (rng.random(len(ids)) * (room + 1)).astype(np.int64)
    else:
        starts = np.zeros(len(ids), dtype=np.int64)
    waves = cache.excerpts(ids, starts, excerpt)
    if chain is not None and aug is not None and aug.chain > 0:
        waves = chain(waves, rng, aug.chain)
    if aug is not None and aug.gain_db > 0:
        gains = 10.0 ** (rng.uniform(-aug.gain_db, aug.gain_db, size=(len(ids), 1)) / 20.0)
        waves *= gains.astype(np.float32)
    batch = {
        "waves": torch.from_numpy(waves),
        "target": torch.as_tensor(np.repeat(np.arange(episode.ways), episode.query.shape[1]), dtype=torch.long),
    }
    if class_index is not None:
        rows = np.asarray([class_index[c] for c in episode.classes], dtype=np.int64)
        batch["labels"] = torch.from_numpy(
            np.concatenate([np.repeat(rows, episode.support.shape[1]), np.repeat(rows, episode.query.shape[1])])
        )
    if aug is not None:
        tm, fm = spec_mask_params(rng, len(ids), n_mels, n_frames, aug)
        batch["time_masks"] = torch.from_numpy(tm)
        batch["freq_masks"] = torch.from_numpy(fm)
        batch["eq"] = torch.from_numpy(random_eq(rng, len(ids), n_mels, aug.eq_db))
        batch["shift"] = torch.from_numpy(rng.integers(-aug.max_shift_bins, aug.max_shift_bins + 1, size=len(ids)))
    return batch


def random_eq(rng: np.random.Generator, n: int, n_mels: int, max_db: float) -> np.ndarray:
    """Smooth random EQ curves in natural-log power units, ``(n, n_mels)``.

    Each curve passes through 4 evenly spaced points drawn within +/- ``max_db`` dB.
    """
    if max_db <= 0:
        return np.zeros((n, n_mels), dtype=np.float32)
    knots = rng.uniform(-max_db, max_db, size=(n, 4))
    # Linear interpolation through the 4 knots as one matrix product: weights (4, n_mels).
    grid = np.linspace(0.0, 3.0, n_mels)
    weights = np.maximum(0.0, 1.0 - np.abs(grid[None, :] - np.arange(4)[:, None]))
    return (knots @ weights * (np.log(10.0) / 10.0)).astype(np.float32)


def augment_logmel(x: torch.Tensor, eq: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Add EQ curves ``(batch, n_mels)`` to log-mel ``x`` ``(batch, n_mels, frames)`` and shift
    each clip's mel axis by ``shift[b]`` bands (edge bands repeat); returns a new tensor."""
    return shift_bands(x + eq.to(x.dtype).unsqueeze(-1), shift)


class EpisodeDataset(torch.utils.data.Dataset):
    """Training episode ``i`` is drawn from ``(seed, i, rank)``."""

    def __init__(
        self,
        cache: WaveCache,
        pool: Pool,
        cfg: EpisodeConfig,
        excerpt: int,
        aug: AugmentConfig,
        seed: int,
        rank: int,
        steps: int,
        n_mels: int,
        n_frames: int,
        with_labels: bool = False,
    ) -> None:
        self.cache, self.pool, self.cfg, self.excerpt, self.aug = cache, pool, cfg, excerpt, aug
        self.seed, self.rank, self.steps, self.n_mels, self.n_frames = seed, rank, steps, n_mels, n_frames
        # Each clip's training-class index, only for the auxiliary class loss.
        self.class_index = {c: k for k, c in enumerate(pool)} if with_labels else None
        # Each training clip's onset sample (indexed by cache id), only for crops near the onset.
        self.onsets: np.ndarray | None = None
        self.onset_span = int(round(aug.onset_crop_seconds * cache.sample_rate))
        # The room bank of the recording-chain augmentation, drawn from the run's seed.
        self.chain = None
        if aug.chain > 0:
            from fslcli.augment import RecordingChain

            self.chain = RecordingChain(cache.sample_rate, seed)
        if aug.random_crop and aug.onset_crop_seconds > 0:
            self.onsets = np.zeros(len(cache.lengths), dtype=np.int64)
            for i in (int(i) for ids in pool.values() for i in ids):
                self.onsets[i] = clip_onset(cache.clip(i), cache.sample_rate)

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = episode_rng(self.seed, i, self.rank, TRAIN_STREAM)
        ep = sample_episode(self.pool, self.cfg, rng)
        return episode_batch(
            self.cache,
            ep,
            self.excerpt,
            self.aug,
            rng,
            self.n_mels,
            self.n_frames,
            class_index=self.class_index,
            onsets=self.onsets,
            onset_span=self.onset_span,
            chain=self.chain,
        )


class BlockSampler(torch.utils.data.Sampler[int]):
    """Yields the step indices of one block of ``block`` steps; Lightning sets the block via ``set_epoch``."""

    def __init__(self, steps: int, block: int) -> None:
        self.steps, self.block, self.epoch = steps, block, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        start = self.epoch * self.block
        return iter(range(start, min(start + self.block, self.steps)))

    def __len__(self) -> int:
        start = self.epoch * self.block
        return max(0, min(start + self.block, self.steps) - start)


# --- the Lightning module --------------------------------------------------------------


def build_net(config: RunConfig, seed: int) -> ProtoNet:
    """The network, initialised from ``seed`` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ProtoNet(config.audio, config.model)


@dataclass(frozen=True)
class ValData:
    """Fixed validation windows and episodes (the same at every validation).

    ``windows`` ``(n_windows, samples)`` are the windows of the clips ``ids`` (cache indices);
    ``owners`` ``(n_windows,)`` gives each window's position in ``ids``. ``center_rows`` are the
    positions of the training clips that calibrate the comparison space (``ProtoNet.calibrate``;
    none unless ``embedding_norm`` is "whitened" or "centered-l2"), with class indices
    ``center_labels``.
    """

    windows: np.ndarray
    owners: np.ndarray
    ids: list[int]
    episodes: list[Episode]
    center_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    center_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def n_center(self) -> int:
        """How many clips calibrate the comparison space."""
        return len(self.center_rows)

    def center_windows(self) -> tuple[np.ndarray, np.ndarray]:
        """The calibration clips' windows and each one's position in ``center_rows``."""
        where = np.full(len(self.ids), -1, dtype=np.int64)
        where[self.center_rows] = np.arange(len(self.center_rows))
        mine = where[self.owners] >= 0
        return self.windows[mine], where[self.owners[mine]]


#: Validation draws from at most this many held-out clips per class (a seeded subset), so its
#: memory and time do not grow with the dataset.
MAX_VAL_CLIPS_PER_CLASS = 30
#: The embedding centre and within-class covariance are estimated from at most this many
#: training clips in all, split evenly over the training classes (a seeded subset of each). The
#: covariance of a 256-d embedding needs many: on held-out training classes, 20 clips per class
#: lost 0.01-0.04 of accuracy against all of them (about 130).
MAX_CENTER_CLIPS = 1500


def center_clips_per_class(n_classes: int) -> int:
    """How many training clips per class calibrate the comparison space: :data:`MAX_CENTER_CLIPS`
    shared out, but at least 8 (with many classes, the covariance pools over all of them)."""
    return max(8, MAX_CENTER_CLIPS // max(1, n_classes))


def _subset(pool: Pool, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """At most ``n`` clips per class, drawn with ``rng``, in index order."""
    return {c: np.sort(rng.choice(ids, size=n, replace=False)) if len(ids) > n else ids for c, ids in pool.items()}


def make_val_data(
    cache: WaveCache,
    pool: Pool,
    config: RunConfig,
    train_pool: Pool | None = None,
    groups: np.ndarray | None = None,
) -> ValData:
    """Validation episodes and the clips they and the calibration need.

    Held-out recordings of the training classes (the default, ``pool`` their held-out fold):
    each episode's support comes from the training clips, its queries from held-out ones, so no
    query shares a recording with the support (folds are dealt per source group). Held-out
    classes (``val_classes``): ordinary episodes within them, grouped by ``groups``.
    Where embeddings are centred, the ``train_pool`` clips that set the centre are embedded too.
    """
    rng = episode_rng(config.train.seed, 0, 0, VAL_STREAM + 100)
    pool = _subset(pool, MAX_VAL_CLIPS_PER_CLASS, rng)
    calib = _subset(train_pool or {}, center_clips_per_class(len(train_pool or {})), rng)
    n = config.train.val_episodes
    if config.split.val_classes or not calib:
        cfg = val_episode_config(pool, config.episode)
        episodes = draw_episodes(pool, cfg, n, config.train.seed, VAL_STREAM, groups=groups, what="validation episodes")
    else:
        cfg = split_val_config(calib, pool, config.episode)
        episodes = [
            sample_split_episode(calib, pool, cfg, episode_rng(config.train.seed, i, 0, VAL_STREAM)) for i in range(n)
        ]
    used = {int(i) for ep in episodes for i in np.concatenate([ep.support.ravel(), ep.query.ravel()])}
    calibrates = config.model.embedding_norm in ("whitened", "centered-l2") and bool(calib)
    label_of = {int(i): k for k, c in enumerate(sorted(calib)) for i in calib[c]} if calibrates else {}
    ids = sorted(used | set(label_of))
    wins, owners = clip_windows(cache, ids, config.audio.excerpt_samples, config.eval_windows)
    rows = np.array([k for k, i in enumerate(ids) if i in label_of], dtype=np.int64)
    labels = np.array([label_of[ids[k]] for k in rows], dtype=np.int64)
    return ValData(wins, owners, ids, episodes, rows, labels)


def split_val_config(support: Pool, query: Pool, cfg: EpisodeConfig) -> EpisodeConfig:
    """Validation episodes with support from training clips and queries from held-out ones: the
    run's shape, with fewer ways, shots or queries where the data is small."""
    from fslcli.errors import EpisodeError

    both = [c for c in query if len(query[c]) and len(support.get(c, ()))]
    if len(both) < 2:
        raise EpisodeError(
            f"validation needs at least 2 training classes with held-out recordings; found {len(both)} "
            f"({', '.join(both) or 'none'}): a class needs 5 source groups to give one to validation. Add "
            "recordings, hold out whole classes with --val-classes, or use --group-by none"
        )
    return EpisodeConfig(
        ways=min(cfg.ways, len(both)),
        shots=min(cfg.shots, min(len(support[c]) for c in both)),
        queries=min(cfg.queries, min(len(query[c]) for c in both)),
    )


def train_episode_config(config: RunConfig, n_classes: int) -> EpisodeConfig:
    """The shape of training episodes: all training classes unless ``train_ways`` says otherwise."""
    tc = config.train
    ways = tc.train_ways if tc.train_ways > 0 else max(n_classes, 1)
    queries = min(tc.train_queries, config.episode.queries) if tc.train_queries > 0 else config.episode.queries
    return replace(config.episode, ways=ways, queries=queries)


def val_episode_config(pool: Pool, cfg: EpisodeConfig) -> EpisodeConfig:
    """Validation episodes: the run's shape, with fewer ways, shots or queries where held-out data is small."""
    from fslcli.errors import EpisodeError

    ways = min(cfg.ways, len(pool))
    smallest = min((len(v) for v in pool.values()), default=0)
    if ways < 2 or smallest < 2:
        raise EpisodeError(
            f"validation needs at least 2 classes with 2 held-out clips each; found {len(pool)} classes, the smallest with "
            f"{smallest} clips ({', '.join(f'{k}: {len(v)}' for k, v in pool.items())}); add recordings or hold out "
            "whole classes with --val-classes"
        )
    shots = min(cfg.shots, smallest - 1)
    queries = max(1, min(cfg.queries, smallest - shots))
    return EpisodeConfig(ways=ways, shots=shots, queries=queries)


def ema_decay_at(decay: float, step: int) -> float:
    """The moving average's decay after ``step`` optimiser steps: ``decay``, with the usual
    warm-up, ``(1 + step) / (10 + step)`` while that is smaller, so that early on the average
    forgets faster and does not hold on to the random initialisation."""
    return min(decay, (1 + step) / (10 + step))


@torch.no_grad()
def update_average(average: ProtoNet, live: ProtoNet, decay: float) -> None:
    """One step of the weights' moving average: ``average = decay * average + (1 - decay) * live``
    for every parameter. BatchNorm statistics are copied from ``live``; the calibration buffers
    (``center``, ``whitener``) are left alone, since validation fits them to ``average``."""
    for a, p in zip(average.parameters(), live.parameters(), strict=True):
        a.lerp_(p.detach(), 1.0 - decay)
    own = dict(live.named_buffers())
    for name, b in average.named_buffers():
        if name not in ("center", "whitener"):
            b.copy_(own[name])


def _lit_module_class():
    """The LightningModule class, built on first use so importing this module stays light."""
    import pytorch_lightning as pl

    class _Lit(pl.LightningModule):
        def __init__(self, config: RunConfig, cache: WaveCache, train_pool: Pool, val: ValData) -> None:
            super().__init__()
            self.config = config
            self.net = build_net(config, config.train.seed)
            self.cache, self.train_pool, self.val = cache, train_pool, val
            self.train_cfg = train_episode_config(config, len(train_pool))
            self._val_emb: list[torch.Tensor] = []
            self.n_frames = config.audio.excerpt_samples // config.audio.hop_length + 1
            # Training-only classifier over all training classes (the auxiliary loss); model.pt
            # holds only self.net.
            self.class_head: torch.nn.Linear | None = None
            if config.train.class_loss_weight > 0:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(config.train.seed + 1)
                    self.class_head = torch.nn.Linear(self.net.dim, len(train_pool))
            # The weights' moving average (``ema_decay``), a frozen copy that validation uses.
            self.ema_net: ProtoNet | None = None
            if config.train.ema_decay > 0:
                self.ema_net = copy.deepcopy(self.net).requires_grad_(False)

        @property
        def eval_net(self) -> ProtoNet:
            """The network validation embeds with and ``model.pt`` holds."""
            return self.ema_net if self.ema_net is not None else self.net

        # data
        def train_dataloader(self):
            cfg = self.config
            ds = EpisodeDataset(
                self.cache,
                self.train_pool,
                self.train_cfg,
                cfg.audio.excerpt_samples,
                cfg.augment,
                cfg.train.seed,
                self.global_rank,
                cfg.train.steps,
                cfg.audio.n_mels,
                self.n_frames,
                with_labels=self.class_head is not None,
            )
            sampler = BlockSampler(cfg.train.steps, cfg.train.val_every)
            return torch.utils.data.DataLoader(ds, batch_size=None, sampler=sampler, num_workers=0)

        def val_dataloader(self):
            wins = torch.from_numpy(self.val.windows)
            own = torch.from_numpy(self.val.owners)
            return torch.utils.data.DataLoader(
                torch.utils.data.TensorDataset(wins, own), batch_size=128, shuffle=False, num_workers=0
            )

        # steps
        def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
            lm = self.net.logmel(batch["waves"])
            if "eq" in batch and self.config.audio.compression == "log":
                lm = augment_logmel(lm, batch["eq"], batch["shift"])
            x = self.net.normalize(lm)
            if "time_masks" in batch:
                x = apply_spec_masks(x, batch["time_masks"], batch["freq_masks"])
            emb = self.net.encode(x).float()
            n_support = self.train_cfg.ways * self.train_cfg.shots
            # Each member of an ensemble learns from its own embedding (the mean of their losses).
            logits = [
                self.net.head_forward(e[:n_support], e[n_support:], self.train_cfg.ways).logits
                for e in emb.split(self.net.member_dim, dim=1)
            ]
            loss = torch.stack([F.cross_entropy(member, batch["target"]) for member in logits]).mean()
            # The ensemble's logits: with squared Euclidean distances, those of the members side by side.
            ensemble = torch.stack(logits).sum(dim=0)
            if self.class_head is not None:
                class_loss = F.cross_entropy(self.class_head(emb), batch["labels"])
                self.log("train_class_loss", class_loss, on_step=True, on_epoch=True, batch_size=len(emb))
                loss = loss + self.config.train.class_loss_weight * class_loss
            acc = (ensemble.argmax(-1) == batch["target"]).float().mean()
            self.last_train_acc = float(acc)
            n = int(batch["target"].shape[0])
            self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=n)
            self.log("train_acc", acc, on_step=True, on_epoch=True, batch_size=n)
            self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False, batch_size=n)
            return loss

        def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
            if self.ema_net is None:
                return
            update_average(self.ema_net, self.net, ema_decay_at(self.config.train.ema_decay, self.global_step))

        def on_validation_epoch_start(self) -> None:
            self._val_emb = []

        def validation_step(self, batch, batch_idx: int) -> None:
            wins, own = batch
            # Without the pitch-shifted views, a fifth of their cost at every validation: ``fit``
            # refits the saved model's calibration to every view once training ends.
            self._val_emb.append(self.eval_net.embed(wins, semitones=()).float().cpu())

        def on_validation_epoch_end(self) -> None:
            if not self._val_emb:
                return
            emb_w = torch.cat(self._val_emb)
            own = torch.from_numpy(self.val.owners)
            n = len(self.val.ids)
            emb = torch.zeros(n, emb_w.shape[1]).index_add_(0, own, emb_w)
            emb = emb / torch.bincount(own, minlength=n).clamp(min=1).unsqueeze(1).float()
            if self.val.n_center:
                # Saved with this validation's checkpoint, so model.pt compares as validation did.
                rows = torch.from_numpy(self.val.center_rows)
                self.eval_net.calibrate(emb[rows], torch.from_numpy(self.val.center_labels))
            pos = {c: k for k, c in enumerate(self.val.ids)}
            with torch.no_grad():
                scores = score_episodes(self.eval_net, emb.to(self.device), pos, self.val.episodes, finished=False)
            self.log("val_acc", float(scores.accuracy.mean()), prog_bar=True, sync_dist=False, batch_size=1)
            self.log("val_loss", float(scores.loss.mean()), sync_dist=False, batch_size=1)
            # What "best" means: the highest validation accuracy; among equal accuracies (held-out
            # recordings of the training classes saturate near 1.0), the lowest validation loss.
            # 1e-6 * loss is far below one query's share of the accuracy (> 1e-5 here).
            self.log(
                "val_select",
                float(scores.accuracy.mean()) - 1e-6 * float(scores.loss.mean()),
                sync_dist=False,
                batch_size=1,
            )

        def configure_optimizers(self):
            tc = self.config.train
            opt_class = torch.optim.Adam if tc.optimizer == "adam" else torch.optim.AdamW
            trained = [p for p in self.parameters() if p.requires_grad]
            opt = opt_class(trained, lr=tc.learning_rate, weight_decay=tc.weight_decay)
            if tc.schedule == "constant":
                return opt
            warm = max(1, min(100, tc.steps // 20))

            def lr_lambda(step: int) -> float:
                if step < warm:
                    return (step + 1) / warm
                progress = (step - warm) / max(1, tc.steps - warm)
                return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

            sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    return _Lit


# --- callbacks -------------------------------------------------------------------------


def _callbacks(run_dir: Path, progress: Callable[[dict[str, Any]], None] | None, t0: float):
    import pytorch_lightning as pl

    class History(pl.Callback):
        """Appends one row per validation block (step, mean training loss and accuracy over the
        block, validation accuracy, wall time) to history.jsonl, and reports progress."""

        def __init__(self) -> None:
            self.losses: list[float] = []
            self.accs: list[float] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            loss = float(outputs["loss"] if isinstance(outputs, dict) else outputs)
            self.losses.append(loss)
            self.accs.append(float(getattr(pl_module, "last_train_acc", float("nan"))))
            if progress is not None and trainer.is_global_zero:
                progress({"event": "step", "step": int(trainer.global_step), "loss": loss})

        # Lightning validates at the end of each block, before on_train_epoch_end.
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            # No steps since the last row: a resumed run re-ending the block its checkpoint closed.
            if trainer.is_global_zero and self.losses:
                row: dict[str, Any] = {"step": int(trainer.global_step), "seconds": round(time.perf_counter() - t0, 2)}
                if self.losses:
                    row["train_loss"] = float(np.mean(self.losses))
                    row["train_acc"] = float(np.nanmean(self.accs))
                for key in ("val_loss", "val_acc"):
                    if key in trainer.callback_metrics:
                        row[key] = float(trainer.callback_metrics[key])
                with open(run_dir / HISTORY_FILE, "a", encoding="utf-8") as f:
                    f.write(json.dumps(row) + "\n")
                if progress is not None:
                    progress({"event": "val", **row})
            self.losses, self.accs = [], []

    return [History()]


# --- fit -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FitResult:
    run_dir: Path
    model_path: Path | None
    best_val_acc: float | None
    best_step: int | None
    seconds: float
    steps: int
    is_global_zero: bool


def resolve_accelerator(accelerator: str, precision: str) -> str:
    """Check the precision can run on the chosen device; returns the accelerator Lightning will use."""
    from fslcli.errors import FslError
    from fslcli.workflows import device_for

    acc = device_for("auto") if accelerator == "auto" else accelerator
    if acc in ("cuda", "gpu") and not torch.cuda.is_available():
        raise FslError(f"--accelerator {accelerator}: no CUDA GPU is visible; use --accelerator cpu or auto")
    if acc == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise FslError("--accelerator mps: Apple's MPS is not available here; use --accelerator cpu or auto")
    if precision not in ("32", "16-mixed", "bf16-mixed"):
        raise FslError(f"--precision {precision!r} is unknown; choose 32, 16-mixed or bf16-mixed")
    if precision == "16-mixed" and acc == "cpu":
        raise FslError("--precision 16-mixed needs a CUDA or MPS GPU; on the CPU use 32 or bf16-mixed")
    if precision == "bf16-mixed" and acc in ("cuda", "gpu") and not torch.cuda.is_bf16_supported():
        raise FslError("--precision bf16-mixed: this GPU has no bfloat16 support; use 16-mixed or 32")
    return acc


def preflight(config: RunConfig, train_pool: Pool, val_pool: Pool) -> str:
    """Refuse what training could not do (device, precision, episode shapes) before any work
    starts; returns the accelerator Lightning will use."""
    from fslcli.errors import FslError

    tc = config.train
    if tc.optimizer not in OPTIMIZERS:
        raise FslError(f"optimizer {tc.optimizer!r} is unknown; choose one of {', '.join(OPTIMIZERS)}")
    if tc.schedule not in SCHEDULES:
        raise FslError(f"learning-rate schedule {tc.schedule!r} is unknown; choose one of {', '.join(SCHEDULES)}")
    if not 0.0 <= tc.ema_decay < 1.0:
        raise FslError(f"weight-average decay {tc.ema_decay}: use 0 (off) or a value below 1, such as 0.995")
    accelerator = resolve_accelerator(tc.accelerator, tc.precision)
    if config.episode.ways > len(train_pool):
        # --ways is the shape the model is validated and evaluated at: more ways than there are
        # training classes is a mistake even though training episodes use every class.
        check_pool(train_pool, config.episode, what="training episodes")
    check_pool(train_pool, train_episode_config(config, len(train_pool)), what="training episodes")
    if config.split.val_classes:
        val_episode_config(val_pool, config.episode)
    else:
        split_val_config(train_pool, val_pool, config.episode)
    return accelerator


def fit(
    config: RunConfig,
    cache: WaveCache,
    train_pool: Pool,
    val_pool: Pool,
    source: DataSource,
    run_dir: Path,
    resume: bool = False,
    progress: Callable[[dict[str, Any]], None] | None = None,
    extra_meta: dict[str, Any] | None = None,
    groups: np.ndarray | None = None,
) -> FitResult:
    """Train, keep the best checkpoint by validation accuracy, and write ``run_dir/model.pt``.

    ``groups``: each clip's source group (``Pools.groups``), which keeps the support and queries
    of validation episodes on held-out classes apart."""
    quiet_lightning()
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.loggers import TensorBoardLogger

    quiet_lightning()

    from fslcli.checkpoint import save_model

    tc = config.train
    accelerator = preflight(config, train_pool, val_pool)
    val = make_val_data(cache, val_pool, config, train_pool, groups)
    lit = _lit_module_class()(config, cache, train_pool, val)
    ckpt_dir = run_dir / "checkpoints"
    # save_on_train_epoch_end=False: saved at validation end, Lightning resumes the block as ended once.
    # Saved at train-epoch end (its default here), a max_steps run resumes "on epoch end", counts that
    # block a second time and stops one block early, so `--resume` trained nothing.
    checkpoint = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="best",
        monitor="val_select",
        mode="max",
        save_top_k=1,
        enable_version_counter=False,
        save_on_train_epoch_end=False,
    )
    # last.ckpt (what --resume reads) from its own unmonitored callback: Lightning >= 2.6 refreshes a
    # monitored callback's save_last only when the monitored value improves.
    last = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="last",
        monitor=None,
        save_top_k=1,
        enable_version_counter=False,
        save_on_train_epoch_end=False,
    )
    world = tc.devices * tc.num_nodes
    strategy: Any = "ddp" if world > 1 else "auto"
    if world > 1 and accelerator == "cpu":
        from pytorch_lightning.strategies import DDPStrategy

        strategy = DDPStrategy(process_group_backend="gloo")
    previous = _previous_seconds(run_dir) if resume else 0.0
    t0 = time.perf_counter()
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=tc.devices,
        num_nodes=tc.num_nodes,
        strategy=strategy,
        precision=tc.precision,
        # No max_steps: the block sampler ends the last (possibly shorter) block exactly at
        # tc.steps, so that block is validated like the others.
        max_steps=-1,
        max_epochs=math.ceil(tc.steps / tc.val_every),
        check_val_every_n_epoch=1,
        num_sanity_val_steps=0,
        logger=TensorBoardLogger(str(run_dir), name="tensorboard", version="", default_hp_metric=False),
        log_every_n_steps=max(1, min(10, tc.val_every // 5)),
        callbacks=[checkpoint, last, *_callbacks(run_dir, progress, t0 - previous)],
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        deterministic=False,
        benchmark=False,
        default_root_dir=str(run_dir),
    )
    ckpt_path = str(ckpt_dir / "last.ckpt") if resume else None
    _fit_or_interrupt(trainer, lit, ckpt_path)
    seconds = time.perf_counter() - t0
    if not trainer.is_global_zero:
        return FitResult(run_dir, None, None, None, seconds, int(trainer.global_step), False)
    best_path = checkpoint.best_model_path or str(ckpt_dir / "last.ckpt")
    state = torch.load(best_path, map_location="cpu", weights_only=True)
    net = build_net(config, tc.seed)
    prefix = "ema_net." if tc.ema_decay > 0 else "net."
    net.load_state_dict({k[len(prefix) :]: v for k, v in state["state_dict"].items() if k.startswith(prefix)})
    if config.model.eval_pitch_shifts and val.n_center:
        if progress is not None:
            progress({"event": "calibrate"})
        from fslcli.workflows import device_for

        refit_calibration(net, val, device_for(accelerator))
    best_step = int(state.get("global_step", 0))
    best = _best_val_acc(run_dir, best_step)
    meta = {
        "best_val_acc": float(best) if best is not None else None,
        "best_step": best_step,
        "steps": int(trainer.global_step),
        "train_seconds": round(previous + seconds, 2),
        "val_description": "",
        **(extra_meta or {}),
    }
    model_path = run_dir / "model.pt"
    save_model(model_path, net, config, source, meta)
    _write_learning_curves(run_dir)
    return FitResult(run_dir, model_path, meta["best_val_acc"], best_step, seconds, int(trainer.global_step), True)


def refit_calibration(net: ProtoNet, val: ValData, device: str) -> None:
    """Fit ``net``'s centre and whitening (:meth:`ProtoNet.calibrate`) to the calibration clips
    embedded with every test-time view, as evaluation embeds them (validation leaves out the
    pitch-shifted views). ``net`` ends on the CPU."""
    windows, owners = val.center_windows()
    emb = embed_windows(net.to(device), windows, owners, val.n_center, device=device, finish=False)
    net.cpu().calibrate(emb, torch.from_numpy(val.center_labels))


def _fit_or_interrupt(trainer: Any, lit: Any, ckpt_path: str | None) -> None:
    """``trainer.fit``, with Ctrl-C surfacing as :class:`KeyboardInterrupt`.

    Lightning catches Ctrl-C itself: it stops, ignores SIGINT from then on and calls
    ``sys.exit(1)`` (older versions return normally). Either way the caller must learn the
    run was interrupted (no model.pt is written; the CLI prints how to resume), and the
    process gets its Ctrl-C handler back.
    """
    import signal
    import threading

    main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGINT) if main else None
    try:
        trainer.fit(lit, ckpt_path=ckpt_path)
    except SystemExit:
        # Also Lightning's SIGTERMException (a SystemExit): it finishes the step, then raises.
        if not trainer.interrupted:
            raise
    finally:
        if main and handler is not None:
            signal.signal(signal.SIGINT, handler)
    if trainer.interrupted:
        raise KeyboardInterrupt


def _best_val_acc(run_dir: Path, step: int) -> float | None:
    """The validation accuracy history.jsonl recorded for ``step`` (the best checkpoint's)."""
    rows = [r for r in read_history(run_dir) if r.get("step") == step and "val_acc" in r]
    return float(rows[-1]["val_acc"]) if rows else None


def _previous_seconds(run_dir: Path) -> float:
    rows = read_history(run_dir)
    return float(rows[-1]["seconds"]) if rows else 0.0


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / HISTORY_FILE
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _write_learning_curves(run_dir: Path) -> None:
    rows = read_history(run_dir)
    if not rows:
        return
    from fslcli.plotting import learning_curves_figure, write_figure

    write_figure(learning_curves_figure(rows), run_dir / "learning_curves.html")
