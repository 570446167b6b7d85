"""Few-shot evaluation: the interval formula, the summary, seeded runs on stored embeddings."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import make_tiny_net

from fslcli import episodes as episodes_module
from fslcli.config import EpisodeConfig
from fslcli.embedding import embed_cached
from fslcli.episodes import draw_episodes, make_pool
from fslcli.evaluation import TEST_STREAM, ci95_half_width, evaluate, summarise
from fslcli.scoring import EpisodeScores, score_episodes


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


def test_summarise_counts_every_query_of_every_episode() -> None:
    scores = EpisodeScores(
        accuracy=np.array([0.75, 0.5]),
        loss=np.zeros(2),
        true=[["A", "A", "B", "B"], ["B", "B", "C", "C"]],
        pred=[["A", "B", "B", "B"], ["C", "B", "C", "B"]],
    )
    per_class, conf = summarise(scores, ["A", "B", "C"])
    assert conf.tolist() == [[1, 1, 0], [0, 3, 1], [0, 1, 1]]
    assert per_class == {"A": 0.5, "B": 0.75, "C": 0.5}
    assert math.isnan(summarise(scores, ["A", "B", "C", "D"])[0]["D"])  # never asked


def test_the_streams_are_the_episode_modules() -> None:
    from fslcli import evaluation

    assert (evaluation.TRAIN_STREAM, evaluation.VAL_STREAM, evaluation.TEST_STREAM) == (
        episodes_module.TRAIN_STREAM,
        episodes_module.VAL_STREAM,
        episodes_module.TEST_STREAM,
    )
    assert len({evaluation.TRAIN_STREAM, evaluation.VAL_STREAM, evaluation.TEST_STREAM}) == 3


CFG = EpisodeConfig(3, 2, 3)


def test_evaluate_scores_the_seeded_test_episodes(folder_cache) -> None:
    net, pool = make_tiny_net(), make_pool(folder_cache.labels())
    result = evaluate(net, folder_cache, pool, CFG, episodes=12, seed=5, windows=2)
    # The episodes are the test stream's for this seed; each distinct clip is embedded once, from
    # two windows, and the episodes are scored on those embeddings.
    drawn = draw_episodes(pool, CFG, 12, 5, TEST_STREAM)
    ids = sorted({int(i) for ep in drawn for i in np.concatenate([ep.support.ravel(), ep.query.ravel()])})
    assert result.clips_embedded == len(ids) < 12 * CFG.ways * CFG.clips_per_class  # each clip once
    by_hand = score_episodes(
        net, embed_cached(net, folder_cache, ids, windows=2), {c: k for k, c in enumerate(ids)}, drawn
    )
    np.testing.assert_array_equal(result.accuracies, by_hand.accuracy)
    per_class, conf = summarise(by_hand, list(pool))
    np.testing.assert_array_equal(result.confusion, conf)
    assert result.per_class == pytest.approx(per_class, nan_ok=True)
    # and the summary is consistent with itself
    assert result.episodes == 12 and result.accuracies.shape == (12,)
    assert result.classes == sorted(set(folder_cache.labels()))
    assert result.confusion.sum() == 12 * CFG.ways * CFG.queries
    assert result.mean_accuracy == pytest.approx(result.accuracies.mean())
    assert result.ci95_half_width == pytest.approx(ci95_half_width(result.accuracies))


def test_evaluate_is_deterministic(folder_cache) -> None:
    pool = make_pool(folder_cache.labels())
    a = evaluate(make_tiny_net(), folder_cache, pool, CFG, episodes=6, seed=5)
    b = evaluate(make_tiny_net(), folder_cache, pool, CFG, episodes=6, seed=5)
    np.testing.assert_array_equal(a.accuracies, b.accuracies)
    np.testing.assert_array_equal(a.confusion, b.confusion)


def test_evaluate_with_groups_keeps_support_and_query_apart(folder_cache, monkeypatch: pytest.MonkeyPatch) -> None:
    # Clips in pairs of one source group: grouped episodes never put a pair on both sides.
    from fslcli import evaluation

    pool = make_pool(folder_cache.labels())
    groups = np.arange(len(folder_cache)) // 2
    seen = []
    real = evaluation.score_episodes

    def spy(net, emb, position, drawn):
        seen.extend(drawn)
        return real(net, emb, position, drawn)

    monkeypatch.setattr(evaluation, "score_episodes", spy)
    evaluate(make_tiny_net(), folder_cache, pool, CFG, episodes=10, seed=0, groups=groups)
    assert len(seen) == 10
    for ep in seen:
        for row in range(CFG.ways):
            assert not set(groups[ep.support[row]]) & set(groups[ep.query[row]])
