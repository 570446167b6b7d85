"""The seeded episode sampler and the pool checks."""

from __future__ import annotations

import numpy as np
import pytest

from fslcli.config import EpisodeConfig
from fslcli.episodes import (
    check_pool,
    draw_episodes,
    episode_rng,
    groups_can_split,
    make_pool,
    sample_episode,
    sample_split_episode,
)
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
    assert same(draw_episodes(pool, cfg, 5, seed=7, stream=0)[3], draw(pool, cfg, seed=7, index=3))


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


def grouped_pool(sizes: list[list[int]]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Classes c0, c1, ... whose clips fall into source groups of the given sizes."""
    groups, pool, start, gid = [], {}, 0, 0
    for k, class_sizes in enumerate(sizes):
        n = sum(class_sizes)
        pool[f"c{k}"] = np.arange(start, start + n)
        for size in class_sizes:
            groups += [gid] * size
            gid += 1
        start += n
    return pool, np.asarray(groups)


@pytest.mark.parametrize(("shots", "queries"), [(5, 15), (1, 15), (5, 5), (3, 1)])
def test_grouped_episodes_never_share_a_group(shots: int, queries: int) -> None:
    # Like the offline set's test instruments: 4 to 12 source samples, uneven.
    pool, groups = grouped_pool([[30, 30, 24, 24], [12] * 9, [40, 8, 8, 8, 8, 8, 8], [15, 15, 15, 15, 15, 9]])
    cfg = EpisodeConfig(4, shots, queries)
    episodes = draw_episodes(pool, cfg, 300, seed=3, stream=0, groups=groups)
    for ep in episodes:
        for row in range(cfg.ways):
            assert not set(groups[ep.support[row]]) & set(groups[ep.query[row]])
            assert len(set(ep.support[row])) == shots and len(set(ep.query[row])) == queries
    # Reproducible, and the support is not always from one group.
    again = draw_episodes(pool, cfg, 300, seed=3, stream=0, groups=groups)
    assert all(same(a, b) for a, b in zip(episodes, again, strict=True))
    if shots > 1:
        assert any(len(set(groups[ep.support[0]])) > 1 for ep in episodes)


def test_hard_group_splits_are_still_found() -> None:
    # Only the two small groups together leave 14 query clips: random support draws rarely do.
    pool, groups = grouped_pool([[3, 3, 14], [3, 3, 14]])
    cfg = EpisodeConfig(2, 5, 14)
    for ep in draw_episodes(pool, cfg, 20, seed=0, stream=0, groups=groups):
        for row in range(2):
            assert not set(groups[ep.support[row]]) & set(groups[ep.query[row]])


def test_groups_can_split() -> None:
    assert groups_can_split(np.array([0] * 3 + [1] * 3 + [2] * 14), 5, 14)
    assert not groups_can_split(np.array([0] * 3 + [1] * 3 + [2] * 14), 5, 15)
    assert not groups_can_split(np.zeros(40, dtype=int), 1, 1)  # one group: nothing on the other side
    assert groups_can_split(np.arange(2), 1, 1)


def test_too_few_groups_is_named() -> None:
    pool, groups = grouped_pool([[10, 10, 10], [40]])
    with pytest.raises(EpisodeError, match=r"'c1' has 1 source group\(s\) \(clips per group: 40\).*--group-by none"):
        check_pool(pool, EpisodeConfig(2, 5, 15), groups=groups)


def test_split_episodes_take_support_and_queries_from_their_own_pools() -> None:
    support = {"a": np.arange(0, 10), "b": np.arange(10, 20), "c": np.arange(20, 30)}
    query = {"a": np.arange(100, 104), "b": np.arange(104, 110), "c": np.arange(0)}
    ep = sample_split_episode(support, query, EpisodeConfig(2, 3, 4), np.random.default_rng(0))
    assert set(ep.classes) == {"a", "b"}  # c has no held-out clips
    for row, c in enumerate(ep.classes):
        assert set(ep.support[row]) <= set(support[c]) and set(ep.query[row]) <= set(query[c])
