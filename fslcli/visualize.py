"""From a model and data to a written plot: embeds, projects, builds the figure, writes it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fslcli.config import EpisodeConfig
from fslcli.datasets import DataSource
from fslcli.episodes import check_pool, episode_rng, sample_episode
from fslcli.evaluation import TEST_STREAM, embed_cached
from fslcli.model import prototypes
from fslcli.workflows import device_for, prepare

_METHOD_NAMES = {"tsne": "t-SNE", "umap": "UMAP", "pca": "PCA"}


@dataclass(frozen=True)
class PlotResult:
    path: Path
    accuracy: float
    points: int
    skipped: list[tuple[str, str]]


def _prepare_test(
    loaded: Any,
    source: DataSource,
    cache_dir: Path | None,
    bar: Callable[[str, int, int], None],
    keep_train: bool = False,
    group_by: str | None = None,
):
    split = loaded.config.split if keep_train else replace(loaded.config.split, train_classes=(), val_classes=())
    if group_by is not None:
        split = replace(split, group_by=group_by)
    return prepare(source, split, loaded.config.audio.sample_rate, cache_dir, bar)


def episode_plot(
    loaded: Any,
    source: DataSource,
    cfg: EpisodeConfig,
    episode: int,
    seed: int,
    method: str,
    dims: int,
    out: Path,
    cache_dir: Path | None,
    bar: Callable[[str, int, int], None],
    *,
    group_by: str = "source",
) -> PlotResult:
    """Plot test episode ``episode`` (the same one ``fsl eval --seed --group-by`` draws as its episode N)."""
    from fslcli.plotting import PointSet, episode_figure, write_figure
    from fslcli.projection import project

    prep = _prepare_test(loaded, source, cache_dir, bar, group_by=group_by)
    pool = prep.pools.test
    check_pool(pool, cfg, what="the plotted episode", groups=prep.pools.groups)
    ep = sample_episode(pool, cfg, episode_rng(seed, episode, 0, TEST_STREAM), prep.pools.groups)
    ids = [int(i) for i in ep.support.ravel()] + [int(i) for i in ep.query.ravel()]
    device = device_for()
    net = loaded.net.to(device)
    raw = embed_cached(net, prep.cache, ids, loaded.config.eval_windows, device=device, finish=False)
    n_s = ep.support.size
    with torch.no_grad():
        # The space this episode is scored in (as fsl eval scores it).
        support, query = net.finish_episode(raw[:n_s], raw[n_s:], torch.arange(cfg.ways).repeat_interleave(cfg.shots))
        emb = torch.cat([support, query])
        protos = prototypes(emb[:n_s], cfg.ways)
        pred = net.logits(emb[n_s:], protos).argmax(-1).numpy()
    classes = list(ep.classes)
    true_q = np.repeat(np.arange(cfg.ways), cfg.queries)
    acc = float((pred == true_q).mean())
    allpts = torch.cat([emb, protos]).numpy()
    coords = project(allpts, method=method, dims=dims, seed=seed)
    clips = prep.cache.clips
    labels = [clips[i].label for i in ids] + classes
    roles = ["support"] * n_s + ["query"] * (len(ids) - n_s) + ["prototype"] * cfg.ways
    paths = [str(clips[i].path) for i in ids] + [""] * cfg.ways
    predicted: list[str | None] = [None] * n_s + [classes[int(p)] for p in pred] + [None] * cfg.ways
    pts = PointSet(coords=coords, labels=labels, roles=roles, paths=paths, predicted=predicted)
    title = f"Episode {episode}: {cfg.ways}-way {cfg.shots}-shot, accuracy {acc:.2f} ({_METHOD_NAMES[method]}, {source.kind})"
    path = write_figure(episode_figure(pts, title), out)
    return PlotResult(path, acc, len(labels), prep.skipped)


def embeddings_plot(
    loaded: Any,
    source: DataSource,
    method: str,
    dims: int,
    include_train: bool,
    seed: int,
    out: Path,
    cache_dir: Path | None,
    bar: Callable[[str, int, int], None],
) -> PlotResult:
    """Every test clip (and optionally the training classes, greyed) with the class prototypes."""
    from fslcli.plotting import PointSet, embeddings_figure, write_figure
    from fslcli.projection import project

    prep = _prepare_test(loaded, source, cache_dir, bar, keep_train=include_train)
    test_ids = [int(i) for ids in prep.pools.test.values() for i in ids]
    train_ids: list[int] = []
    if include_train:
        for pool in (prep.pools.train, prep.pools.val):
            train_ids += [int(i) for ids in pool.values() for i in ids]
    ids = test_ids + sorted(set(train_ids))
    device = device_for()
    emb = embed_cached(
        loaded.net.to(device),
        prep.cache,
        ids,
        loaded.config.eval_windows,
        device=device,
        progress=lambda d, t: bar("Embedding clips", d, t),
    )
    clips = prep.cache.clips
    classes = list(prep.pools.test)
    protos = torch.stack([emb[[k for k, i in enumerate(test_ids) if clips[i].label == c]].mean(0) for c in classes])
    coords = project(torch.cat([emb, protos]).numpy(), method=method, dims=dims, seed=seed)
    labels = [clips[i].label for i in ids] + classes
    roles = ["clip"] * len(test_ids) + ["train"] * (len(ids) - len(test_ids)) + ["prototype"] * len(classes)
    paths = [str(clips[i].path) for i in ids] + [""] * len(classes)
    pts = PointSet(coords=coords, labels=labels, roles=roles, paths=paths, predicted=[None] * len(labels))
    title = f"Test clips and prototypes ({_METHOD_NAMES[method]}, {source.kind})"
    path = write_figure(embeddings_figure(pts, title), out)
    return PlotResult(path, float("nan"), len(labels), prep.skipped)
