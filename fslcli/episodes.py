"""Episodes and the seeded episode sampler.

An N-way K-shot episode draws N classes, then K support and Q query clips per class
(Snell et al., 2017). Episode ``i`` of rank ``r`` is drawn from a generator seeded with
``(seed, i, r)``, so the same seed gives the same episodes whatever ran before, and
distributed ranks see different episodes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fslcli.config import EpisodeConfig
from fslcli.errors import EpisodeError

#: A pool maps each class label to the indices (into a clip list) of its clips.
Pool = Mapping[str, np.ndarray]


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


def check_pool(pool: Pool, cfg: EpisodeConfig, what: str = "episodes", where: str = "") -> None:
    """Refuse an episode shape the pool cannot fill, naming the class and both numbers."""
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


def sample_episode(pool: Pool, cfg: EpisodeConfig, rng: np.random.Generator) -> Episode:
    """Draw one episode from ``pool`` with ``rng`` (call :func:`check_pool` first)."""
    names = list(pool)
    chosen = rng.choice(len(names), size=cfg.ways, replace=False)
    classes = tuple(names[int(k)] for k in chosen)
    support = np.empty((cfg.ways, cfg.shots), dtype=np.int64)
    query = np.empty((cfg.ways, cfg.queries), dtype=np.int64)
    for row, label in enumerate(classes):
        ids = pool[label]
        pick = ids[rng.choice(len(ids), size=cfg.clips_per_class, replace=False)]
        support[row] = pick[: cfg.shots]
        query[row] = pick[cfg.shots :]
    return Episode(classes=classes, support=support, query=query)


def sample_episodes(pool: Pool, cfg: EpisodeConfig, n: int, seed: int, stream: int = 0) -> list[Episode]:
    """``n`` episodes, episode ``i`` drawn from ``episode_rng(seed, i, 0, stream)``."""
    check_pool(pool, cfg)
    return [sample_episode(pool, cfg, episode_rng(seed, i, 0, stream)) for i in range(n)]
