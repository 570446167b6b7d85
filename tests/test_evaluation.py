"""Few-shot evaluation: the interval formula, scoring on known embeddings, seeded runs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import make_tiny_net

from fslcli.config import EpisodeConfig
from fslcli.episodes import Episode, draw_episodes, make_pool
from fslcli.evaluation import (
    TEST_STREAM,
    VAL_STREAM,
    ci95_half_width,
    clip_windows,
    evaluate,
    onset_sample,
    score_episodes,
    summarise,
    window_starts,
)


@pytest.mark.parametrize("n", [2, 10, 1000])
def test_ci95_half_width_formula(rng: np.random.Generator, n: int) -> None:
    acc = rng.uniform(0, 1, n)
    mean = acc.mean()
    std = math.sqrt(((acc - mean) ** 2).sum() / (n - 1))  # sample standard deviation
    assert ci95_half_width(acc) == pytest.approx(1.96 * std / math.sqrt(n), rel=1e-12)


def test_ci95_hand_computed_and_degenerate() -> None:
    # [0, 1]: mean 0.5, sample std sqrt(0.5) -> 1.96 * sqrt(0.5) / sqrt(2) = 0.98
    assert ci95_half_width(np.array([0.0, 1.0])) == pytest.approx(0.98)
    assert ci95_half_width(np.full(5, 0.8)) == 0.0
    assert math.isnan(ci95_half_width(np.array([0.7])))


def separable(rng: np.random.Generator, labels: list[str], dim: int = 8) -> torch.Tensor:
    """Each class a tight cluster around a distant corner."""
    names = sorted(set(labels))
    centres = {c: 10.0 * np.eye(dim)[k] for k, c in enumerate(names)}
    return torch.from_numpy(
        np.stack([centres[lab] + 0.1 * rng.standard_normal(dim) for lab in labels]).astype(np.float32)
    )


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_perfectly_separable_embeddings_score_one(rng: np.random.Generator, distance: str) -> None:
    labels = [c for c in "ABCDE" for _ in range(8)]
    emb = separable(rng, labels)
    pool = make_pool(labels)
    episodes = draw_episodes(pool, EpisodeConfig(4, 2, 3), 20, seed=0, stream=TEST_STREAM)
    net = make_tiny_net(distance=distance)
    scores = score_episodes(net, emb, {i: i for i in range(len(labels))}, episodes)
    assert scores.accuracy.shape == (20,)
    assert (scores.accuracy == 1.0).all()
    assert scores.true == scores.pred
    assert all(len(row) == 4 * 3 for row in scores.true)


def test_score_episodes_hand_computed(tiny_net) -> None:
    # 1-d embeddings (padded): support A at 0, B at 10; queries A at 1 and 9 (wrong), B at 10.5 and 6.
    values = {0: 0.0, 1: 10.0, 2: 1.0, 3: 9.0, 4: 10.5, 5: 6.0}
    emb = torch.zeros(6, 3)
    for i, v in values.items():
        emb[i, 0] = v
    ep = Episode(classes=("A", "B"), support=np.array([[0], [1]]), query=np.array([[2, 3], [4, 5]]))
    scores = score_episodes(tiny_net, emb, {i: i for i in range(6)}, [ep])
    assert scores.accuracy.tolist() == [0.75]
    assert scores.true == [["A", "A", "B", "B"]]
    assert scores.pred == [["A", "B", "B", "B"]]
    per_class, conf = summarise(scores, ["A", "B"])
    assert per_class == {"A": 0.5, "B": 1.0}
    assert conf.tolist() == [[1, 1], [0, 2]]


def test_score_episodes_uses_the_position_map(tiny_net) -> None:
    emb = torch.tensor([[10.0, 0.0], [0.0, 0.0], [9.0, 0.0], [1.0, 0.0]])  # rows for clips 40, 10, 41, 11
    position = {40: 0, 10: 1, 41: 2, 11: 3}
    ep = Episode(classes=("low", "high"), support=np.array([[10], [40]]), query=np.array([[11], [41]]))
    assert score_episodes(tiny_net, emb, position, [ep]).accuracy.tolist() == [1.0]


def test_score_episodes_finishes_each_episode_with_its_own_support_set(rng: np.random.Generator) -> None:
    # finished=False: backbone embeddings in, each episode put through finish_episode; the
    # same as finishing every episode by hand and scoring the results as finished.
    labels = [c for c in "ABCD" for _ in range(12)]
    pool = make_pool(labels)
    emb = torch.from_numpy(rng.standard_normal((len(labels), 16)).astype(np.float32))
    emb += 3.0 * torch.eye(16)[[ord(c) - ord("A") for c in labels]]
    net = make_tiny_net(support_cov_weight=0.5)
    net.calibrate(emb, torch.as_tensor([ord(c) - ord("A") for c in labels]))
    position = {i: i for i in range(len(labels))}
    for shots in (3, 1):
        episodes = draw_episodes(
            pool, EpisodeConfig(3, shots, 4), 230, seed=1, stream=TEST_STREAM
        )  # more than one chunk
        got = score_episodes(net, emb, position, episodes, finished=False)
        support_labels = torch.arange(3).repeat_interleave(shots)
        by_hand = []
        for ep in episodes:
            s, q = net.finish_episode(emb[ep.support.reshape(-1)], emb[ep.query.reshape(-1)], support_labels)
            rows = torch.cat([s, q])
            ids = list(ep.support.reshape(-1)) + list(ep.query.reshape(-1))
            by_hand.append(score_episodes(net, rows, {int(c): k for k, c in enumerate(ids)}, [ep]).pred[0])
        assert got.pred == by_hand
    # adapted and plain 3-shot scoring differ somewhere: the support set does change the space
    plain = score_episodes(
        net,
        net.finish(emb),
        position,
        episodes=draw_episodes(pool, EpisodeConfig(3, 3, 4), 230, seed=1, stream=TEST_STREAM),
    )
    adapted = score_episodes(
        net, emb, position, draw_episodes(pool, EpisodeConfig(3, 3, 4), 230, seed=1, stream=TEST_STREAM), finished=False
    )
    assert not np.allclose(plain.loss, adapted.loss)


def test_score_no_episodes(tiny_net) -> None:
    scores = score_episodes(tiny_net, torch.zeros(0, 2), {}, [])
    assert scores.accuracy.size == 0 and scores.true == []


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


def test_clip_windows_start_at_the_onset(tmp_path: Path) -> None:
    from fslcli.datasets.folder import read_folder
    from fslcli.features import open_cache

    silence, note = np.zeros(8000, np.float32), 0.5 * np.sin(np.arange(32000) * 0.05).astype(np.float32)
    (tmp_path / "d" / "a").mkdir(parents=True)
    sf.write(tmp_path / "d" / "a" / "late.wav", np.concatenate([silence, note]), 16000, subtype="FLOAT")
    cache, _ = open_cache(read_folder(tmp_path / "d").clips, 16000, tmp_path / "cache")
    wins, _ = clip_windows(cache, [0], 16000, 1)
    np.testing.assert_array_equal(wins[0], cache.excerpt(0, 7936, 16000))  # the 256-sample frame the note starts in


def test_clip_windows_shapes(folder_cache) -> None:
    excerpt = 4000
    wins, owners = clip_windows(folder_cache, [3, 0], excerpt, 3)
    per_clip = [len(window_starts(int(folder_cache.lengths[i]), excerpt, 3)) for i in (3, 0)]
    assert wins.shape == (sum(per_clip), excerpt)
    assert owners.tolist() == [0] * per_clip[0] + [1] * per_clip[1]
    np.testing.assert_array_equal(wins[0], folder_cache.excerpt(3, 0, excerpt))


def run_eval(folder_cache, seed: int, n: int = 12, cfg: EpisodeConfig = EpisodeConfig(3, 2, 3)):
    pool = make_pool(folder_cache.labels())
    return evaluate(make_tiny_net(), folder_cache, pool, cfg, n, seed=seed, n_windows=2)


def test_evaluate_is_deterministic_and_consistent(folder_cache) -> None:
    cfg = EpisodeConfig(3, 2, 3)
    a = run_eval(folder_cache, seed=5, cfg=cfg)
    b = run_eval(folder_cache, seed=5, cfg=cfg)
    np.testing.assert_array_equal(a.accuracies, b.accuracies)
    np.testing.assert_array_equal(a.confusion, b.confusion)
    assert a.mean_accuracy == b.mean_accuracy and a.per_class == b.per_class
    assert a.episodes == 12 and a.accuracies.shape == (12,)
    assert a.classes == sorted(set(folder_cache.labels()))
    assert a.confusion.shape == (4, 4)
    assert a.confusion.sum() == 12 * cfg.ways * cfg.queries
    assert a.mean_accuracy == pytest.approx(a.accuracies.mean())
    assert a.ci95_half_width == pytest.approx(ci95_half_width(a.accuracies))
    for k, c in enumerate(a.classes):
        if a.confusion[k].sum():
            assert a.per_class[c] == pytest.approx(a.confusion[k, k] / a.confusion[k].sum())
    assert 0 < a.clips_embedded <= len(folder_cache)


def test_evaluate_episodes_depend_on_seed_and_stream(folder_cache) -> None:
    pool = make_pool(folder_cache.labels())
    cfg = EpisodeConfig(3, 2, 3)
    base = draw_episodes(pool, cfg, 5, seed=0, stream=TEST_STREAM)
    other_seed = draw_episodes(pool, cfg, 5, seed=1, stream=TEST_STREAM)
    other_stream = draw_episodes(pool, cfg, 5, seed=0, stream=VAL_STREAM)
    assert draw_episodes(pool, cfg, 5, seed=0, stream=TEST_STREAM)[4].query.tolist() == base[4].query.tolist()
    assert [e.query.tolist() for e in base] != [e.query.tolist() for e in other_seed]
    assert [e.query.tolist() for e in base] != [e.query.tolist() for e in other_stream]
