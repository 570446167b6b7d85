"""The operations behind each command: one keyword-only function per command, typed results, no
printing. The CLI parses options, calls one function here and renders what comes back.

Heavy modules (torch, Lightning, plotly) are imported inside the functions that need them, so
``fsl --help`` and light commands answer at once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from fslcli.config import EVAL_WINDOWS, EpisodeConfig, RunConfig, SplitConfig
from fslcli.datasets import DataSource, resolve_source
from fslcli.errors import FslError, OutputError

Progress = Callable[[str, int, int], None]
Report = Callable[[str], None]


@dataclass(frozen=True)
class SourceChoice:
    """``--dataset/--data-home/--data-dir`` as given (all None: the model's own data)."""

    dataset: str | None = None
    data_home: Path | None = None
    data_dir: Path | None = None

    def resolve(self, fallback: DataSource | None = None) -> DataSource:
        return resolve_source(self.dataset, self.data_home, self.data_dir, fallback)


def _no_progress(description: str, done: int, total: int) -> None:
    return None


def _no_report(line: str) -> None:
    return None


# --- download --------------------------------------------------------------------------


@dataclass(frozen=True)
class Downloaded:
    """What ``fsl download`` did: ``report`` is the renderer's (None for the real TinySOL)."""

    home: Path
    seconds: float
    already: list[str]
    report: Any = None


def download(
    dataset: str,
    *,
    home: Path,
    soundfont: Path | None = None,
    seed: int = 0,
    force: bool = False,
    tinysol_only: bool = False,
    progress: Progress = _no_progress,
) -> Downloaded:
    """Fetch the real TinySOL into ``home``, or render the offline set (every GM program and drum
    sound with TinySOL's instruments, or TinySOL's 14 alone)."""
    t0 = time.perf_counter()
    if dataset == "examples":
        from fslcli.datasets.examples import render_examples

        made = render_examples(home, force=force)
        return Downloaded(made.home, time.perf_counter() - t0, [], made)
    if dataset == "tinysol":
        from fslcli.datasets.tinysol_download import download_tinysol

        done = download_tinysol(home, progress=lambda name, d, t: progress(name, d, t or max(d, 1)), force=force)
        return Downloaded(home, time.perf_counter() - t0, done.skipped)
    try:
        from fslcli.datasets.tinysol_gm import render_tinysol_gm
    except ImportError as exc:
        raise FslError(
            f"rendering needs tinysoundfont ({exc}); install it with `pip install --no-deps tinysoundfont` "
            "(--no-deps: its pyaudio dependency is only for live playback)"
        ) from None
    from fslcli.datasets.general_midi import ALL_INSTRUMENTS
    from fslcli.datasets.instruments import INSTRUMENTS

    report = render_tinysol_gm(
        home, soundfont, seed, force=force, progress=lambda d, t: progress("Rendering notes", d, t),
        instruments=INSTRUMENTS if tinysol_only else ALL_INSTRUMENTS,
    )  # fmt: skip
    return Downloaded(report.data_home, time.perf_counter() - t0, [], report)


# --- train -----------------------------------------------------------------------------


def check_run_dir(run_dir: Path, force: bool) -> None:
    """Refuse a non-empty run folder unless ``force``."""
    if run_dir.exists() and not run_dir.is_dir():
        raise FslError(f"--out {run_dir} is a file; give a folder for the run")
    if run_dir.is_dir() and any(run_dir.iterdir()) and not force:
        raise FslError(
            f"--out {run_dir} is not empty; pass --force to write into it, or --resume {run_dir} to continue it"
        )
    # The nearest existing ancestor must be a folder, or creating the run folder fails late.
    ancestor = next((p for p in Path(run_dir).absolute().parents if p.exists()), None)
    if ancestor is not None and not ancestor.is_dir():
        raise FslError(f"--out {run_dir}: {ancestor} is a file, so no folder can be made there; choose another --out")


def load_run_file(run_dir: Path) -> tuple[RunConfig, tuple[DataSource, ...]]:
    """The settings and data sources of a run started with ``fsl train`` (for ``--resume``)."""
    path = Path(run_dir) / "run.json"
    if not path.is_file():
        raise FslError(f"--resume {run_dir}: no run.json there; give the folder of a run started with `fsl train`")
    if not (Path(run_dir) / "checkpoints" / "last.ckpt").is_file():
        raise FslError(
            f"--resume {run_dir}: no checkpoints/last.ckpt yet (the run stopped before its first validation); "
            "start it again with --force"
        )
    data = json.loads(path.read_text(encoding="utf-8"))
    sources = tuple(DataSource.from_dict(d) for d in data.get("sources") or [data["source"]])
    return RunConfig.from_dict(data["settings"]), sources


def train(
    config: RunConfig,
    source: DataSource | Sequence[DataSource],
    *,
    run_dir: Path,
    resume: bool = False,
    adapt_split: bool = False,
    cache_dir: Path | None = None,
    report: Report = _no_report,
    progress: Progress = _no_progress,
    events: Callable[[dict[str, Any]], None] | None = None,
) -> Any:
    """Prepare the data, check the run can go, write ``run.json`` and train (``fit``).

    Several sources train one model on all of them (same class names are one class); the model
    records the first as its own data and lists them all in its metadata.

    ``report`` gets one-line notes (data, split, notices); ``progress`` the data preparation;
    ``events`` the training steps and validations. Returns the :class:`~fslcli.training.FitResult`.
    """
    from fslcli.data import prepare, sources_meta
    from fslcli.training import fit, preflight
    from fslcli.training.module import train_episode_config

    prep = prepare(
        source, config.split, sample_rate=config.audio.sample_rate, cache_dir=cache_dir, progress=progress,
        adapt_split=adapt_split,
    )  # fmt: skip
    config = replace(config, split=prep.split)
    for line in prep.notices:
        report(line)
    for path, reason in prep.skipped[:10]:
        report(f"skipped {path}: {' '.join(reason.split())}")
    if prep.skipped:
        report(f"{len(prep.skipped)} file(s) skipped (unreadable or missing)")
    shape = train_episode_config(config, len(prep.pools.train))
    report(
        f"Data: {' + '.join(s.describe() for s in prep.sources)}: {len(prep.cache)} clips; training on {len(prep.pools.train)} classes in "
        f"{shape.ways}-way {shape.shots}-shot {shape.queries}-query episodes; validation on {prep.pools.val_description}"
    )
    # Refused here, the run folder is not created: the same command works once fixed.
    preflight(config, prep.pools.train, prep.pools.val, groups=prep.pools.groups)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            payload = {"settings": config.to_dict(), "source": prep.source.to_dict()}
            if len(prep.sources) > 1:
                payload["sources"] = [s.to_dict() for s in prep.sources]
            (run_dir / "run.json").write_text(json.dumps(payload, indent=2), encoding="utf-8")
            (run_dir / "history.jsonl").unlink(missing_ok=True)
    except OSError as exc:
        raise OutputError(
            f"--out {run_dir}: cannot write the run folder ({exc.strerror or exc}); choose another --out"
        ) from None
    return fit(
        config,
        prep.cache,
        train_pool=prep.pools.train,
        val_pool=prep.pools.val,
        source=prep.source,
        run_dir=run_dir,
        groups=prep.pools.groups,
        libraries=prep.libraries,
        resume=resume,
        progress=events,
        extra_meta={"val_description": prep.pools.val_description, **sources_meta(prep.sources)},
    )


# --- eval ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluated:
    """``fsl eval``'s outcome: the result, its JSON summary, and lines for the user."""

    result: Any
    summary: dict[str, Any]
    source: DataSource
    skipped: list[tuple[str, str]]
    notices: tuple[str, ...]
    warning: str | None


def evaluate_model(
    model: Path,
    *,
    data: SourceChoice = SourceChoice(),
    test_classes: tuple[str, ...] | None = None,
    episode: EpisodeConfig = EpisodeConfig(),
    episodes: int = 1000,
    seed: int = 0,
    windows: int | str = EVAL_WINDOWS,
    group_by: str = "source",
    cache_dir: Path | None = None,
    progress: Progress = _no_progress,
) -> Evaluated:
    """Seeded test episodes of a model on its test classes (or others), with the protocol in the summary."""
    from fslcli.checkpoint import load_model
    from fslcli.data import prepare, shared_sample_warning
    from fslcli.devices import device_for
    from fslcli.evaluation import evaluate

    t0 = time.perf_counter()
    loaded = load_model(model)
    source = data.resolve(loaded.source)
    # Only the test classes are read: training and validation data play no part in evaluation.
    split = SplitConfig(
        train_classes=(), test_classes=test_classes or loaded.config.split.test_classes, group_by=group_by
    )
    prep = prepare(source, split, sample_rate=loaded.config.audio.sample_rate, cache_dir=cache_dir, progress=progress)
    device = device_for()
    result = evaluate(
        loaded.net.to(device), prep.cache, prep.pools.test, episode, episodes=episodes, seed=seed, windows=windows,
        groups=prep.pools.groups, device=device, progress=lambda d, t: progress("Embedding test clips", d, t),
    )  # fmt: skip
    train = list(loaded.config.split.train_classes or ())
    warning = shared_sample_warning(source, loaded.sources, loaded.fonts, train, result.classes)
    summary = {
        "mean_accuracy": result.mean_accuracy,
        "ci95_half_width": result.ci95_half_width,
        "episodes": result.episodes,
        "settings": {
            **{"ways": episode.ways, "shots": episode.shots, "queries": episode.queries, "seed": seed},
            **{"group_by": group_by, "windows": windows, "dataset": source.to_dict(), "test_classes": result.classes},
        },
        "checkpoint": {"path": str(loaded.path), "sha256": loaded.sha256},
        "per_class": result.per_class,
        "confusion": {"classes": result.classes, "matrix": result.confusion.tolist()},
        "clips_embedded": result.clips_embedded,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return Evaluated(result, summary, source, prep.skipped, prep.notices, warning)


# --- embed and predict -----------------------------------------------------------------


@dataclass(frozen=True)
class EmbedOutcome:
    path: Path
    rows: int
    dim: int
    skipped: list[tuple[Path, str]]


def embed(
    model: Path, inputs: list[Path], *, out: Path, windows: Any = "all", progress: Progress = _no_progress
) -> EmbedOutcome:
    """One embedding per recording, in the space the model compares in, written to ``out``
    with its path and label (the parent folder's name)."""
    from fslcli.checkpoint import load_model
    from fslcli.devices import device_for
    from fslcli.embedding import embed_files
    from fslcli.inference import check_embeddings_path, collect_audio, write_embeddings

    check_embeddings_path(out)
    loaded = load_model(model)
    device = device_for()
    net = loaded.net.to(device)
    emb = embed_files(
        net, collect_audio(inputs), windows=windows, device=device, progress=lambda d, t: progress("Embedding", d, t)
    )
    import torch

    finished = net.finish(torch.from_numpy(emb.embeddings)).numpy()
    write_embeddings(out, finished, [str(p) for p in emb.paths], [p.parent.name for p in emb.paths])
    return EmbedOutcome(out, len(emb.paths), finished.shape[1], emb.skipped)


def predict(
    model: Path,
    queries: list[Path],
    *,
    support: Path,
    top_k: int = 2,
    reject: bool = False,
    windows: Any = "all",
    progress: Progress = _no_progress,
) -> Any:
    """Classify recordings against classes given by a few examples each (:func:`fslcli.inference.predict`)."""
    from fslcli.checkpoint import load_model
    from fslcli.devices import device_for
    from fslcli.inference import predict as run_predict

    loaded = load_model(model)
    device = device_for()
    return run_predict(
        loaded.net.to(device), support, queries, top_k=top_k, reject=reject, windows=windows, device=device,
        progress=lambda d, t: progress("Embedding", d, t),
    )  # fmt: skip


# --- detect ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Detected:
    """``fsl detect``'s outcome: the detection (:class:`fslcli.detection.DetectResult`), its JSON
    summary, and the files written."""

    result: Any
    summary: dict[str, Any]
    out: Path | None
    plot: Path | None


def detect(
    model: Path,
    recordings: list[Path],
    *,
    support: Path | None = None,
    examples: Path | None = None,
    settings: Any = None,
    out: Path | None = None,
    plot: Path | None = None,
    progress: Progress = _no_progress,
) -> Detected:
    """The support classes' events in each recording (:func:`fslcli.detection.detect`), written
    to ``out`` (by its suffix, :mod:`fslcli.event_tables`) and drawn to ``plot``. The classes come
    from ``support`` (a folder of examples per class) or ``examples`` (a CSV of annotated spans;
    then the recordings default to those its rows name). Outputs are checked before any work and
    written, each whole, once every recording has been scanned."""
    from fslcli.checkpoint import load_model
    from fslcli.config import DetectConfig
    from fslcli.detection import detect as run_detect
    from fslcli.detection import support_from_examples, support_from_folder
    from fslcli.devices import device_for
    from fslcli.event_tables import output_format, read_examples, write_events
    from fslcli.inference import collect_audio
    from fslcli.plotting import FORMATS as FIGURE_FORMATS

    settings = settings if settings is not None else DetectConfig()
    if (support is None) == (examples is None):
        raise FslError(
            "give the classes either as --support DIR (one subfolder of examples per class) or as --examples "
            "FILE.csv (path, start, end, label rows marking examples inside the recordings), not "
            f"{'both' if support is not None else 'neither'}"
        )
    example_rows = read_examples(examples) if examples is not None else []
    if recordings:
        files = collect_audio(recordings)
    elif example_rows:
        files = list(dict.fromkeys(e.path for e in example_rows))
    else:
        raise FslError("give one or more recordings to scan (files or folders)")
    if out is not None:
        output_format(out, len(files))
    if plot is not None and Path(plot).suffix.lower() not in FIGURE_FORMATS:
        raise FslError(
            f"--plot {plot}: unknown format {Path(plot).suffix or '(none)'}; use {', '.join(FIGURE_FORMATS)}"
        )
    loaded = load_model(model)
    if why := settings.problem(loaded.config.audio.excerpt_seconds):
        raise FslError(why)
    device = device_for()
    net = loaded.net.to(device)
    if examples is not None:
        sup = support_from_examples(net, example_rows, windows=settings.support_windows, device=device)
        described = f"examples {examples}"
    else:
        sup = support_from_folder(net, support, windows=settings.support_windows, device=device, progress=progress)
        described = f"support {support}"
    result = run_detect(net, files, sup, settings=settings, progress=progress, spectrogram=plot is not None)
    figure = None
    if plot is not None:
        from fslcli.model import mel_band_centres
        from fslcli.plotting import timeline_figure

        figure = timeline_figure(result.timelines, result.events, result.classes, mel_band_centres(net.audio))
    if out is not None:
        write_events(out, result.events, n_recordings=len(files), low_hz=0.0, high_hz=net.audio.sample_rate / 2)
    if figure is not None:
        from fslcli.plotting import write_figure

        write_figure(figure, plot)
    summary = {
        "events": [
            {"path": str(e.path), "onset": e.onset, "offset": e.offset, "label": e.label, "score": e.score}
            for e in result.events
        ],
        "classes": result.classes,
        "shots": result.shots,
        "recordings": [
            {"path": str(t.path), "duration": round(t.duration, 3), "windows": int(len(t.probabilities))}
            for t in result.timelines
        ],
        "skipped": [{"path": str(p), "reason": r} for p, r in result.skipped],
        "settings": {**asdict(settings), "hop": result.hop, "classes_from": described},
        "checkpoint": {"path": str(loaded.path), "sha256": loaded.sha256},
        "written": {"out": str(out) if out else None, "plot": str(plot) if plot else None},
    }
    return Detected(result, summary, out, plot)


# --- plots -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PlotOutcome:
    path: Path
    accuracy: float | None
    points: int
    skipped: list[tuple[str, str]]


_METHOD_NAMES = {"tsne": "t-SNE", "umap": "UMAP", "pca": "PCA"}


def plot_episode(
    model: Path,
    *,
    out: Path,
    data: SourceChoice = SourceChoice(),
    episode: EpisodeConfig = EpisodeConfig(),
    index: int = 0,
    seed: int = 0,
    group_by: str = "source",
    method: str = "tsne",
    dims: int = 2,
    cache_dir: Path | None = None,
    progress: Progress = _no_progress,
) -> PlotOutcome:
    """Plot test episode ``index`` (the episode ``fsl eval --seed --group-by`` draws as its number
    ``index``): support, queries and prototypes, projected together."""
    import torch

    from fslcli.checkpoint import load_model
    from fslcli.data import prepare
    from fslcli.devices import device_for
    from fslcli.embedding import embed_cached
    from fslcli.episodes import TEST_STREAM, check_pool, episode_rng, sample_episode
    from fslcli.plotting import PointSet, episode_figure, write_figure
    from fslcli.projection import project
    from fslcli.scoring import compare

    loaded = load_model(model)
    source = data.resolve(loaded.source)
    split = SplitConfig(train_classes=(), test_classes=loaded.config.split.test_classes, group_by=group_by)
    prep = prepare(source, split, sample_rate=loaded.config.audio.sample_rate, cache_dir=cache_dir, progress=progress)
    pool, groups = prep.pools.test, prep.pools.groups
    check_pool(pool, episode, what="the plotted episode", groups=groups)
    ep = sample_episode(pool, episode, episode_rng(seed, index, 0, TEST_STREAM), groups)
    ids = [int(i) for i in ep.support.ravel()] + [int(i) for i in ep.query.ravel()]
    device = device_for()
    raw = embed_cached(loaded.net.to(device), prep.cache, ids, windows=EVAL_WINDOWS, device=device)
    n_s, labels = ep.support.size, torch.arange(episode.ways).repeat_interleave(episode.shots)
    scored = compare(loaded.net, raw[:n_s], labels, raw[n_s:], episode.ways)
    pred = scored.logits.argmax(-1).numpy()
    acc = float((pred == np.repeat(np.arange(episode.ways), episode.queries)).mean())
    points = torch.cat([scored.support, scored.query, scored.prototypes]).numpy()
    clips, classes = prep.cache.clips, list(ep.classes)
    pts = PointSet(
        coords=project(points, method=method, dims=dims, seed=seed),
        labels=[clips[i].label for i in ids] + classes,
        roles=["support"] * n_s + ["query"] * (len(ids) - n_s) + ["prototype"] * episode.ways,
        paths=[str(clips[i].path) for i in ids] + [""] * episode.ways,
        predicted=[None] * n_s + [classes[int(p)] for p in pred] + [None] * episode.ways,
    )
    title = (
        f"Episode {index}: {episode.ways}-way {episode.shots}-shot, accuracy {acc:.2f} "
        f"({_METHOD_NAMES[method]}, {source.kind})"
    )
    return PlotOutcome(write_figure(episode_figure(pts, title), out), acc, len(points), prep.skipped)


def plot_embeddings(
    model: Path,
    *,
    out: Path,
    data: SourceChoice = SourceChoice(),
    include_train: bool = False,
    seed: int = 0,
    method: str = "tsne",
    dims: int = 2,
    cache_dir: Path | None = None,
    progress: Progress = _no_progress,
) -> PlotOutcome:
    """Every test clip (and optionally the training classes, greyed) with the class prototypes."""
    import torch

    from fslcli.checkpoint import load_model
    from fslcli.data import prepare
    from fslcli.devices import device_for
    from fslcli.embedding import embed_cached
    from fslcli.plotting import PointSet, embeddings_figure, write_figure
    from fslcli.projection import project

    loaded = load_model(model)
    source = data.resolve(loaded.source)
    split = (
        loaded.config.split
        if include_train
        else SplitConfig(train_classes=(), test_classes=loaded.config.split.test_classes)
    )
    prep = prepare(source, split, sample_rate=loaded.config.audio.sample_rate, cache_dir=cache_dir, progress=progress)
    test_ids = [int(i) for ids in prep.pools.test.values() for i in ids]
    train_ids = sorted({int(i) for pool in (prep.pools.train, prep.pools.val) for ids in pool.values() for i in ids})
    ids = test_ids + (train_ids if include_train else [])
    device = device_for()
    net = loaded.net.to(device)
    emb = net.finish(
        embed_cached(
            net,
            prep.cache,
            ids,
            windows=EVAL_WINDOWS,
            device=device,
            progress=lambda d, t: progress("Embedding clips", d, t),
        )  # fmt: skip
    )
    clips, classes = prep.cache.clips, list(prep.pools.test)
    protos = torch.stack([emb[[k for k, i in enumerate(test_ids) if clips[i].label == c]].mean(0) for c in classes])
    labels = [clips[i].label for i in ids] + classes
    pts = PointSet(
        coords=project(torch.cat([emb, protos]).numpy(), method=method, dims=dims, seed=seed),
        labels=labels,
        roles=["clip"] * len(test_ids) + ["train"] * (len(ids) - len(test_ids)) + ["prototype"] * len(classes),
        paths=[str(clips[i].path) for i in ids] + [""] * len(classes),
        predicted=[None] * len(labels),
    )
    title = f"Test clips and prototypes ({_METHOD_NAMES[method]}, {source.kind})"
    return PlotOutcome(write_figure(embeddings_figure(pts, title), out), None, len(labels), prep.skipped)


# --- info and models -------------------------------------------------------------------


@dataclass(frozen=True)
class ModelEntry:
    """One model ``fsl models`` lists."""

    name: str
    path: Path
    kind: str
    trained_on: str
    held_out: str


def list_models(runs_dir: Path = Path("runs")) -> list[ModelEntry]:
    """The bundled models, then the user's runs (newest first), with what each was trained on and
    its figures on held-out libraries where its file records them."""
    from fslcli.checkpoint import read_payload
    from fslcli.models import bundled

    runs = sorted(Path(runs_dir).glob("*/model.pt"), key=lambda p: p.stat().st_mtime, reverse=True)
    entries = []
    for path, kind in [(p, "bundled") for p in bundled()] + [(p, "run") for p in runs]:
        try:
            payload = read_payload(path)
        except FslError as exc:
            entries.append(
                ModelEntry(path.stem if kind == "bundled" else path.parent.name, path, kind, f"unreadable: {exc}", "-")
            )
            continue
        meta = payload.get("meta", {})
        recipe = meta.get("recipe", {})
        trained = recipe.get("data") or f"{payload['source']['kind']}: {len(payload['splits']['train'])} classes"
        figures = meta.get("held_out", {})
        held = (
            "; ".join(
                f"{lib} {f['5-shot']:.3f}/{f['1-shot']:.3f}" for lib, f in figures.items() if "in-font" not in lib
            )
            or "-"
        )
        entries.append(ModelEntry(path.stem if kind == "bundled" else path.parent.name, path, kind, str(trained), held))
    return entries


def _class_list(classes: Sequence[str], shown: int = 12) -> str:
    """``n classes: a, b, ...``; past ``shown`` names, the rest as a count."""
    more = f", and {len(classes) - shown} more" if len(classes) > shown else ""
    return f"{len(classes)} classes: {', '.join(classes[:shown])}{more}"


def model_info(model: Path) -> list[tuple[str, str]]:
    """What a model file is, as (field, value) rows: settings, classes, data, training, accuracy."""
    from fslcli.checkpoint import load_model

    loaded = load_model(model)
    c, meta = loaded.config, loaded.meta
    m, a, ep = c.model, c.audio, c.episode
    compared = (
        f"whitened (shrinkage {m.whiten_shrinkage}, support covariance {m.support_cov_weight})"
        if m.embedding_norm == "whitened"
        else "as the backbone outputs them"
    )
    rows = [
        ("file", str(loaded.path)),
        ("sha256", loaded.sha256),
        ("data", " + ".join(s.describe() for s in loaded.sources)),
        ("trained on", _class_list(c.split.train_classes or ())),
        ("validated on", meta.get("val_description") or ", ".join(c.split.val_classes)),
        ("tested on", ", ".join(c.split.test_classes)),
        ("training episodes", f"up to {ep.ways}-way, {ep.shots}-shot, {ep.queries}-query"),
        ("model", f"{m.backbone} {list(m.channels)} -> {m.embedding_dim}, input norm {m.input_norm}"),
        ("compared by", f"squared Euclidean distance, embeddings {compared}"),
        ("audio", f"{a.sample_rate} Hz, {a.excerpt_seconds} s excerpts, {a.n_mels} mel bands, {a.compression}"),
        ("augmentation", _augmentation(c)),
        (
            "training",
            f"{meta.get('steps', '?')} steps, seed {c.train.seed}, {c.train.optimizer} lr {c.train.learning_rate}, "
            f"{meta.get('train_seconds', '?')} s",
        ),
    ]
    if meta.get("best_val_acc") is not None:
        rows.append(("validation accuracy", f"{meta['best_val_acc']:.4f} (step {meta.get('best_step')})"))
    for lib, f in meta.get("held_out", {}).items():
        rows.append(
            (f"on {lib}", f"5-way 5-shot {f['5-shot']:.3f}, 1-shot {f['1-shot']:.3f} (grouped, 1,000 episodes)")
        )
    recipe = meta.get("recipe")
    if recipe:
        rows.append(
            (
                "recipe",
                f"{recipe.get('command')}: {recipe.get('data')}, seed {recipe.get('seed')}, {recipe.get('steps')} steps",
            )
        )
        rows.append(("built from", f"fslcli {recipe.get('fslcli_version')} at commit {recipe.get('commit')}"))
    return rows


def _augmentation(config: RunConfig) -> str:
    a = config.augment
    parts = [f"gain ±{a.gain_db:g} dB"] if a.gain_db else []
    parts += [f"EQ ±{a.eq_db:g} dB"] if a.eq_db else []
    parts += [f"band shifts ±{a.max_shift_bins}"] if a.max_shift_bins else []
    parts += ["SpecAugment masks"] if a.spec_time_masks or a.spec_freq_masks else []
    parts += [f"pitch warps ±{a.pitch_semitones:g} semitones"] if a.pitch_semitones else []
    return ", ".join(parts) or "none (random crops only)"
