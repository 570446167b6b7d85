"""The LightningModule: prototypical loss on augmented training episodes, validation in the
model's comparison space, AdamW with warm-up and cosine decay (or the tutorial's constant Adam).

Lightning's "epochs" here are blocks of ``val_every`` steps: validation, checkpointing and
resumption happen at block boundaries. (Importing this module imports Lightning: only training
does.)
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from fslcli.config import EpisodeConfig, RunConfig
from fslcli.episodes import Pool
from fslcli.features import WaveCache
from fslcli.model import ProtoNet, prototypes
from fslcli.scoring import score_episodes
from fslcli.training.augment import apply_spec_masks, augment_logmel
from fslcli.training.dataset import BlockSampler, EpisodeDataset
from fslcli.training.validation import ValData


def build_net(config: RunConfig, seed: int) -> ProtoNet:
    """The network, initialised from ``seed`` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ProtoNet(config.audio, config.model)


def train_episode_config(config: RunConfig, n_classes: int) -> EpisodeConfig:
    """Training episodes: ``config.episode``, with at most as many ways as there are training classes."""
    return replace(config.episode, ways=max(1, min(config.episode.ways, n_classes)))


class ProtoLit(pl.LightningModule):
    """Prototypical training on episodes of ``train_pool``; validation on ``val`` (see :mod:`fslcli.training.validation`)."""

    def __init__(self, config: RunConfig, cache: WaveCache, train_pool: Pool, val: ValData) -> None:
        super().__init__()
        self.config = config
        self.net = build_net(config, config.train.seed)
        self.cache, self.train_pool, self.val = cache, train_pool, val
        self.train_cfg = train_episode_config(config, len(train_pool))
        self.n_frames = config.audio.excerpt_samples // config.audio.hop_length + 1
        self._val_emb: list[torch.Tensor] = []
        self.last_train_acc = float("nan")

    def train_dataloader(self):
        cfg = self.config
        ds = EpisodeDataset(
            self.cache,
            self.train_pool,
            self.train_cfg,
            excerpt=cfg.audio.excerpt_samples,
            aug=cfg.augment,
            seed=cfg.train.seed,
            rank=self.global_rank,
            steps=cfg.train.steps,
            n_mels=cfg.audio.n_mels,
            n_frames=self.n_frames,
        )
        sampler = BlockSampler(cfg.train.steps, cfg.train.val_every)
        return torch.utils.data.DataLoader(ds, batch_size=None, sampler=sampler, num_workers=0)

    def val_dataloader(self):
        data = torch.utils.data.TensorDataset(torch.from_numpy(self.val.windows), torch.from_numpy(self.val.owners))
        return torch.utils.data.DataLoader(data, batch_size=128, shuffle=False, num_workers=0)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x = self.net.logmel(batch["waves"], batch.get("pitch"))
        if self.config.audio.compression == "log":
            x = augment_logmel(x, batch["eq"], batch["shift"])
        x = apply_spec_masks(self.net.normalize(x), batch["time_masks"], batch["freq_masks"])
        emb = self.net.encode(x).float()
        ways, shots = self.train_cfg.ways, self.train_cfg.shots
        labels = torch.arange(ways, device=emb.device).repeat_interleave(shots)
        protos = prototypes(emb[: ways * shots], labels, ways)
        logits = self.net.logits(emb[ways * shots :], protos)
        loss = F.cross_entropy(logits, batch["target"])
        acc = (logits.argmax(-1) == batch["target"]).float().mean()
        self.last_train_acc = float(acc)
        n = int(batch["target"].shape[0])
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=n)
        self.log("train_acc", acc, on_step=True, on_epoch=True, batch_size=n)
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False, batch_size=n)
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_emb = []

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        wins, _ = batch
        self._val_emb.append(self.net.embed(wins).float().cpu())

    def on_validation_epoch_end(self) -> None:
        if not self._val_emb:
            return
        own = torch.from_numpy(self.val.owners)
        n = len(self.val.ids)
        emb = torch.zeros(n, self.net.dim).index_add_(0, own, torch.cat(self._val_emb))
        emb = emb / torch.bincount(own, minlength=n).clamp(min=1).unsqueeze(1).float()
        if len(self.val.center_rows):
            # Saved with this validation's checkpoint, so model.pt compares as validation did.
            rows = torch.from_numpy(self.val.center_rows)
            self.net.calibrate(emb[rows], torch.from_numpy(self.val.center_labels))
        pos = {c: k for k, c in enumerate(self.val.ids)}
        scores = score_episodes(self.net, emb.to(self.device), pos, self.val.episodes)
        acc, loss = float(scores.accuracy.mean()), float(scores.loss.mean())
        self.log("val_acc", acc, prog_bar=True, sync_dist=False, batch_size=1)
        self.log("val_loss", loss, sync_dist=False, batch_size=1)
        # "Best" is the highest validation accuracy; among equal accuracies, the lowest
        # validation loss (1e-6 * loss is far below one query's share of the accuracy).
        self.log("val_select", acc - 1e-6 * loss, sync_dist=False, batch_size=1)

    def configure_optimizers(self):
        tc = self.config.train
        params = [p for p in self.parameters() if p.requires_grad]
        if tc.optimizer == "adam":
            return torch.optim.Adam(params, lr=tc.learning_rate, weight_decay=tc.weight_decay)
        opt = torch.optim.AdamW(params, lr=tc.learning_rate, weight_decay=tc.weight_decay)
        warm = max(1, min(100, tc.steps // 20))

        def lr_lambda(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, tc.steps - warm))))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
