"""Validation during training, and the calibration of the comparison space.

Validation never touches the test classes. By default it uses held-out source groups of the
training classes (their validation fold): each episode's support comes from training clips and
its queries from held-out recordings of the same classes, so no query shares a recording with
the support. With ``val_classes`` it holds out whole classes and draws ordinary grouped episodes
among them. At every validation the model's centre and whitening are refitted to a fixed subset
of training clips (``ProtoNet.calibrate``) and saved with that checkpoint, so validation
measures the space the model will use.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fslcli.config import EpisodeConfig, RunConfig
from fslcli.embedding import cached_windows
from fslcli.episodes import (
    VAL_STREAM,
    Episode,
    Pool,
    draw_episodes,
    episode_rng,
    groups_can_split,
    sample_split_episode,
)
from fslcli.errors import EpisodeError
from fslcli.features import WaveCache

#: The shape of validation episodes, smaller where the held-out data is small.
VAL_EPISODE = EpisodeConfig(ways=5, shots=5, queries=15)
#: Validation draws from at most this many held-out clips per class (a seeded subset), so its
#: memory and time do not grow with the dataset.
MAX_VAL_CLIPS_PER_CLASS = 30
#: The embedding centre and within-class covariance are estimated from at most this many
#: training clips in all, split evenly over the training classes (a seeded subset of each). The
#: covariance of a 256-d embedding needs many: on held-out training classes, 20 clips per class
#: lost 0.01-0.04 of accuracy against all of them (about 130).
MAX_CENTER_CLIPS = 1500


@dataclass(frozen=True)
class ValData:
    """Fixed validation windows and episodes (the same at every validation).

    ``windows`` ``(n_windows, samples)`` are the windows of the clips ``ids`` (cache indices);
    ``owners`` ``(n_windows,)`` gives each window's position in ``ids``. ``center_rows`` are the
    positions of the training clips that calibrate the comparison space, with class indices
    ``center_labels``.
    """

    windows: np.ndarray
    owners: np.ndarray
    ids: list[int]
    episodes: list[Episode]
    center_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    center_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def center_clips_per_class(n_classes: int) -> int:
    """How many training clips per class calibrate the comparison space: :data:`MAX_CENTER_CLIPS`
    shared out, but at least 8 (with many classes, the covariance pools over all of them)."""
    return max(8, MAX_CENTER_CLIPS // max(1, n_classes))


def subset(pool: Pool, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """At most ``n`` clips per class, drawn with ``rng``, in index order."""
    return {c: np.sort(rng.choice(ids, size=n, replace=False)) if len(ids) > n else ids for c, ids in pool.items()}


def make_val_data(
    cache: WaveCache,
    config: RunConfig,
    *,
    train_pool: Pool,
    val_pool: Pool,
    groups: np.ndarray | None = None,
    libraries: np.ndarray | None = None,
) -> ValData:
    """Validation episodes and the windows of every clip they and the calibration need.

    ``libraries``: each clip's sample library ``(n_clips,)`` when training on several. The
    calibration then takes a class in each library as its own group, so that what tells one
    library's recordings from another's is not whitened away as within-class spread: test
    episodes never mix libraries, and within one those differences tell instruments apart.
    """
    rng = episode_rng(config.train.seed, 0, 0, VAL_STREAM + 100)
    pool = subset(val_pool, MAX_VAL_CLIPS_PER_CLASS, rng)
    calib = subset(train_pool, center_clips_per_class(len(train_pool)), rng)
    n, seed = config.train.val_episodes, config.train.seed
    if config.split.val_classes:
        cfg = val_episode_config(pool, groups)
        episodes = draw_episodes(pool, cfg, n, seed, VAL_STREAM, groups=groups, what="validation episodes")
    else:
        cfg = split_val_config(calib, pool)
        episodes = [sample_split_episode(calib, pool, cfg, episode_rng(seed, i, 0, VAL_STREAM)) for i in range(n)]
    used = {int(i) for ep in episodes for i in np.concatenate([ep.support.ravel(), ep.query.ravel()])}
    calibrates = config.model.embedding_norm == "whitened"
    label_of = {int(i): k for k, c in enumerate(sorted(calib)) for i in calib[c]} if calibrates else {}
    if libraries is not None and label_of:
        n_libraries = int(libraries.max()) + 1
        label_of = {i: k * n_libraries + int(libraries[i]) for i, k in label_of.items()}
    ids = sorted(used | set(label_of))
    wins, owners = cached_windows(cache, ids, config.audio.excerpt_samples)
    rows = np.array([k for k, i in enumerate(ids) if i in label_of], dtype=np.int64)
    labels = np.array([label_of[ids[k]] for k in rows], dtype=np.int64)
    return ValData(wins, owners, ids, episodes, rows, labels)


def val_episode_config(pool: Pool, groups: np.ndarray | None = None) -> EpisodeConfig:
    """Episodes among held-out classes: :data:`VAL_EPISODE`, smaller where the data is small, and
    with ``groups``, small enough that each class's support and queries come from different groups."""
    ways = min(VAL_EPISODE.ways, len(pool))
    smallest = min((len(v) for v in pool.values()), default=0)
    if ways >= 2 and smallest >= 2:
        shots = min(VAL_EPISODE.shots, smallest - 1)
        queries = max(1, min(VAL_EPISODE.queries, smallest - shots))
        while groups is not None and not all(groups_can_split(groups[ids], shots, queries) for ids in pool.values()):
            if queries == 1 and shots == 1:
                break
            shots, queries = (shots - 1, queries) if shots >= queries and shots > 1 else (shots, queries - 1)
        else:
            return EpisodeConfig(ways=ways, shots=shots, queries=queries)
    raise EpisodeError(
        f"validation needs at least 2 held-out classes with 2 clips each from different source groups; found "
        f"{len(pool)} ({', '.join(f'{k}: {len(v)} clips' for k, v in pool.items())}); choose other --val-classes, "
        "or leave --val-classes out to validate on held-out recordings of the training classes"
    )


def split_val_config(support: Pool, query: Pool) -> EpisodeConfig:
    """Episodes with support from training clips and queries from held-out ones:
    :data:`VAL_EPISODE`, smaller where the data is small."""
    both = [c for c in query if len(query[c]) and len(support.get(c, ()))]
    if len(both) < 2:
        raise EpisodeError(
            f"validation needs at least 2 training classes with held-out recordings; found {len(both)} "
            f"({', '.join(both) or 'none'}): a class needs 5 source groups to give one to validation. Add "
            "recordings, hold out whole classes with --val-classes, or use --group-by none"
        )
    return EpisodeConfig(
        ways=min(VAL_EPISODE.ways, len(both)),
        shots=min(VAL_EPISODE.shots, min(len(support[c]) for c in both)),
        queries=min(VAL_EPISODE.queries, min(len(query[c]) for c in both)),
    )
