"""Episodes and the seeded episode sampler.

An N-way K-shot episode draws N classes, then K support and Q query clips per class
(Snell et al., 2017). Episode ``i`` of rank ``r`` is drawn from a generator seeded with
``(seed, i, r)``, so the same seed gives the same episodes whatever ran before, and
distributed ranks see different episodes.

Grouped episodes: given each clip's source group (clips that share a recording), a class's
support and query clips never share a group, so no query is a louder copy or a transposition of
a support clip. The support is drawn uniformly among the draws that leave enough queries in
other groups.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fslcli.config import EpisodeConfig
from fslcli.errors import EpisodeError

#: Episode streams: training, validation and test episodes never share a generator.
TRAIN_STREAM, VAL_STREAM, TEST_STREAM = 0, 1, 2

#: A pool maps each class label to the indices (into a clip list) of its clips.
Pool = Mapping[str, np.ndarray]

#: Draws of a grouped class's support that are tried before its groups are split directly.
_GROUPED_TRIES = 50


@dataclass(frozen=True)
class Episode:
    """One episode, as clip indices.

    ``support``: ``(ways, shots)``; ``query``: ``(ways, queries)``; row ``k`` holds class
    ``classes[k]``.
    """

    classes: tuple[str, ...]
    support: np.ndarray
    query: np.ndarray

    @property
    def ways(self) -> int:
        return len(self.classes)


def episode_rng(seed: int, index: int, rank: int = 0, stream: int = 0) -> np.random.Generator:
    """The generator for episode ``index`` of ``rank``; ``stream`` separates uses (train, val, test)."""
    return np.random.default_rng([int(seed), int(stream), int(index), int(rank)])


def make_pool(
    labels: Sequence[str], indices: Sequence[int] | None = None, classes: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """Group clip indices by label, keeping only ``classes`` (in that order) when given."""
    idx = range(len(labels)) if indices is None else indices
    groups: dict[str, list[int]] = {}
    for i in idx:
        groups.setdefault(labels[i], []).append(int(i))
    order = list(classes) if classes is not None else sorted(groups)
    return {c: np.asarray(groups.get(c, []), dtype=np.int64) for c in order}


def check_pool(
    pool: Pool, cfg: EpisodeConfig, what: str = "episodes", where: str = "", groups: np.ndarray | None = None
) -> None:
    """Refuse an episode shape the pool cannot fill, naming the class and both numbers.

    With ``groups`` (each clip's source group, indexed like the pool's clip indices), also
    refuse a class whose groups cannot be split into ``shots`` support and ``queries`` query clips.
    """
    if cfg.ways < 1 or cfg.shots < 1 or cfg.queries < 0:
        raise EpisodeError(
            f"--ways and --shots must be at least 1 and --queries at least 0 (got {cfg.ways}, {cfg.shots}, {cfg.queries})"
        )
    where_txt = f" in {where}" if where else ""
    if len(pool) < cfg.ways:
        raise EpisodeError(
            f"--ways {cfg.ways} needs {cfg.ways} classes for {what}, but only {len(pool)} are available{where_txt} "
            f"({', '.join(pool) or 'none'}); lower --ways or add classes"
        )
    need = cfg.clips_per_class
    for label, ids in pool.items():
        if len(ids) < need:
            raise EpisodeError(
                f"--shots {cfg.shots} + --queries {cfg.queries} needs {need} clips per class for {what}; "
                f"{label!r} has {len(ids)}{where_txt}; lower --shots/--queries or add recordings"
            )
        if groups is not None and not groups_can_split(groups[ids], cfg.shots, cfg.queries):
            sizes = np.unique(groups[ids], return_counts=True)[1]
            raise EpisodeError(
                f"{label!r} has {len(sizes)} source group(s){where_txt} (clips per group: "
                f"{', '.join(map(str, sorted(sizes.tolist(), reverse=True)))}), too few for {what} whose "
                f"{cfg.shots} support and {cfg.queries} query clips come from different groups; lower "
                "--shots/--queries, leave the class out, or use --group-by none"
            )


def groups_can_split(groups: np.ndarray, shots: int, queries: int) -> bool:
    """Whether clips with these ``(n,)`` source groups can give ``shots`` support clips and
    ``queries`` query clips from disjoint groups: some set of groups holds between ``shots`` and
    ``n - queries`` clips (subset sums, as a bitset)."""
    sizes = np.unique(groups, return_counts=True)[1]
    reachable = 1
    for size in sizes.tolist():
        reachable |= reachable << size
    window = ((1 << (len(groups) - queries + 1)) - 1) >> shots << shots if len(groups) >= queries else 0
    return bool(reachable & window)


def sample_episode(
    pool: Pool, cfg: EpisodeConfig, rng: np.random.Generator, groups: np.ndarray | None = None
) -> Episode:
    """Draw one episode from ``pool`` with ``rng`` (call :func:`check_pool` first).

    With ``groups``, each class's support and query clips come from different source groups
    (:func:`grouped_draw`); without, any clips (the same draws as before groups existed).
    """
    names = list(pool)
    chosen = rng.choice(len(names), size=cfg.ways, replace=False)
    classes = tuple(names[int(k)] for k in chosen)
    support = np.empty((cfg.ways, cfg.shots), dtype=np.int64)
    query = np.empty((cfg.ways, cfg.queries), dtype=np.int64)
    for row, label in enumerate(classes):
        ids = np.asarray(pool[label])
        if groups is None:
            pick = ids[rng.choice(len(ids), size=cfg.clips_per_class, replace=False)]
            support[row], query[row] = pick[: cfg.shots], pick[cfg.shots :]
        else:
            s, q = grouped_draw(groups[ids], cfg.shots, cfg.queries, rng)
            support[row], query[row] = ids[s], ids[q]
    return Episode(classes=classes, support=support, query=query)


def grouped_draw(
    groups: np.ndarray, shots: int, queries: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Positions of ``shots`` support and ``queries`` query clips among clips with source groups
    ``groups`` ``(n,)``, no group on both sides.

    The support is ``shots`` clips drawn uniformly, redrawn while the other groups hold fewer than
    ``queries`` clips; the queries are drawn uniformly from those groups. When redraws keep failing
    (support sets that leave enough queries are rare), groups are taken in a random order until
    the support side is full. Raises EpisodeError when no split is found (see :func:`check_pool`).
    """
    for _ in range(_GROUPED_TRIES):
        support = rng.choice(len(groups), size=shots, replace=False)
        free = np.flatnonzero(~np.isin(groups, groups[support]))
        if len(free) >= queries:
            return support, free[rng.choice(len(free), size=queries, replace=False)]
    names = np.unique(groups)
    for _ in range(_GROUPED_TRIES):
        order = names[rng.permutation(len(names))]
        sizes = np.array([np.count_nonzero(groups == g) for g in order])
        k = int(np.searchsorted(np.cumsum(sizes), shots)) + 1
        side = np.isin(groups, order[:k])
        if np.count_nonzero(~side) >= queries:
            inside, outside = np.flatnonzero(side), np.flatnonzero(~side)
            return (
                inside[rng.choice(len(inside), size=shots, replace=False)],
                outside[rng.choice(len(outside), size=queries, replace=False)],
            )
    raise EpisodeError(
        f"could not split {len(names)} source groups into {shots} support and {queries} query clips; "
        "lower --shots/--queries or use --group-by none"
    )


def draw_episodes(
    pool: Pool,
    cfg: EpisodeConfig,
    n: int,
    seed: int,
    stream: int,
    *,
    groups: np.ndarray | None = None,
    what: str = "episodes",
) -> list[Episode]:
    """``n`` episodes, episode ``i`` drawn from ``episode_rng(seed, i, 0, stream)`` (grouped with
    ``groups``); checks the pool first."""
    check_pool(pool, cfg, what=what, groups=groups)
    return [sample_episode(pool, cfg, episode_rng(seed, i, 0, stream), groups) for i in range(n)]


def sample_split_episode(support_pool: Pool, query_pool: Pool, cfg: EpisodeConfig, rng: np.random.Generator) -> Episode:
    """An episode whose support comes from ``support_pool`` and queries from ``query_pool``
    (e.g. known recordings against held-out ones); classes are drawn among those in both."""
    names = [c for c in query_pool if len(query_pool[c]) and len(support_pool.get(c, ()))]
    chosen = rng.choice(len(names), size=cfg.ways, replace=False)
    classes = tuple(names[int(k)] for k in chosen)
    support = np.stack([rng.choice(support_pool[c], size=cfg.shots, replace=False) for c in classes])
    query = np.stack([rng.choice(query_pool[c], size=cfg.queries, replace=False) for c in classes])
    return Episode(classes=classes, support=support.astype(np.int64), query=query.astype(np.int64))
