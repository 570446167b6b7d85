"""Training-time augmentation, all drawn from the episode's seeded generator.

On the log-mel: a random gain (on the waveform), a smooth random EQ curve, a shift of the mel
axis by a few bands, and SpecAugment time and frequency masks (Park et al., 2019). Pitch warps
(``AugmentConfig.pitch_semitones``) act on the mel filterbank (:func:`fslcli.model.warped_filterbanks`).

A simulated recording chain (rooms, microphone EQ, compression, noise) was measured as a
training augmentation and lost to pitch warps on held-out FluidR3_GM; it is kept at the git tag
``study/recording-chain``, commit d5a516e (see benchmarks/results/README.md).
"""

from __future__ import annotations

import numpy as np
import torch

from fslcli.config import AugmentConfig


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


def random_eq(rng: np.random.Generator, n: int, n_mels: int, max_db: float) -> np.ndarray:
    """Smooth random EQ curves in natural-log power units, ``(n, n_mels)``: each passes through 4
    evenly spaced points drawn within +/- ``max_db`` dB."""
    if max_db <= 0:
        return np.zeros((n, n_mels), dtype=np.float32)
    knots = rng.uniform(-max_db, max_db, size=(n, 4))
    # Linear interpolation through the 4 knots as one matrix product: weights (4, n_mels).
    grid = np.linspace(0.0, 3.0, n_mels)
    weights = np.maximum(0.0, 1.0 - np.abs(grid[None, :] - np.arange(4)[:, None]))
    return (knots @ weights * (np.log(10.0) / 10.0)).astype(np.float32)


def shift_bands(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Shift each spectrogram of ``x`` ``(batch, bands, frames)`` along its band axis by
    ``shift[b]`` bands (positive: upwards; the edge band repeats into the gap)."""
    n_bands = x.shape[1]
    idx = (torch.arange(n_bands, device=x.device)[None, :] - shift.to(x.device)[:, None]).clamp(0, n_bands - 1)
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[2]))


def augment_logmel(x: torch.Tensor, eq: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Add EQ curves ``(batch, n_mels)`` to log-mel ``x`` ``(batch, n_mels, frames)`` and shift
    each clip's mel axis by ``shift[b]`` bands (edge bands repeat); returns a new tensor."""
    return shift_bands(x + eq.to(x.dtype).unsqueeze(-1), shift)
