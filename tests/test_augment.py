"""Training-time augmentation: the log-mel's EQ, band shifts and SpecAugment masks."""

from __future__ import annotations

import numpy as np
import torch

from fslcli.config import AugmentConfig
from fslcli.training.augment import (
    apply_spec_masks,
    augment_logmel,
    random_eq,
    shift_bands,
    spec_mask_params,
)


def test_apply_spec_masks_zeroes_exactly_the_masked_cells(rng: np.random.Generator) -> None:
    x = torch.from_numpy(rng.uniform(1, 2, (2, 1, 6, 8)).astype(np.float32))
    before = x.clone()
    tm = torch.tensor([[[2, 3]], [[0, 0]]])  # clip 0: frames 2..4; clip 1: none
    fm = torch.tensor([[[5, 1]], [[1, 2]]])  # clip 0: band 5; clip 1: bands 1..2
    y = apply_spec_masks(x, tm, fm)
    assert torch.equal(x, before)  # a new tensor; the input is untouched
    expected = before.clone()
    expected[0, 0, :, 2:5] = 0
    expected[0, 0, 5, :] = 0
    expected[1, 0, 1:3, :] = 0
    assert torch.equal(y, expected)


def test_spec_mask_params_are_seeded_and_in_range() -> None:
    aug = AugmentConfig(spec_time_masks=2, spec_freq_masks=1, time_mask_frames=5, freq_mask_bins=3)
    a = spec_mask_params(np.random.default_rng(3), 50, 16, 20, aug)
    b = spec_mask_params(np.random.default_rng(3), 50, 16, 20, aug)
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
    tm, fm = a
    assert tm.shape == (50, 2, 2) and fm.shape == (50, 1, 2)
    assert (tm[..., 1] <= 5).all() and (tm[..., 0] + tm[..., 1] <= 20).all()
    assert (fm[..., 1] <= 3).all() and (fm[..., 0] + fm[..., 1] <= 16).all()
    none = spec_mask_params(np.random.default_rng(3), 4, 16, 20, AugmentConfig(spec_time_masks=0, spec_freq_masks=0))
    assert none[0].shape == (4, 0, 2) and none[1].shape == (4, 0, 2)


def test_random_eq_curves_are_smooth_and_within_the_range() -> None:
    curves = random_eq(np.random.default_rng(0), 200, 64, max_db=6.0)
    assert curves.shape == (200, 64) and curves.dtype == np.float32
    in_db = curves / (np.log(10.0) / 10.0)  # natural-log power back to dB
    assert np.abs(in_db).max() <= 6.0 + 1e-4 and np.abs(in_db).max() > 5.0
    assert np.abs(np.diff(in_db, axis=1)).max() <= 12.0 / (63 / 3) + 1e-4  # piecewise linear through 4 points
    np.testing.assert_array_equal(curves, random_eq(np.random.default_rng(0), 200, 64, max_db=6.0))
    assert not random_eq(np.random.default_rng(0), 3, 64, max_db=0.0).any()


def test_shift_bands_moves_each_spectrogram_and_repeats_the_edge() -> None:
    x = torch.arange(5.0).reshape(1, 5, 1).repeat(2, 1, 3)  # (2, 5 bands, 3 frames)
    out = shift_bands(x, torch.tensor([1, -2]))
    assert out[0, :, 0].tolist() == [0, 0, 1, 2, 3]
    assert out[1, :, 0].tolist() == [2, 3, 4, 4, 4]


def test_augment_logmel_adds_the_eq_then_shifts() -> None:
    x = torch.zeros(2, 4, 3)
    eq = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.5, 0.5, 0.5, 0.5]])
    out = augment_logmel(x, eq, torch.tensor([1, 0]))
    assert out[0, :, 0].tolist() == [1.0, 1.0, 2.0, 3.0]
    assert out[1, :, 2].tolist() == [0.5] * 4
    assert not x.any()  # a new tensor
