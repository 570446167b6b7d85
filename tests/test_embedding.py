"""How audio becomes a vector: which windows of a clip or file, embedded and averaged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import SR, synth_tone

from fslcli.embedding import (
    ALL,
    MAX_WINDOWS,
    cached_windows,
    cut,
    embed_cached,
    embed_files,
    embed_windows,
    onset_sample,
    parse_windows,
    starts_of,
    window_starts,
)
from fslcli.errors import FslError


def write(path: Path, audio: np.ndarray, sr: int = SR) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, sr, subtype="FLOAT")
    return path


# --- which windows -----------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [("all", ALL), ("ALL", ALL), (" 3 ", 3), ("1", 1), (2, 2)])
def test_parse_windows(value: str | int, expected: int | str) -> None:
    assert parse_windows(value) == expected


@pytest.mark.parametrize("value", ["0", "-2", "three", "1.5", ""])
def test_parse_windows_refuses_with_the_way_out(value: str) -> None:
    with pytest.raises(FslError, match=rf"--windows {value}: give a number of windows \(1 or more\) or 'all'"):
        parse_windows(value)


@pytest.mark.parametrize(
    ("n", "excerpt", "windows", "expected"),
    [
        (800, 1000, 3, [0]),  # shorter than an excerpt
        (1000, 1000, 3, [0]),
        (3000, 1000, 1, [0]),
        (3000, 1000, 3, [0, 1000, 2000]),  # evenly spaced, the last ends at the clip's end
        (2000, 1000, 5, [0, 250, 500, 750, 1000]),
        (1100, 1000, 3, [0]),  # windows no closer than a quarter excerpt
        (1250, 1000, 3, [0, 250]),
    ],
)
def test_window_starts(n: int, excerpt: int, windows: int, expected: list[int]) -> None:
    starts = window_starts(n, excerpt, windows)
    assert starts == expected
    assert all(0 <= s <= max(0, n - excerpt) for s in starts)


@pytest.mark.parametrize(
    ("n", "excerpt", "windows", "onset", "expected"),
    [
        (3000, 1000, 1, 500, [500]),  # the one window starts at the onset
        (3000, 1000, 3, 1000, [1000, 1500, 2000]),  # spread from the onset to the end
        (3000, 1000, 1, 2500, [2000]),  # too late for a whole excerpt: moved back to fit
        (800, 1000, 3, 300, [0]),  # shorter than an excerpt
    ],
)
def test_window_starts_from_an_onset(n: int, excerpt: int, windows: int, onset: int, expected: list[int]) -> None:
    assert window_starts(n, excerpt, windows, onset) == expected


def test_onset_skips_leading_silence_and_noise(rng: np.random.Generator) -> None:
    note = np.sin(np.arange(8000) * 0.1).astype(np.float32)
    quiet = 1e-3 * rng.standard_normal(3000).astype(np.float32)  # 60 dB below the note
    assert onset_sample(np.concatenate([np.zeros(2560, np.float32), note])) == 2560
    assert onset_sample(np.concatenate([quiet[:2560], note])) == 2560
    assert onset_sample(note) == 0
    assert onset_sample(np.zeros(5000, np.float32)) == 0
    assert onset_sample(np.ones(100, np.float32)) == 0  # shorter than a frame


@pytest.mark.parametrize(
    ("n", "excerpt", "expected"),
    [
        (800, 1000, [0]),  # shorter than an excerpt: one, zero-padded
        (3000, 1000, [0, 1000, 2000]),  # a hop of one excerpt
        (3500, 1000, [0, 1000, 2000, 2500]),  # plus one flush with the end
    ],
)
def test_all_windows_cover_the_file_with_a_hop_of_one_excerpt(n: int, excerpt: int, expected: list[int]) -> None:
    assert starts_of(np.ones(n, np.float32), excerpt, ALL, SR) == expected


def test_all_windows_are_capped_and_evenly_spaced() -> None:
    n, excerpt = 1000 * (3 * MAX_WINDOWS), 1000
    starts = starts_of(np.ones(n, np.float32), excerpt, ALL, SR)
    assert len(starts) == MAX_WINDOWS
    assert starts[0] == 0 and starts[-1] == n - excerpt  # still from the start to the end
    gaps = np.diff(starts)
    assert gaps.min() >= 2 * excerpt and gaps.max() <= 4 * excerpt


def test_n_windows_start_at_the_onset() -> None:
    wave = np.concatenate([np.zeros(2560, np.float32), np.ones(8000, np.float32)])
    assert starts_of(wave, 4000, 1, SR) == [2560]
    assert starts_of(wave, 4000, 3, SR) == [2560, 4560, 6560]
    assert starts_of(wave[:3000], 4000, 1, SR) == [0]  # shorter than an excerpt


def test_cut_zero_pads_past_the_end() -> None:
    wave = np.arange(1, 11, dtype=np.float32)
    out = cut(wave, [0, 6], 6)
    assert out.dtype == np.float32
    assert out.tolist() == [[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 0, 0]]


def test_cached_windows_start_at_the_onset(tmp_path: Path) -> None:
    from fslcli.datasets.folder import read_folder
    from fslcli.features import open_cache

    silence, note = np.zeros(8000, np.float32), 0.5 * np.sin(np.arange(32000) * 0.05).astype(np.float32)
    write(tmp_path / "d" / "a" / "late.wav", np.concatenate([silence, note]))
    cache, _ = open_cache(read_folder(tmp_path / "d").clips, SR, tmp_path / "cache")
    wins, owners = cached_windows(cache, [0], 16000, 1)
    assert owners.tolist() == [0]
    np.testing.assert_array_equal(wins[0], cache.excerpt(0, 7936, 16000))  # the 256-sample frame the note starts in


def test_cached_windows_shapes_and_owners(folder_cache) -> None:
    excerpt = 4000
    wins, owners = cached_windows(folder_cache, [3, 0], excerpt, 3)
    per_clip = [len(starts_of(folder_cache.clip(i), excerpt, 3, SR)) for i in (3, 0)]
    assert per_clip == [3, 3]  # 0.6 s clips hold three 0.25 s windows
    assert wins.shape == (sum(per_clip), excerpt)
    assert owners.tolist() == [0] * per_clip[0] + [1] * per_clip[1]
    start = starts_of(folder_cache.clip(3), excerpt, 3, SR)[0]
    np.testing.assert_array_equal(wins[0], folder_cache.excerpt(3, start, excerpt))


# --- embedding ---------------------------------------------------------------------------------


def test_embed_windows_averages_each_items_windows(rng: np.random.Generator, tiny_net) -> None:
    windows = (0.1 * rng.standard_normal((7, tiny_net.audio.excerpt_samples))).astype(np.float32)
    owners = np.array([2, 0, 0, 2, 2, 1, 0])
    with torch.no_grad():
        each = tiny_net.embed(torch.from_numpy(windows))
    expected = torch.stack([each[owners == k].mean(dim=0) for k in range(3)])
    for batch_size in (128, 2):  # batching does not change the result
        got = embed_windows(tiny_net, windows, owners, 3, batch_size=batch_size)
        assert torch.allclose(got, expected, atol=1e-5)
    assert not embed_windows(tiny_net, windows, owners, 4)[3].any()  # an item without windows stays zero


def test_embed_files_of_different_lengths(tmp_path: Path, rng: np.random.Generator, tiny_net) -> None:
    long = write(tmp_path / "long.wav", synth_tone(rng, "Bright", seconds=5.0))
    short = write(tmp_path / "short.wav", synth_tone(rng, "Dark", seconds=0.2))
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"\x00garbage" * 20)
    res = embed_files(tiny_net, [long, bad, short], batch_size=4)  # small batches: several flushes
    assert res.paths == [long, short]
    assert [p for p, _ in res.skipped] == [bad] and "not decodable" in res.skipped[0][1]
    assert res.embeddings.shape == (2, tiny_net.dim) and res.embeddings.dtype == np.float32
    excerpt = tiny_net.audio.excerpt_samples
    with torch.no_grad():
        for row, path in enumerate([long, short]):
            audio, _ = sf.read(path, dtype="float32")
            wins = cut(audio, starts_of(audio, excerpt, ALL, SR), excerpt)
            assert len(wins) == (20 if path == long else 1)  # 5 s in 0.25 s windows; 0.2 s padded to one
            # the backbone's embedding, averaged over every window (finishing is the caller's)
            expected = tiny_net.embed(torch.from_numpy(wins)).mean(0).numpy()
            np.testing.assert_allclose(res.embeddings[row], expected, rtol=1e-4, atol=1e-5)


def test_embed_files_with_nothing_decodable_is_empty(tmp_path: Path, tiny_net) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    res = embed_files(tiny_net, [bad, tmp_path / "missing.wav"])
    assert res.embeddings.shape == (0, tiny_net.dim) and res.paths == []
    assert [p for p, _ in res.skipped] == [bad, tmp_path / "missing.wav"]


def test_a_file_embeds_as_the_same_clip_from_the_cache(tmp_path: Path, tiny_net) -> None:
    # --windows N: a file is embedded from the windows `fsl eval` takes from the cached clip.
    from fslcli.datasets.folder import read_folder
    from fslcli.features import open_cache

    note = (0.5 * np.sin(np.arange(3 * SR) * 0.07)).astype(np.float32)
    late = write(tmp_path / "d" / "a" / "late.wav", np.concatenate([np.zeros(SR // 2, np.float32), note]))
    short = write(tmp_path / "d" / "a" / "short.wav", note[: SR // 8])
    cache, _ = open_cache(read_folder(tmp_path / "d").clips, SR, tmp_path / "cache")
    order = [k for p in (late, short) for k, c in enumerate(cache.clips) if Path(c.path) == p]
    for windows in (1, 3, ALL):
        got = embed_files(tiny_net, [late, short], windows=windows).embeddings
        expected = embed_cached(tiny_net, cache, order, windows=windows).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
