"""Embeddings and predictions on the user's own recordings, of any length."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import SR, make_tiny_net, synth_tone

from fslcli.errors import DataError
from fslcli.inference import (
    MAX_WINDOWS,
    calibrate_threshold,
    collect_audio,
    embed_files,
    predict,
    sliding_windows,
    support_set,
)


@pytest.mark.parametrize(
    ("n", "expected_starts"),
    [
        (10_000, [0, 2000, 4000, 6000]),  # hop = half an excerpt
        (9_000, [0, 2000, 4000, 5000]),  # plus one window flush with the end
        (4_000, [0]),
    ],
)
def test_sliding_windows_long_audio(n: int, expected_starts: list[int]) -> None:
    audio = np.arange(n, dtype=np.float32)
    wins = sliding_windows(audio, 4000)
    assert wins.shape == (len(expected_starts), 4000) and wins.dtype == np.float32
    assert wins[:, 0].tolist() == expected_starts
    assert wins[-1, -1] == n - 1  # the end of the recording is always covered


def test_sliding_windows_short_audio_is_zero_padded() -> None:
    audio = np.ones(300, dtype=np.float32)
    wins = sliding_windows(audio, 4000)
    assert wins.shape == (1, 4000)
    assert wins[0, :300].tolist() == [1.0] * 300 and not wins[0, 300:].any()


def test_sliding_windows_caps_the_count() -> None:
    audio = np.arange(100_000, dtype=np.float32)
    wins = sliding_windows(audio, 1000, max_windows=5)
    assert wins.shape == (5, 1000)
    assert wins[0, 0] == 0 and wins[-1, -1] == 99_999
    assert np.all(np.diff(wins[:, 0]) > 0)


def write(path: Path, audio: np.ndarray, sr: int = SR) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, sr, subtype="FLOAT" if path.suffix == ".wav" else None)
    return path


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
            wins = sliding_windows(audio, excerpt)
            expected = tiny_net.finish(tiny_net.embed(torch.from_numpy(wins)).mean(0)).numpy()
            np.testing.assert_allclose(res.embeddings[row], expected, rtol=1e-4, atol=1e-5)
    # 39 half-overlapping windows in 5 s, capped so long files stay cheap
    assert len(sliding_windows(sf.read(long)[0], excerpt)) == min(5 * SR // (excerpt // 2) - 1, MAX_WINDOWS)


def test_collect_audio(tmp_path: Path, rng: np.random.Generator) -> None:
    a = write(tmp_path / "d" / "x" / "b.wav", synth_tone(rng, "Odd", 0.1))
    b = write(tmp_path / "d" / "a.flac", synth_tone(rng, "Odd", 0.1))
    (tmp_path / "d" / "notes.txt").write_text("not audio")
    write(tmp_path / "d" / ".hidden.wav", synth_tone(rng, "Odd", 0.1))
    single = write(tmp_path / "single.wav", synth_tone(rng, "Odd", 0.1))
    assert collect_audio([tmp_path / "d", single]) == [b, a, single]
    with pytest.raises(DataError, match="does not exist"):
        collect_audio([tmp_path / "nope.wav"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no audio files"):
        collect_audio([tmp_path / "empty"])


def make_support(root: Path, rng: np.random.Generator, counts: dict[str, int]) -> Path:
    for name, n in counts.items():
        for k in range(n):
            write(root / name / f"{k}.wav", synth_tone(rng, name, 0.5))
    return root


def test_predict_with_folder_queries(tmp_path: Path, rng: np.random.Generator, tiny_net) -> None:
    support = make_support(tmp_path / "support", rng, {"Bright": 3, "Dark": 1, "Odd": 2})  # Dark: ONE example
    q = tmp_path / "queries"
    make_support(q, rng, {"Bright": 2, "Dark": 1})
    write(q / "unsorted" / "x.wav", synth_tone(rng, "Odd", 0.5))  # not a support class: no true class
    loose = write(tmp_path / "loose.wav", synth_tone(rng, "Noisy", 0.3))
    res = predict(tiny_net, support, [q, loose], top_k=3)
    assert res.classes == ["Bright", "Dark", "Odd"]
    assert res.threshold is None and res.skipped == []
    by_path = {p.path: p for p in res.predictions}
    assert len(by_path) == 5
    truth = {
        q / "Bright" / "0.wav": "Bright",
        q / "Bright" / "1.wav": "Bright",
        q / "Dark" / "0.wav": "Dark",
        q / "unsorted" / "x.wav": None,
        loose: None,
    }
    assert {p: pred.true_class for p, pred in by_path.items()} == truth
    for pred in res.predictions:
        assert pred.predicted in res.classes
        assert [c for c, _ in pred.top_k][0] == pred.predicted and len(pred.top_k) == 3
        assert sum(prob for _, prob in pred.top_k) == pytest.approx(1.0, abs=1e-5)
        assert pred.probability >= pred.runner_up_probability
        assert pred.runner_up != pred.predicted and pred.distance >= 0


def test_support_needs_two_classes(tmp_path: Path, rng: np.random.Generator, tiny_net) -> None:
    support = make_support(tmp_path / "support", rng, {"Bright": 2})
    with pytest.raises(DataError, match="at least 2 class subfolders"):
        predict(tiny_net, support, [support])
    with pytest.raises(DataError, match="is not a folder"):
        support_set(tmp_path / "missing")


def test_calibrate_threshold_hand_computed(tiny_net) -> None:
    # class a at 0, 1, 5 (leave-one-out prototypes 3, 2.5, 0.5); b has one example and is skipped.
    emb = torch.tensor([[0.0], [1.0], [5.0], [100.0]])
    thr = calibrate_threshold(tiny_net, emb, ["a", "a", "a", "b"])
    assert thr == pytest.approx(max(3.0**2, 2.5**2, 4.5**2))
    with pytest.raises(DataError, match="at least 2 support recordings"):
        calibrate_threshold(tiny_net, emb[:2], ["a", "b"])


def test_embed_files_with_onset_windows_embeds_as_eval_does(tmp_path: Path, tiny_net) -> None:
    # --windows N: a file is embedded from N windows, the first at its onset, exactly as
    # `fsl eval` embeds a cached clip (clip_windows), so both see the same excerpts.
    from fslcli.datasets.folder import read_folder
    from fslcli.evaluation import clip_windows, embed_windows
    from fslcli.features import open_cache

    note = (0.5 * np.sin(np.arange(3 * SR) * 0.07)).astype(np.float32)
    late = write(tmp_path / "d" / "a" / "late.wav", np.concatenate([np.zeros(SR // 2, np.float32), note]))
    short = write(tmp_path / "d" / "a" / "short.wav", note[: SR // 8])
    excerpt = tiny_net.audio.excerpt_samples
    cache, _ = open_cache(read_folder(tmp_path / "d").clips, SR, tmp_path / "cache")
    for n in (1, 3):
        got = embed_files(tiny_net, [late, short], windows=n).embeddings
        order = [k for p in (late, short) for k, c in enumerate(cache.clips) if Path(c.path) == p]
        wins, owners = clip_windows(cache, order, excerpt, n)
        expected = embed_windows(tiny_net, wins, owners, 2).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    # the default (sliding windows over the whole file) averages more of the file
    assert not np.allclose(
        embed_files(tiny_net, [late]).embeddings, embed_files(tiny_net, [late], windows=1).embeddings
    )


def level_and_brightness_net():
    """A model whose embedding is (10 x RMS level, 100 x zero-crossing rate): tones and noise sit far apart."""
    net = make_tiny_net(embedding_norm="none")

    def embed(waves: torch.Tensor) -> torch.Tensor:
        rms = waves.pow(2).mean(1).sqrt()
        zcr = (torch.sign(waves[:, 1:]) != torch.sign(waves[:, :-1])).float().mean(1)
        return torch.stack([10 * rms, 100 * zcr], dim=1)

    net.embed = embed
    net.finish = lambda emb: emb  # compared as computed
    net.dim = 2
    return net


def tone(freq: float, amp: float, seconds: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_reject_marks_a_far_query_unknown(tmp_path: Path, rng: np.random.Generator) -> None:
    net = level_and_brightness_net()
    support = tmp_path / "support"
    for k, amp in enumerate([0.3, 0.4, 0.5]):
        write(support / "low" / f"{k}.wav", tone(220, amp))
        write(support / "high" / f"{k}.wav", tone(1760, amp))
    near = write(tmp_path / "q" / "near.wav", tone(220, 0.4))
    far = write(tmp_path / "q" / "far.wav", (0.4 * rng.uniform(-1, 1, SR // 2)).astype(np.float32))
    plain = predict(net, support, [near, far])
    assert {p.path.name: p.predicted for p in plain.predictions} == {"near.wav": "low", "far.wav": "high"}
    res = predict(net, support, [near, far], reject=True)
    assert res.threshold is not None and 0 < res.threshold < 10
    got = {p.path.name: p for p in res.predictions}
    assert got["near.wav"].predicted == "low" and got["near.wav"].distance <= res.threshold
    assert got["far.wav"].predicted == "unknown" and got["far.wav"].distance > 100 * res.threshold
