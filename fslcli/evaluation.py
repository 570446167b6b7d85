"""Few-shot evaluation on stored embeddings.

Each clip's evaluation excerpt is fixed (the mean embedding over evenly spaced windows),
so every distinct clip is embedded once per run; the episodes are then scored on the
stored embeddings, which makes 1,000 episodes cost barely more than 50.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fslcli.config import EpisodeConfig
from fslcli.episodes import Episode, Pool, draw_episodes
from fslcli.features import WaveCache
from fslcli.model import ProtoNet, prototypes

#: Episode streams: training, validation and test episodes never share a generator.
TRAIN_STREAM, VAL_STREAM, TEST_STREAM = 0, 1, 2


#: Onset detection: frames of this many samples, and the first frame within this many dB of
#: the loudest frame is where a clip's sound starts.
ONSET_FRAME = 256
ONSET_FLOOR_DB = 40.0
#: The onset is looked for in a clip's first this many seconds (long recordings stay cheap).
ONSET_SEARCH_SECONDS = 30.0


def onset_sample(wave: np.ndarray, frame: int = ONSET_FRAME, floor_db: float = ONSET_FLOOR_DB) -> int:
    """First sample of the first ``frame``-long block whose RMS is within ``floor_db`` of the
    loudest block's: where the note starts, past any leading silence or noise. 0 for silence."""
    n = len(wave) // frame
    if n == 0:
        return 0
    rms = np.sqrt(np.square(wave[: n * frame].reshape(n, frame), dtype=np.float64).mean(axis=1))
    peak = float(rms.max())
    if peak <= 0.0:
        return 0
    return int(np.argmax(rms >= peak * 10.0 ** (-floor_db / 20.0))) * frame


def window_starts(n_samples: int, excerpt: int, n_windows: int, onset: int = 0) -> list[int]:
    """Start samples of up to ``n_windows`` evenly spaced excerpts covering a clip from ``onset``.

    One window starts at the onset; more spread evenly to the clip's end, no closer than a
    quarter excerpt. An onset too late for a whole excerpt moves back to fit one.
    """
    onset = max(0, min(onset, n_samples - excerpt))
    if n_samples <= excerpt or n_windows <= 1:
        return [onset]
    span = n_samples - excerpt - onset
    n = min(n_windows, 1 + span // max(1, excerpt // 4))
    return sorted({onset + int(round(k * span / (n - 1))) for k in range(n)}) if n > 1 else [onset]


def clip_onset(wave: np.ndarray, sample_rate: int) -> int:
    """:func:`onset_sample` looked for in a clip's first ``ONSET_SEARCH_SECONDS`` (``wave`` may be
    a memory-mapped view)."""
    return onset_sample(np.asarray(wave[: int(ONSET_SEARCH_SECONDS * sample_rate)]))


def clip_window_starts(wave: np.ndarray, excerpt: int, n_windows: int, sample_rate: int) -> list[int]:
    """Where a clip's evaluation windows start: :func:`window_starts` from its onset (:func:`clip_onset`)."""
    n = len(wave)
    onset = clip_onset(wave, sample_rate) if n > excerpt else 0
    return window_starts(n, excerpt, n_windows, onset)


@torch.no_grad()
def embed_windows(
    net: ProtoNet,
    windows: np.ndarray,
    owners: np.ndarray,
    n_items: int,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
    progress: Callable[[int, int], None] | None = None,
    finish: bool = True,
) -> torch.Tensor:
    """Embedding per item: ``windows`` ``(n_windows, samples)``, ``owners`` ``(n_windows,)`` -> ``(n_items, dim)``.

    An item's embedding is the mean over its windows, then :meth:`ProtoNet.finish` (the
    space the model compares in); ``finish=False`` returns the plain means.
    """
    net.eval()
    out = torch.zeros(n_items, net.dim, dtype=torch.float32)
    counts = torch.zeros(n_items, 1, dtype=torch.float32)
    own = torch.as_tensor(owners, dtype=torch.long)
    for s in range(0, len(windows), batch_size):
        batch = torch.as_tensor(np.ascontiguousarray(windows[s : s + batch_size])).to(device)
        emb = net.embed(batch).float().cpu()
        out.index_add_(0, own[s : s + batch_size], emb)
        counts.index_add_(0, own[s : s + batch_size], torch.ones(len(emb), 1))
        if progress is not None:
            progress(min(s + batch_size, len(windows)), len(windows))
    out = out / counts.clamp(min=1)
    return net.finish(out) if finish else out


def clip_windows(cache: WaveCache, ids: Sequence[int], excerpt: int, n_windows: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed evaluation windows of cached clips, from each clip's onset (:func:`onset_sample`):
    ``(n_windows_total, excerpt)`` and their owner positions."""
    clip_ids, starts, owners = [], [], []
    for pos, i in enumerate(ids):
        for start in clip_window_starts(cache.clip(i), excerpt, n_windows, cache.sample_rate):
            clip_ids.append(int(i))
            starts.append(start)
            owners.append(pos)
    wins = cache.excerpts(np.asarray(clip_ids, dtype=np.int64), np.asarray(starts, dtype=np.int64), excerpt)
    return wins, np.asarray(owners, dtype=np.int64)


def embed_cached(
    net: ProtoNet,
    cache: WaveCache,
    ids: Sequence[int],
    n_windows: int,
    device: torch.device | str = "cpu",
    batch_size: int = 128,
    progress: Callable[[int, int], None] | None = None,
    finish: bool = True,
) -> torch.Tensor:
    """Embeddings ``(len(ids), dim)`` of cached clips, each the mean over its fixed windows
    (see :func:`embed_windows`)."""
    wins, owners = clip_windows(cache, ids, net.audio.excerpt_samples, n_windows)
    return embed_windows(net, wins, owners, len(ids), batch_size, device, progress, finish)


@dataclass(frozen=True)
class EpisodeScores:
    """Per-episode results: ``accuracy`` and ``loss`` (mean query cross-entropy) ``(E,)``;
    ``true`` and ``pred`` ``(E, ways * queries)`` class labels."""

    accuracy: np.ndarray
    true: list[list[str]]
    pred: list[list[str]]
    loss: np.ndarray | None = None


#: Episodes put through :meth:`ProtoNet.finish_episode` at once (bounds its (E, dim, dim) factors).
FINISH_CHUNK = 100


@torch.no_grad()
def score_episodes(
    net: ProtoNet, emb: torch.Tensor, position: dict[int, int], episodes: Sequence[Episode], finished: bool = True
) -> EpisodeScores:
    """Score episodes on stored embeddings; ``position`` maps clip index -> row of ``emb``.

    ``finished``: ``emb`` is already in the comparison space (:meth:`ProtoNet.finish`); with
    False, ``emb`` holds backbone embeddings and each episode is finished with its own support
    set (:meth:`ProtoNet.finish_episode`), as the model compares them.
    """
    if not episodes:
        return EpisodeScores(np.zeros(0), [], [])
    emb = emb.to(next(net.parameters()).device)
    ways = episodes[0].support.shape[0]
    queries = episodes[0].query.shape[1]
    sup = torch.as_tensor([[position[int(i)] for i in ep.support.reshape(-1)] for ep in episodes])
    qry = torch.as_tensor([[position[int(i)] for i in ep.query.reshape(-1)] for ep in episodes])
    s_emb = emb[sup.to(emb.device)]  # (E, ways * shots, dim)
    q_emb = emb[qry.to(emb.device)]  # (E, ways * queries, dim)
    if not finished:
        labels = torch.arange(ways).repeat_interleave(episodes[0].support.shape[1])
        parts = [
            net.finish_episode(s_emb[i : i + FINISH_CHUNK], q_emb[i : i + FINISH_CHUNK], labels)
            for i in range(0, len(episodes), FINISH_CHUNK)
        ]
        s_emb = torch.cat([s for s, _ in parts])
        q_emb = torch.cat([q for _, q in parts])
    protos = prototypes(s_emb, ways)  # (E, ways, dim)
    logits = net.logits(q_emb, protos)  # (E, ways * queries, ways)
    pred = logits.argmax(dim=-1).cpu().numpy()
    target = np.repeat(np.arange(ways), queries)[None, :]
    acc = (pred == target).mean(axis=1)
    tgt = torch.as_tensor(target[0], device=logits.device)
    loss = -torch.log_softmax(logits.float(), dim=-1)[:, torch.arange(len(tgt), device=logits.device), tgt].mean(dim=1)
    true_names = [[ep.classes[t] for t in target[0]] for ep in episodes]
    pred_names = [[ep.classes[p] for p in row] for ep, row in zip(episodes, pred, strict=True)]
    return EpisodeScores(acc, true_names, pred_names, loss.cpu().numpy())


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
    n_episodes: int,
    seed: int,
    n_windows: int,
    device: torch.device | str = "cpu",
    progress: Callable[[int, int], None] | None = None,
    stream: int = TEST_STREAM,
    groups: np.ndarray | None = None,
) -> EvalResult:
    """Run ``n_episodes`` seeded episodes on ``pool`` and summarise them; with ``groups`` (each
    clip's source group), support and query never share a group within a class."""
    import time

    episodes = draw_episodes(pool, cfg, n_episodes, seed, stream, groups=groups, what="evaluation episodes")
    ids = sorted({int(i) for ep in episodes for i in np.concatenate([ep.support.ravel(), ep.query.ravel()])})
    t0 = time.perf_counter()
    emb = embed_cached(net, cache, ids, n_windows, device=device, progress=progress, finish=False)
    t1 = time.perf_counter()
    scores = score_episodes(net, emb, {c: k for k, c in enumerate(ids)}, episodes, finished=False)
    classes = list(pool)
    per_class, conf = summarise(scores, classes)
    t2 = time.perf_counter()
    return EvalResult(
        mean_accuracy=float(scores.accuracy.mean()),
        ci95_half_width=ci95_half_width(scores.accuracy),
        episodes=n_episodes,
        accuracies=scores.accuracy,
        classes=classes,
        per_class=per_class,
        confusion=conf,
        seconds_embedding=t1 - t0,
        seconds_scoring=t2 - t1,
        clips_embedded=len(ids),
    )
