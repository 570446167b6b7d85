"""Training episodes as batches: drawn, cropped and augmented from a generator seeded with
``(seed, step, rank)``, so the same seed gives the same episodes and weights, ranks of a
distributed run see different episodes, and a resumed run replays exactly the episodes an
uninterrupted run would have seen.
"""

from __future__ import annotations

import numpy as np
import torch

from fslcli.config import AugmentConfig, EpisodeConfig
from fslcli.episodes import TRAIN_STREAM, Episode, Pool, episode_rng, sample_episode
from fslcli.features import WaveCache
from fslcli.training.augment import random_eq, spec_mask_params


def episode_batch(
    cache: WaveCache,
    episode: Episode,
    excerpt: int,
    *,
    aug: AugmentConfig,
    rng: np.random.Generator,
    n_mels: int,
    n_frames: int,
) -> dict[str, torch.Tensor]:
    """One episode's waveforms and augmentation draws.

    ``waves`` ``(ways * (shots + queries), excerpt)``: support (class-major) then queries, each a
    random excerpt of its clip; ``target`` ``(ways * queries,)`` the queries' classes; ``eq``
    ``(n, n_mels)``, ``shift`` ``(n,)``, ``time_masks``/``freq_masks`` for the log-mel, and
    with pitch augmentation ``pitch`` ``(n,)`` semitones.
    """
    ids = np.concatenate([episode.support.reshape(-1), episode.query.reshape(-1)])
    room = np.maximum(cache.lengths[ids] - excerpt, 0)
    starts = (rng.random(len(ids)) * (room + 1)).astype(np.int64)
    waves = cache.excerpts(ids, starts, excerpt)
    if aug.gain_db > 0:
        waves *= (10.0 ** (rng.uniform(-aug.gain_db, aug.gain_db, size=(len(ids), 1)) / 20.0)).astype(np.float32)
    tm, fm = spec_mask_params(rng, len(ids), n_mels, n_frames, aug)
    batch = {
        "waves": torch.from_numpy(waves),
        "target": torch.as_tensor(np.repeat(np.arange(episode.ways), episode.query.shape[1]), dtype=torch.long),
        "time_masks": torch.from_numpy(tm),
        "freq_masks": torch.from_numpy(fm),
        "eq": torch.from_numpy(random_eq(rng, len(ids), n_mels, aug.eq_db)),
        "shift": torch.from_numpy(rng.integers(-aug.max_shift_bins, aug.max_shift_bins + 1, size=len(ids))),
    }
    if aug.pitch_semitones > 0:
        batch["pitch"] = torch.from_numpy(rng.uniform(-aug.pitch_semitones, aug.pitch_semitones, size=len(ids)))
    return batch


class EpisodeDataset(torch.utils.data.Dataset):
    """Training episode ``i`` is drawn from ``(seed, i, rank)``; ``len`` is the number of steps."""

    def __init__(
        self,
        cache: WaveCache,
        pool: Pool,
        cfg: EpisodeConfig,
        *,
        excerpt: int,
        aug: AugmentConfig,
        seed: int,
        rank: int,
        steps: int,
        n_mels: int,
        n_frames: int,
    ) -> None:
        self.cache, self.pool, self.cfg, self.excerpt, self.aug = cache, pool, cfg, excerpt, aug
        self.seed, self.rank, self.steps, self.n_mels, self.n_frames = seed, rank, steps, n_mels, n_frames

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = episode_rng(self.seed, i, self.rank, TRAIN_STREAM)
        ep = sample_episode(self.pool, self.cfg, rng)
        return episode_batch(
            self.cache,
            ep,
            self.excerpt,
            aug=self.aug,
            rng=rng,
            n_mels=self.n_mels,
            n_frames=self.n_frames,
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
