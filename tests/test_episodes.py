"""The seeded episode sampler and the pool checks."""

from __future__ import annotations

import numpy as np
import pytest

from fslcli.config import EpisodeConfig
from fslcli.episodes import check_pool, episode_rng, make_pool, sample_episode, sample_episodes
from fslcli.errors import EpisodeError


@pytest.fixture
def pool(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Six classes of 12 clips each, labels shuffled over 72 clip indices."""
    labels = [f"c{k}" for k in range(6) for _ in range(12)]
    return make_pool(list(rng.permutation(labels)))


def draw(pool, cfg, seed=0, index=0, rank=0, stream=0):
    return sample_episode(pool, cfg, episode_rng(seed, index, rank, stream))


def same(a, b) -> bool:
    return a.classes == b.classes and np.array_equal(a.support, b.support) and np.array_equal(a.query, b.query)


def test_make_pool_groups_indices_by_label() -> None:
    pool = make_pool(["a", "b", "a", "c", "b"])
    assert list(pool) == ["a", "b", "c"]
    assert pool["a"].tolist() == [0, 2] and pool["b"].tolist() == [1, 4]
    restricted = make_pool(["a", "b", "a", "c", "b"], indices=[0, 1, 3], classes=["c", "a", "missing"])
    assert list(restricted) == ["c", "a", "missing"]
    assert restricted["a"].tolist() == [0] and restricted["missing"].size == 0


@pytest.mark.parametrize(("ways", "shots", "queries"), [(5, 5, 7), (2, 1, 1), (6, 1, 0), (3, 4, 8)])
def test_shapes_and_disjoint_support_query(pool, ways: int, shots: int, queries: int) -> None:
    cfg = EpisodeConfig(ways, shots, queries)
    for i in range(5):
        ep = draw(pool, cfg, index=i)
        assert ep.support.shape == (ways, shots)
        assert ep.query.shape == (ways, queries)
        assert ep.ways == ways and len(set(ep.classes)) == ways
        assert not set(ep.support.ravel()) & set(ep.query.ravel())
        ids = np.concatenate([ep.support.ravel(), ep.query.ravel()])
        assert len(set(ids.tolist())) == ids.size  # no clip twice in one episode
        for row, label in enumerate(ep.classes):  # row k holds class k's clips only
            assert set(ep.support[row]) | set(ep.query[row]) <= set(pool[label].tolist())


def test_same_seed_same_episode(pool) -> None:
    cfg = EpisodeConfig(4, 2, 3)
    assert same(draw(pool, cfg, seed=7, index=3), draw(pool, cfg, seed=7, index=3))
    # episode i does not depend on which episodes were drawn before it
    assert same(sample_episodes(pool, cfg, 5, seed=7)[3], draw(pool, cfg, seed=7, index=3))


@pytest.mark.parametrize("change", [{"seed": 1}, {"index": 1}, {"rank": 1}, {"stream": 1}])
def test_any_change_of_seed_index_rank_or_stream_gives_another_episode(pool, change: dict) -> None:
    cfg = EpisodeConfig(4, 2, 3)
    base = {"seed": 0, "index": 0, "rank": 0, "stream": 0}
    assert not same(draw(pool, cfg, **base), draw(pool, cfg, **{**base, **change}))


def test_check_pool_names_class_and_both_numbers() -> None:
    pool = {"Violin": np.arange(30), "Bass Tuba": np.arange(30, 42)}
    with pytest.raises(EpisodeError) as exc:
        check_pool(pool, EpisodeConfig(ways=2, shots=5, queries=15), where="/data/x")
    msg = str(exc.value)
    assert "--shots 5 + --queries 15 needs 20" in msg
    assert "'Bass Tuba' has 12" in msg
    assert "/data/x" in msg


def test_check_pool_too_few_classes_lists_them() -> None:
    pool = {"A": np.arange(10), "B": np.arange(10, 20)}
    with pytest.raises(EpisodeError, match=r"--ways 3 needs 3 classes.*only 2.*A, B"):
        check_pool(pool, EpisodeConfig(ways=3, shots=1, queries=1))


@pytest.mark.parametrize(("ways", "shots", "queries"), [(0, 1, 1), (2, 0, 1), (2, 1, -1)])
def test_check_pool_rejects_non_positive_shape(ways: int, shots: int, queries: int) -> None:
    with pytest.raises(EpisodeError, match="at least"):
        check_pool({"A": np.arange(9), "B": np.arange(9)}, EpisodeConfig(ways, shots, queries))


def test_check_pool_accepts_exact_fit() -> None:
    check_pool({"A": np.arange(3), "B": np.arange(3, 6)}, EpisodeConfig(ways=2, shots=1, queries=2))
