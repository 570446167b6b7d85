"""The recording-chain augmentation: seeded, level-preserving, and only as often as asked."""

from __future__ import annotations

import numpy as np
import pytest

from fslcli.augment import RecordingChain, room_bank


@pytest.fixture(scope="module")
def chain() -> RecordingChain:
    return RecordingChain(16_000, seed=0, n_rooms=3)


def tones(n: int = 6) -> np.ndarray:
    t = np.arange(16_000) / 16_000
    return np.stack([0.3 * np.sin(2 * np.pi * (220 + 50 * k) * t) * np.exp(-3 * t) for k in range(n)]).astype(
        np.float32
    )


def test_rooms_are_seeded_and_start_at_the_direct_sound() -> None:
    a, b = room_bank(16_000, seed=1, n_rooms=2), room_bank(16_000, seed=1, n_rooms=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert all(x[0] == 1.0 and np.abs(x).max() == 1.0 and len(x) <= 0.6 * 16_000 for x in a)
    assert not np.array_equal(a[0][:100], room_bank(16_000, seed=2, n_rooms=1)[0][:100])


def test_chain_changes_the_sound_not_its_level(chain: RecordingChain) -> None:
    x = tones()
    y = chain(x, np.random.default_rng(0), probability=1.0)
    assert y.shape == x.shape and y.dtype == np.float32 and np.isfinite(y).all()
    rms = lambda a: np.sqrt(np.mean(np.square(a, dtype=np.float64), axis=1))  # noqa: E731
    np.testing.assert_allclose(rms(y), rms(x), rtol=1e-3)
    # Reverberation and noise fill the silence the dry tone decays into, and the waveform differs.
    assert np.all(np.abs(y[:, -1600:]).mean(axis=1) > np.abs(x[:, -1600:]).mean(axis=1))
    assert np.all(np.abs(np.corrcoef(x[0], y[0])[0, 1]) < 0.99)
    np.testing.assert_array_equal(y, chain(x, np.random.default_rng(0), probability=1.0))


def test_probability_decides_how_many_pass(chain: RecordingChain) -> None:
    x = tones(40)
    assert np.array_equal(chain(x, np.random.default_rng(0), probability=0.0), x)
    y = chain(x, np.random.default_rng(0), probability=0.5)
    changed = np.any(y != x, axis=1).sum()
    assert 10 <= changed <= 30
    np.testing.assert_array_equal(x, tones(40))  # the input is never changed in place
