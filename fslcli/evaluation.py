"""Few-shot evaluation: seeded episodes over stored embeddings, mean accuracy with its 95%
interval, per-class accuracy and the confusion matrix.

Every distinct clip is embedded once per run (:mod:`fslcli.embedding`); the episodes are then
scored on the stored embeddings (:mod:`fslcli.scoring`), so 1,000 episodes cost barely more
than 50.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fslcli.config import EVAL_WINDOWS, EpisodeConfig
from fslcli.embedding import Windows, embed_cached
from fslcli.episodes import TEST_STREAM, TRAIN_STREAM, VAL_STREAM, Pool, draw_episodes
from fslcli.features import WaveCache
from fslcli.model import ProtoNet
from fslcli.scoring import EpisodeScores, score_episodes

__all__ = ["TEST_STREAM", "TRAIN_STREAM", "VAL_STREAM", "EvalResult", "ci95_half_width", "evaluate", "summarise"]


def ci95_half_width(acc: np.ndarray) -> float:
    """Half width of the 95% confidence interval of the mean: 1.96 * sigma / sqrt(N)."""
    if len(acc) < 2:
        return float("nan")
    return float(1.96 * np.std(acc, ddof=1) / math.sqrt(len(acc)))


@dataclass(frozen=True)
class EvalResult:
    """Mean accuracy over episodes, its 95% interval, per-class accuracy and the confusion matrix.

    ``confusion[i, j]`` counts queries of ``classes[i]`` predicted as ``classes[j]``.
    """

    mean_accuracy: float
    ci95_half_width: float
    episodes: int
    accuracies: np.ndarray
    classes: list[str]
    per_class: dict[str, float]
    confusion: np.ndarray
    seconds_embedding: float
    seconds_scoring: float
    clips_embedded: int


def summarise(scores: EpisodeScores, classes: Sequence[str]) -> tuple[dict[str, float], np.ndarray]:
    """Per-class accuracy and confusion matrix over all queries of all episodes."""
    idx = {c: k for k, c in enumerate(classes)}
    conf = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for t_row, p_row in zip(scores.true, scores.pred, strict=True):
        for t, p in zip(t_row, p_row, strict=True):
            conf[idx[t], idx[p]] += 1
    totals = conf.sum(axis=1)
    per_class = {c: float(conf[k, k] / totals[k]) if totals[k] else float("nan") for c, k in idx.items()}
    return per_class, conf


def evaluate(
    net: ProtoNet,
    cache: WaveCache,
    pool: Pool,
    cfg: EpisodeConfig,
    *,
    episodes: int,
    seed: int,
    windows: Windows = EVAL_WINDOWS,
    groups: np.ndarray | None = None,
    device: torch.device | str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """Run ``episodes`` seeded test episodes on ``pool`` and summarise them; with ``groups`` (each
    clip's source group), support and query never share a group within a class."""
    drawn = draw_episodes(pool, cfg, episodes, seed, TEST_STREAM, groups=groups, what="evaluation episodes")
    ids = sorted({int(i) for ep in drawn for i in np.concatenate([ep.support.ravel(), ep.query.ravel()])})
    t0 = time.perf_counter()
    emb = embed_cached(net, cache, ids, windows=windows, device=device, progress=progress)
    t1 = time.perf_counter()
    scores = score_episodes(net, emb, {c: k for k, c in enumerate(ids)}, drawn)
    classes = list(pool)
    per_class, conf = summarise(scores, classes)
    return EvalResult(
        mean_accuracy=float(scores.accuracy.mean()),
        ci95_half_width=ci95_half_width(scores.accuracy),
        episodes=episodes,
        accuracies=scores.accuracy,
        classes=classes,
        per_class=per_class,
        confusion=conf,
        seconds_embedding=t1 - t0,
        seconds_scoring=time.perf_counter() - t1,
        clips_embedded=len(ids),
    )
