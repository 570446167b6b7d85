"""Decoding and the on-disk waveform cache: built once, reused, invalidated, never half-written."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from fslcli import features
from fslcli.datasets.base import Clip
from fslcli.features import DecodeError, clear_caches, decode_audio, list_caches, open_cache

SR = 16_000


def write_clips(root: Path, rng: np.random.Generator, lengths: list[int]) -> list[Clip]:
    root.mkdir(parents=True, exist_ok=True)
    clips = []
    for k, n in enumerate(lengths):
        path = root / f"c{k}.wav"
        sf.write(path, (0.3 * rng.standard_normal(n)).astype(np.float32), SR, subtype="FLOAT")
        clips.append(Clip(path=path, label=f"class{k % 2}", fold=k % 5))
    return clips


@pytest.fixture
def counting_decode(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every decode_audio call the cache makes, by path."""
    calls: list[Path] = []
    real = features.decode_audio

    def counted(path: Path, sample_rate: int) -> np.ndarray:
        calls.append(Path(path))
        return real(path, sample_rate)

    monkeypatch.setattr(features, "decode_audio", counted)
    return calls


def test_build_then_reuse_without_decoding(
    tmp_path: Path, rng: np.random.Generator, counting_decode: list[Path]
) -> None:
    clips = write_clips(tmp_path / "audio", rng, [1600, 3200, 800])
    cache, built = open_cache(clips, SR, tmp_path / "cache")
    assert built is True and len(counting_decode) == 3
    assert len(cache) == 3 and cache.skipped == []
    assert cache.lengths.tolist() == [1600, 3200, 800]
    for i, clip in enumerate(clips):
        expected, _ = sf.read(clip.path, dtype="float32")
        np.testing.assert_array_equal(cache.excerpt(i, 0, int(cache.lengths[i])), expected)
    assert cache.labels() == ["class0", "class1", "class0"]

    again, built_again = open_cache(clips, SR, tmp_path / "cache")
    assert built_again is False
    assert len(counting_decode) == 3  # nothing decoded the second time
    assert again.root == cache.root
    np.testing.assert_array_equal(np.asarray(again.waves), np.asarray(cache.waves))
    assert [c.path for c in again.clips] == [c.path for c in clips]


def test_changed_file_invalidates(tmp_path: Path, rng: np.random.Generator) -> None:
    clips = write_clips(tmp_path / "audio", rng, [1600, 1600])
    first, _ = open_cache(clips, SR, tmp_path / "cache")
    new = np.full(2400, 0.25, dtype=np.float32)
    sf.write(clips[1].path, new, SR, subtype="FLOAT")
    st = os.stat(clips[1].path)
    os.utime(clips[1].path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    second, built = open_cache(clips, SR, tmp_path / "cache")
    assert built is True and second.root != first.root
    np.testing.assert_array_equal(second.excerpt(1, 0, 2400), new)


def test_sample_rate_change_invalidates(tmp_path: Path, rng: np.random.Generator) -> None:
    clips = write_clips(tmp_path / "audio", rng, [1600])
    a, _ = open_cache(clips, SR, tmp_path / "cache")
    b, built = open_cache(clips, 8000, tmp_path / "cache")
    assert built is True and b.root != a.root
    assert b.sample_rate == 8000 and b.lengths.tolist() == [800]
    assert {e.sample_rate for e in list_caches(tmp_path / "cache")} == {SR, 8000}


def test_crash_mid_build_leaves_no_cache_and_next_open_builds_fresh(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    clips = write_clips(tmp_path / "audio", rng, [1600, 1600, 1600, 1600])
    cache_dir = tmp_path / "cache"
    real = features.decode_audio

    def crashing(path: Path, sample_rate: int) -> np.ndarray:
        if Path(path) == clips[2].path:
            raise KeyboardInterrupt  # Ctrl+C while the third file decodes
        return real(path, sample_rate)

    monkeypatch.setattr(features, "decode_audio", crashing)
    with pytest.raises(KeyboardInterrupt):
        open_cache(clips, SR, cache_dir, workers=1)
    assert list(cache_dir.glob("waves-*")) == []  # nothing under a final name
    assert list(cache_dir.iterdir()) == []  # and the temporary build is gone too
    assert list_caches(cache_dir) == []

    monkeypatch.setattr(features, "decode_audio", real)
    cache, built = open_cache(clips, SR, cache_dir)
    assert built is True and len(cache) == 4 and cache.skipped == []
    assert cache.lengths.tolist() == [1600] * 4


def test_half_written_cache_under_final_name_is_rebuilt(tmp_path: Path, rng: np.random.Generator) -> None:
    clips = write_clips(tmp_path / "audio", rng, [1600, 800])
    cache, _ = open_cache(clips, SR, tmp_path / "cache")
    (cache.root / "manifest.json").write_text("{ truncated", encoding="utf-8")
    again, built = open_cache(clips, SR, tmp_path / "cache")
    assert built is True and again.lengths.tolist() == [1600, 800]


@pytest.mark.parametrize(("start", "length"), [(0, 1000), (300, 400), (399, 10), (5000, 8)])
def test_excerpt_pads_short_clips_with_zeros(tmp_path: Path, rng: np.random.Generator, start: int, length: int) -> None:
    clips = write_clips(tmp_path / "audio", rng, [400])
    cache, _ = open_cache(clips, SR, tmp_path / "cache")
    full = cache.excerpt(0, 0, 400)
    got = cache.excerpt(0, start, length)
    assert got.shape == (length,) and got.dtype == np.float32
    s = min(start, 399)  # a start past the end is clamped to the last sample
    take = min(length, 400 - s)
    np.testing.assert_array_equal(got[:take], full[s : s + take])
    assert not got[take:].any()


def test_clip_is_the_whole_clip(tmp_path: Path, rng: np.random.Generator) -> None:
    clips = write_clips(tmp_path / "audio", rng, [400, 700])
    cache, _ = open_cache(clips, SR, tmp_path / "cache")
    assert cache.clip(1).shape == (700,)
    np.testing.assert_array_equal(cache.clip(1), cache.excerpt(1, 0, 700))


def test_undecodable_file_is_skipped_with_a_reason(tmp_path: Path, rng: np.random.Generator) -> None:
    clips = write_clips(tmp_path / "audio", rng, [1600, 800])
    bad = tmp_path / "audio" / "bad.wav"
    bad.write_bytes(b"this is not audio at all" * 10)
    empty = tmp_path / "audio" / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), SR)
    all_clips = [clips[0], Clip(path=bad, label="class0"), clips[1], Clip(path=empty, label="class1")]
    cache, _ = open_cache(all_clips, SR, tmp_path / "cache")
    assert [c.path for c in cache.clips] == [clips[0].path, clips[1].path]
    reasons = dict(cache.skipped)
    assert set(reasons) == {str(bad), str(empty)}
    assert "not decodable" in reasons[str(bad)]
    assert "empty" in reasons[str(empty)]


def test_decode_error_for_non_audio(tmp_path: Path) -> None:
    p = tmp_path / "notes.wav"
    p.write_text("hello")
    with pytest.raises(DecodeError, match="not decodable"):
        decode_audio(p, SR)


@pytest.mark.parametrize("sr", [44_100, 8_000, 16_000])
def test_decode_resamples_to_the_target_rate(tmp_path: Path, sr: int) -> None:
    t = np.arange(sr) / sr  # one second
    p = tmp_path / f"tone_{sr}.wav"
    sf.write(p, (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sr, subtype="FLOAT")
    y = decode_audio(p, SR)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - SR) <= 1
    # still a 440 Hz tone of the same level
    spectrum = np.abs(np.fft.rfft(y[: SR // 2] * np.hanning(SR // 2)))
    assert abs(np.argmax(spectrum) * 2 - 440) <= 2
    assert np.sqrt(np.mean(y[1000:-1000] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)


def test_decode_stereo_to_mono(tmp_path: Path, rng: np.random.Generator) -> None:
    left = (0.4 * rng.standard_normal(1000)).astype(np.float32)
    right = (0.2 * rng.standard_normal(1000)).astype(np.float32)
    p = tmp_path / "stereo.wav"
    sf.write(p, np.stack([left, right], axis=1), SR, subtype="FLOAT")
    np.testing.assert_allclose(decode_audio(p, SR), (left + right) / 2, atol=1e-7)


def test_decode_replaces_non_finite_samples(tmp_path: Path) -> None:
    p = tmp_path / "nan.wav"
    sf.write(p, np.array([0.1, np.nan, np.inf, -np.inf, 0.2], dtype=np.float32), SR, subtype="FLOAT")
    np.testing.assert_array_equal(decode_audio(p, SR), np.array([0.1, 0, 0, 0, 0.2], dtype=np.float32))


def test_list_and_clear_caches(tmp_path: Path, rng: np.random.Generator) -> None:
    clips = write_clips(tmp_path / "audio", rng, [1600, 800])
    cache_dir = tmp_path / "cache"
    open_cache(clips, SR, cache_dir)
    (cache_dir / ".waves-leftover.tmp-x").mkdir()  # a partial build from a killed process
    (entry,) = list_caches(cache_dir)
    assert entry.clips == 2 and entry.sample_rate == SR and entry.bytes >= 2400 * 4
    freed = clear_caches(cache_dir)
    assert freed >= 2400 * 4
    assert list(cache_dir.iterdir()) == []
    assert list_caches(cache_dir) == [] and clear_caches(tmp_path / "nowhere") == 0


def test_default_cache_dir_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FSL_CACHE_DIR", str(tmp_path / "c"))
    assert features.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("FSL_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert features.default_cache_dir() == tmp_path / "xdg" / "fslcli"
