"""The ISMIR 2022 few-shot tutorial's way of loading an episode, reimplemented for comparison.

The tutorial (music-fsl-zsl/tutorial, ``music_fsl/data.py`` and ``util.py``) decodes every
clip again for every episode: for each of the ``ways * (shots + queries)`` clips it reads the
file's duration, picks a random offset and has librosa decode and resample a 1 s excerpt.
:func:`load_excerpt` does the same; :func:`load_whole_then_crop` is the cruder variant that
decodes and resamples the whole clip, then crops.

Randomness is passed in (a :class:`random.Random`), unlike the tutorial's global ``random``.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _fit(audio: np.ndarray, length: int) -> np.ndarray:
    """``audio`` cut or zero-padded to ``(length,)`` float32."""
    out = np.zeros(length, dtype=np.float32)
    take = min(length, len(audio))
    out[:take] = audio[:take]
    return out


def load_excerpt(path: Path, duration: float, sample_rate: int, rng: random.Random) -> np.ndarray:
    """The tutorial's ``load_excerpt``: a random ``duration``-second excerpt, decoded and resampled now.

    Returns ``(round(duration * sample_rate),)``. Clips shorter than ``duration`` are
    zero-padded (the tutorial raises).
    """
    import librosa

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        total = librosa.get_duration(path=str(path))
        offset = rng.uniform(0.0, max(0.0, total - duration))
        audio, _ = librosa.load(str(path), sr=sample_rate, offset=offset, duration=duration, mono=True)
    return _fit(audio, int(round(duration * sample_rate)))


def load_whole_then_crop(path: Path, duration: float, sample_rate: int, rng: random.Random) -> np.ndarray:
    """``librosa.load`` of the whole clip at ``sample_rate``, then a random ``duration``-second crop."""
    import librosa

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        audio, _ = librosa.load(str(path), sr=sample_rate, mono=True)
    n = int(round(duration * sample_rate))
    start = rng.randint(0, len(audio) - n) if len(audio) > n else 0
    return _fit(audio[start:], n)


def tutorial_episode(
    paths: Sequence[Path], duration: float, sample_rate: int, rng: random.Random, whole_clip: bool = False
) -> np.ndarray:
    """Waveforms of one episode, loaded the tutorial's way: ``(len(paths), duration * sample_rate)``.

    ``paths`` are the episode's clips, support (class-major) then queries.
    """
    load = load_whole_then_crop if whole_clip else load_excerpt
    return np.stack([load(p, duration, sample_rate, rng) for p in paths])
