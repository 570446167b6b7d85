"""The ``fsl`` command line: parse options, call one core function, render the result.

Heavy modules (torch, Lightning, librosa, plotly, UMAP) are imported inside the commands
that need them, so ``fsl --help`` answers at once. Errors meant for the user
(:class:`~fslcli.errors.FslError`) print one line and exit with code 1; ``--debug`` shows
the traceback instead.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fslcli import __version__
from fslcli.config import ModelConfig, TrainConfig
from fslcli.errors import FslError

app = typer.Typer(
    name="fsl",
    help="Few-shot audio classification: train Prototypical Networks on TinySOL-shaped data and use them on your own sounds.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
cache_app = typer.Typer(help="See and reclaim the space used by the decoded-audio cache.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")

#: Progress, notes and warnings go to standard error; results to standard output.
err = Console(stderr=True, highlight=False)
out = Console(highlight=False)
_state = {"debug": False}

F = TypeVar("F", bound=Callable[..., Any])


class Dataset(str, Enum):
    tinysol = "tinysol"
    tinysol_gm = "tinysol-gm"


class Method(str, Enum):
    tsne = "tsne"
    umap = "umap"
    pca = "pca"


class Precision(str, Enum):
    p32 = "32"
    p16 = "16-mixed"
    bf16 = "bf16-mixed"


class Backbone(str, Enum):
    conv = "conv"
    resnet = "resnet"
    tutorial = "tutorial"


class InputNorm(str, Enum):
    band = "band"
    clip = "clip"
    none = "none"


class EmbeddingNorm(str, Enum):
    whitened = "whitened"
    centered_l2 = "centered-l2"
    l2 = "l2"
    none = "none"


class GroupBy(str, Enum):
    source = "source"
    note = "note"
    none = "none"


class Accelerator(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    gpu = "gpu"
    mps = "mps"


def handle_errors(fn: F) -> F:
    """Turn user-facing errors into one line and exit code 1 (tracebacks only with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FslError as exc:
            if _state["debug"]:
                raise
            # escape: paths and names may hold [brackets] that rich would take for markup
            err.print(f"[bold red]error:[/] {escape(' '.join(str(exc).split()))}", soft_wrap=True)
            raise typer.Exit(1) from None
        except OSError as exc:
            # A file-system failure no check foresaw (disk full, permissions, ...): still one line.
            if _state["debug"]:
                raise
            where = f"{exc.filename}: " if exc.filename else ""
            err.print(f"[bold red]error:[/] {escape(where + (exc.strerror or str(exc)))}", soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        out.print(f"fslcli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks for errors.")] = False,
) -> None:
    _state["debug"] = debug


@contextmanager
def progress_bar(quiet: bool = False) -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress bar on standard error; yields ``update(description, done, total)``."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    if quiet:
        yield lambda d, n, t: None
        return
    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    )
    tasks: dict[str, Any] = {}

    def update(description: str, done: int, total: int) -> None:
        if description not in tasks:
            tasks[description] = bars.add_task(description, total=total)
        bars.update(tasks[description], completed=done, total=total)

    with bars:
        yield update


def _warn_skipped(skipped: list[tuple[str, str]], limit: int = 10) -> None:
    for path, reason in skipped[:limit]:
        err.print(f"[yellow]skipped[/] {escape(str(path))}: {escape(' '.join(str(reason).split()))}", soft_wrap=True)
    if len(skipped) > limit:
        err.print(f"[yellow]... and {len(skipped) - limit} more skipped files[/]")


def _notices(lines: tuple[str, ...] | list[str]) -> None:
    for line in lines:
        err.print(f"[yellow]note:[/] {escape(line)}", soft_wrap=True)


def _report_skipped(skipped: list[tuple[str, str]]) -> None:
    if skipped:
        err.print(f"[yellow]{len(skipped)} file(s) skipped[/] (unreadable or missing; listed above)")


def _source(dataset: Dataset | None, data_home: Path | None, data_dir: Path | None, fallback: Any = None) -> Any:
    from fslcli.datasets import resolve_source

    return resolve_source(dataset.value if dataset else None, data_home, data_dir, fallback)


def _classes(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    return names


def _semitones(value: str) -> tuple[int, ...]:
    """``--pitch-shifts``: comma-separated whole semitones, or "none"."""
    from fslcli.model import pitch_shifts_problem

    if value.strip().lower() in ("none", "0", ""):
        return ()
    try:
        semitones = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise FslError(f"--pitch-shifts {value}: give whole semitones separated by commas, such as -8,-4,4,8") from None
    if why := pitch_shifts_problem(semitones):
        raise FslError(f"--pitch-shifts {value}: {why}")
    return semitones


def _short_path(path: Path, roots: list[Path]) -> str:
    """A file shown relative to the query folder it was found in (the full path is in --json)."""
    for root in roots:
        try:
            return str(path.relative_to(root))
        except ValueError:
            continue
    return str(path)


def _model_path(model: Path | None) -> Path:
    from fslcli.checkpoint import newest_model

    return model if model is not None else newest_model()


# fslcli.config is light (dataclasses only), so the defaults come from one place.
_TRAIN_DEFAULTS = TrainConfig()
_MODEL_DEFAULTS = ModelConfig()

# Shared options -----------------------------------------------------------------------
DatasetOpt = Annotated[
    Dataset | None,
    typer.Option("--dataset", help="A named dataset (default: the offline tinysol-gm, or the model's own data)."),
]
DataHomeOpt = Annotated[
    Path | None, typer.Option("--data-home", help="That dataset's folder (default ~/mir_datasets/<dataset>).")
]
DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="Your own data: a folder with one subfolder per class.")
]
CacheDirOpt = Annotated[
    Path | None, typer.Option("--cache-dir", help="Decoded-audio cache (default ~/.cache/fslcli or $FSL_CACHE_DIR).")
]
WaysOpt = Annotated[int, typer.Option("--ways", min=1, help="Classes per episode.")]
ShotsOpt = Annotated[int, typer.Option("--shots", min=1, help="Support examples per class.")]
QueriesOpt = Annotated[int, typer.Option("--queries", min=1, help="Query examples per class.")]
SeedOpt = Annotated[
    int, typer.Option("--seed", min=0, help="Seed: the same seed gives the same episodes and excerpts.")
]
GroupByOpt = Annotated[
    GroupBy,
    typer.Option(
        "--group-by",
        help="Keep support and query apart by source: clips sharing a recording (a TinySOL note, a SoundFont "
        "sample, a folder's groups.csv) never sit on both sides; note: by pitch; none: any clips.",
    ),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print one JSON object on standard output (progress goes to standard error).")
]


# download -----------------------------------------------------------------------------
@app.command()
@handle_errors
def download(
    dataset: Annotated[
        Dataset,
        typer.Argument(help="tinysol: the real TinySOL from Zenodo; tinysol-gm: render an offline TinySOL-shaped set."),
    ],
    data_home: DataHomeOpt = None,
    soundfont: Annotated[
        Path | None,
        typer.Option(
            "--soundfont", help="tinysol-gm: a .sf2/.sf3 General MIDI SoundFont (default: pretty_midi's TimGM6mb.sf2)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, help="tinysol-gm: seed for note lengths and folds.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Replace what is there.")] = False,
) -> None:
    """Fetch TinySOL (audio, metadata, index) or render the offline SoundFont dataset."""
    from fslcli.datasets.base import default_data_home

    home = (data_home or default_data_home(dataset.value)).expanduser()
    t0 = time.perf_counter()
    if dataset is Dataset.tinysol:
        from fslcli.datasets.tinysol import download_tinysol

        err.print(f"Downloading TinySOL (Zenodo record 3685367) into {home}")
        with progress_bar() as bar:
            report = download_tinysol(
                home, progress=lambda name, done, total: bar(f"{name}", done, total or max(done, 1)), force=force
            )
        if report.skipped:
            err.print(f"already complete: {', '.join(report.skipped)}")
        out.print(f"TinySOL ready in {home} ({time.perf_counter() - t0:.0f} s)")
        return
    try:
        from fslcli.datasets.tinysol_gm import render_tinysol_gm
    except ImportError as exc:
        raise FslError(
            f"rendering needs tinysoundfont ({exc}); install it with `pip install --no-deps tinysoundfont` "
            "(--no-deps: its pyaudio dependency is only for live playback)"
        ) from None
    err.print(f"Rendering the offline TinySOL-shaped dataset into {home}")
    with progress_bar() as bar:
        report = render_tinysol_gm(
            home, soundfont, seed, force=force, progress=lambda d, t: bar("Rendering notes", d, t)
        )
    if report.reused:
        out.print(f"Already rendered with the same font and seed: {home} ({report.written} files)")
        _shared_samples(report)
        return
    out.print(
        f"Rendered {report.written} files for {len(report.per_instrument)} instruments into {home} in {report.seconds:.0f} s"
        + (f"; {report.skipped_silent} notes the font cannot sound were skipped" if report.skipped_silent else "")
    )
    _shared_samples(report)


def _shared_samples(report: Any) -> None:
    """Name the instruments of a render that play common recordings, with their split sides."""
    from fslcli.datasets.tinysol_gm import default_roles

    roles = default_roles()
    for pair in report.shared:
        sides = {roles.get(pair.first), roles.get(pair.second)}
        note = " (a test instrument shares a training instrument's recordings)" if sides == {"train", "test"} else ""
        out.print(f"Shared samples: {escape(pair.describe(roles))}{note}")
    if report.shared:
        out.print(
            f"Provenance of every note: {escape(str(report.data_home / 'render_report.json'))} and the metadata CSV"
        )


# train --------------------------------------------------------------------------------
@app.command()
@handle_errors
def train(
    ways: WaysOpt = 5,
    shots: ShotsOpt = 5,
    queries: QueriesOpt = 15,
    steps: Annotated[
        int, typer.Option("--steps", min=1, help="Training episodes (optimizer steps).")
    ] = _TRAIN_DEFAULTS.steps,
    seed: SeedOpt = 0,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Run folder (default runs/<timestamp>/).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Write into a non-empty run folder.")] = False,
    resume: Annotated[
        Path | None, typer.Option("--resume", help="Continue an interrupted run from its last checkpoint.")
    ] = None,
    dataset: DatasetOpt = None,
    data_home: DataHomeOpt = None,
    data_dir: DataDirOpt = None,
    train_classes: Annotated[
        str | None, typer.Option("--train-classes", help="Comma-separated training classes.")
    ] = None,
    test_classes: Annotated[
        str | None,
        typer.Option("--test-classes", help="Comma-separated test classes (never seen in training or validation)."),
    ] = None,
    val_classes: Annotated[
        str | None,
        typer.Option(
            "--val-classes",
            help="Hold out these whole classes for validation (default: held-out recordings of the training classes).",
        ),
    ] = None,
    group_by: GroupByOpt = GroupBy.source,
    val_every: Annotated[
        int, typer.Option("--val-every", min=1, help="Validate (and checkpoint) every N steps.")
    ] = _TRAIN_DEFAULTS.val_every,
    val_episodes: Annotated[
        int, typer.Option("--val-episodes", min=1, help="Validation episodes.")
    ] = _TRAIN_DEFAULTS.val_episodes,
    train_ways: Annotated[
        int, typer.Option("--train-ways", min=0, help="Ways of training episodes (0: every training class).")
    ] = _TRAIN_DEFAULTS.train_ways,
    train_queries: Annotated[
        int,
        typer.Option(
            "--train-queries",
            min=0,
            help="Queries per class in training episodes, at most --queries (0: same as --queries).",
        ),
    ] = _TRAIN_DEFAULTS.train_queries,
    lr: Annotated[
        float, typer.Option("--lr", min=0.0, help="Peak learning rate (AdamW, warm-up then cosine decay).")
    ] = _TRAIN_DEFAULTS.learning_rate,
    backbone: Annotated[
        Backbone, typer.Option("--backbone", help="The CNN (tutorial: the ISMIR 2022 tutorial's).")
    ] = Backbone(_MODEL_DEFAULTS.backbone),
    input_norm: Annotated[
        InputNorm,
        typer.Option("--input-norm", help="band (per-band BatchNorm), clip (per-clip standardisation) or none."),
    ] = InputNorm(_MODEL_DEFAULTS.input_norm),
    embedding_norm: Annotated[
        EmbeddingNorm,
        typer.Option(
            "--embedding-norm",
            help=(
                "How embeddings are compared: whitened (centered-l2, then whitened by the training classes' "
                "within-class covariance), centered-l2 (minus the training clips' mean, unit length), l2 or none."
            ),
        ),
    ] = EmbeddingNorm(_MODEL_DEFAULTS.embedding_norm),
    members: Annotated[
        int,
        typer.Option(
            "--members",
            min=1,
            help=(
                "Independently initialised backbones trained side by side, their embeddings concatenated "
                "(an ensemble; each adds one backbone's forward and backward pass to a step)."
            ),
        ),
    ] = _MODEL_DEFAULTS.members,
    class_loss_weight: Annotated[
        float,
        typer.Option(
            "--class-loss-weight",
            min=0.0,
            help="Weight of an auxiliary loss classifying every clip over all training classes (0: off).",
        ),
    ] = _TRAIN_DEFAULTS.class_loss_weight,
    accelerator: Annotated[
        Accelerator, typer.Option("--accelerator", help="auto picks CUDA, MPS or CPU.")
    ] = Accelerator.auto,
    devices: Annotated[
        int, typer.Option("--devices", min=1, help="Devices (processes) for data-parallel training (DDP).")
    ] = 1,
    num_nodes: Annotated[int, typer.Option("--num-nodes", min=1, help="Machines, for cluster DDP.")] = 1,
    precision: Annotated[
        Precision, typer.Option("--precision", help="32, 16-mixed (GPU) or bf16-mixed.")
    ] = Precision.p32,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Train a Prototypical Network episodically; writes RUN_DIR/model.pt (best by validation accuracy)."""
    from dataclasses import replace

    from fslcli.config import EpisodeConfig, ModelConfig, RunConfig, SplitConfig, TrainConfig
    from fslcli.workflows import check_run_dir, load_run_file

    is_child = os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0"
    if resume is not None:
        config, source = load_run_file(resume)
        run_dir = resume
        if not (run_dir / "checkpoints" / "last.ckpt").is_file():
            raise FslError(
                f"--resume {run_dir}: no checkpoints/last.ckpt yet (the run stopped before its first validation); start it again with --force"
            )
    else:
        source = _source(dataset, data_home, data_dir)
        base_split = SplitConfig()
        split = SplitConfig(
            train_classes=_classes(train_classes) or base_split.train_classes,
            test_classes=_classes(test_classes) or base_split.test_classes,
            val_classes=_classes(val_classes) or (),
            group_by=group_by.value,
        )
        model_cfg = ModelConfig(
            backbone=backbone.value, input_norm=input_norm.value, embedding_norm=embedding_norm.value, members=members
        )
        if backbone is Backbone.tutorial:
            model_cfg = replace(model_cfg, channels=(32, 64, 128, 256, 512))
        config = RunConfig(
            model=model_cfg,
            episode=EpisodeConfig(ways=ways, shots=shots, queries=queries),
            train=TrainConfig(
                steps=steps,
                seed=seed,
                learning_rate=lr,
                train_ways=train_ways,
                train_queries=train_queries,
                class_loss_weight=class_loss_weight,
                val_every=min(val_every, steps),
                val_episodes=val_episodes,
                accelerator=accelerator.value,
                devices=devices,
                num_nodes=num_nodes,
                precision=precision.value,
            ),
            split=split,
        )
        env_dir = os.environ.get("FSL_RUN_DIR")
        if is_child and env_dir:
            run_dir = Path(env_dir)
        else:
            run_dir = out_dir or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
            check_run_dir(run_dir, force)
    _train(
        config,
        source,
        run_dir,
        resume is not None,
        cache_dir,
        is_child,
        explicit_split=(train_classes or test_classes or val_classes) is not None,
    )


def _train(
    config: Any,
    source: Any,
    run_dir: Path,
    resuming: bool,
    cache_dir: Path | None,
    is_child: bool,
    explicit_split: bool,
) -> None:
    from dataclasses import replace

    from fslcli.config import TrainConfig
    from fslcli.errors import OutputError
    from fslcli.training import fit, preflight
    from fslcli.workflows import prepare, save_run_file, soundfont_of

    quiet = is_child
    adapt = source.kind == "folder" and not explicit_split and not resuming
    with progress_bar(quiet) as bar:
        prep = prepare(source, config.split, config.audio.sample_rate, cache_dir, bar, adapt_split=adapt)
    if prep.split != config.split:
        config = replace(config, split=prep.split)
    if not quiet:
        _warn_skipped(prep.skipped)
        _notices(prep.notices)
        if source.kind == "folder" and adapt:
            err.print(
                f"Split for {source.path}: train on {', '.join(prep.split.train_classes)}; "
                f"test on {', '.join(prep.split.test_classes)} (set --train-classes/--test-classes to choose)"
            )
        err.print(f"Data: {source.describe()}: {len(prep.cache)} clips; validation on {prep.pools.val_description}")
        default_steps = TrainConfig().steps
        if config.train.steps < default_steps:
            err.print(
                f"[bold]Short run[/]: {config.train.steps} steps (a full `fsl train` runs {default_steps}); "
                "expect lower accuracy than a full run."
            )
    # Refused here, the run folder is not created: the same command works once fixed.
    preflight(config, prep.pools.train, prep.pools.val)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not is_child and not resuming:
            save_run_file(run_dir, config, source)
            (run_dir / "history.jsonl").unlink(missing_ok=True)
    except OSError as exc:
        raise OutputError(
            f"--out {run_dir}: cannot write the run folder ({exc.strerror or exc}); choose another --out"
        ) from None
    os.environ["FSL_RUN_DIR"] = str(run_dir)  # DDP workers re-run this command: they must find the same folder

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}  val acc {task.fields[val]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=quiet,
    )
    task = bars.add_task("Training", total=config.train.steps, loss="-", val="-")

    def on_progress(ev: dict[str, Any]) -> None:
        if ev["event"] == "step":
            bars.update(task, completed=ev["step"], loss=f"{ev['loss']:.3f}")
        elif ev["event"] == "calibrate":
            bars.update(task, description="Calibrating the comparison space")
        elif "val_acc" in ev:
            bars.update(task, val=f"{ev['val_acc']:.3f}")

    t0 = time.perf_counter()
    try:
        with bars:
            result = fit(
                config,
                prep.cache,
                prep.pools.train,
                prep.pools.val,
                source,
                run_dir,
                resume=resuming,
                progress=on_progress,
                extra_meta={"val_description": prep.pools.val_description, "soundfont_sha256": soundfont_of(source)},
                groups=prep.pools.groups,
            )
    except KeyboardInterrupt:
        if (run_dir / "checkpoints" / "last.ckpt").is_file():
            err.print(f"[yellow]Interrupted.[/] Continue with: fsl train --resume {escape(str(run_dir))}")
        else:
            err.print(
                f"[yellow]Interrupted[/] before the first validation, so there is nothing to resume: "
                f"run the same command again with --force (--out {escape(str(run_dir))})"
            )
        raise typer.Exit(130) from None
    if not result.is_global_zero:
        return
    _report_skipped(prep.skipped)
    out.print(
        f"Trained {result.steps} steps in {time.perf_counter() - t0:.0f} s; best validation accuracy "
        f"{result.best_val_acc:.3f} at step {result.best_step}"
    )
    out.print(f"Model: {result.model_path}")
    out.print(
        f"Learning curves: {run_dir / 'learning_curves.html'}; TensorBoard: tensorboard --logdir {run_dir / 'tensorboard'}"
    )


# eval ---------------------------------------------------------------------------------
@app.command("eval")
@handle_errors
def eval_cmd(
    model: Annotated[Path | None, typer.Argument(help="model.pt (default: the newest runs/*/model.pt).")] = None,
    episodes: Annotated[int, typer.Option("--episodes", min=1, help="Test episodes.")] = 1000,
    ways: WaysOpt = 5,
    shots: ShotsOpt = 5,
    queries: QueriesOpt = 15,
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
    dataset: DatasetOpt = None,
    data_home: DataHomeOpt = None,
    data_dir: DataDirOpt = None,
    test_classes: Annotated[
        str | None,
        typer.Option("--test-classes", help="Comma-separated classes to test on (default: the model's test classes)."),
    ] = None,
    windows: Annotated[
        int | None,
        typer.Option(
            "--windows",
            min=1,
            help="Excerpts per clip, the first at its onset, averaged (default: the model's setting, 1 for new models).",
        ),
    ] = None,
    shifts: Annotated[
        int | None,
        typer.Option(
            "--shifts",
            min=0,
            help="Average each clip's embeddings over its log-mel shifted by -K..K bands (default: the model's "
            "setting; 0: off).",
        ),
    ] = None,
    pitch_shifts: Annotated[
        str | None,
        typer.Option(
            "--pitch-shifts",
            help="Comma-separated semitones, such as -8,-4,4,8: also average each clip's embeddings over its "
            "spectrum warped to those pitches (default: the model's setting; 'none': off).",
        ),
    ] = None,
    support_cov_weight: Annotated[
        float | None,
        typer.Option(
            "--support-cov-weight",
            min=0.0,
            help="Whitened models, episodes with 2+ shots: weight of the support set's own within-class covariance "
            "in the whitening (default: the model's setting; 0: the training classes' alone).",
        ),
    ] = None,
    group_by: GroupByOpt = GroupBy.source,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Evaluate on the test classes: mean accuracy with its 95% interval, per class, and the confusion matrix."""
    from dataclasses import replace

    from fslcli.checkpoint import load_model
    from fslcli.config import EpisodeConfig
    from fslcli.evaluation import evaluate
    from fslcli.workflows import device_for, eval_summary, prepare, shared_sample_warning

    t0 = time.perf_counter()
    loaded = load_model(_model_path(model))
    source = _source(dataset, data_home, data_dir, fallback=loaded.source)
    # Only the test classes are read: training and validation data play no part in evaluation.
    split = loaded.config.split
    split = replace(
        split,
        test_classes=_classes(test_classes) or split.test_classes,
        train_classes=(),
        val_classes=(),
        group_by=group_by.value,
    )
    cfg = EpisodeConfig(ways=ways, shots=shots, queries=queries)
    device = device_for()
    net = loaded.net.to(device)
    n_windows = windows or loaded.config.eval_windows
    if shifts is not None:
        from fslcli.model import eval_shifts_problem

        if why := eval_shifts_problem(shifts, loaded.config.audio.n_mels):
            raise FslError(f"--shifts {shifts}: {why}")
        net.config = replace(net.config, eval_shifts=shifts)
    if pitch_shifts is not None:
        net.config = replace(net.config, eval_pitch_shifts=_semitones(pitch_shifts))
    if support_cov_weight is not None:
        if support_cov_weight >= 1.0:
            raise FslError(
                f"--support-cov-weight {support_cov_weight}: use a value below 1 (the training classes' covariance "
                "keeps the rest), such as 0.25"
            )
        if support_cov_weight > 0 and net.whitener is None:
            raise FslError(
                f"--support-cov-weight {support_cov_weight}: this model compares {net.config.embedding_norm!r} "
                "embeddings, without a within-class covariance to mix with; use it with whitened models"
            )
        net.config = replace(net.config, support_cov_weight=support_cov_weight)
    with progress_bar() as bar:
        prep = prepare(source, split, loaded.config.audio.sample_rate, cache_dir, bar)
        _warn_skipped(prep.skipped)
        _notices(prep.notices)
        result = evaluate(
            net,
            prep.cache,
            prep.pools.test,
            cfg,
            episodes,
            seed,
            n_windows,
            device,
            progress=lambda d, t: bar("Embedding test clips", d, t),
            groups=prep.pools.groups,
        )
    warning = shared_sample_warning(
        source, loaded.source, loaded.meta, list(loaded.config.split.train_classes), result.classes
    )
    if warning:
        err.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True)
    summary = eval_summary(result, cfg, seed, loaded, source, n_windows, group_by.value)
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    if as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
        _report_skipped(prep.skipped)
        return
    grouping = {
        "source": "support and query from different recordings",
        "note": "support and query from different notes",
    }
    out.print(
        f"[bold]{cfg.ways}-way {cfg.shots}-shot, {episodes} episodes[/] on {', '.join(result.classes)} ({source.describe()}; "
        f"{grouping.get(group_by.value, 'clips drawn freely: in-set copies may sit on both sides')})"
    )
    out.print(f"Mean accuracy: [bold]{result.mean_accuracy:.4f}[/] ± {result.ci95_half_width:.4f} (95% CI)")
    table = Table(title="Per-class accuracy")
    table.add_column("class")
    table.add_column("accuracy", justify="right")
    for c, a in result.per_class.items():
        table.add_row(c, f"{a:.3f}")
    out.print(table)
    conf = Table(title="Confusion (rows: true, columns: predicted)")
    conf.add_column("")
    for c in result.classes:
        conf.add_column(c[:10], justify="right")
    for c, row in zip(result.classes, result.confusion, strict=True):
        conf.add_row(c, *[str(int(v)) for v in row])
    out.print(conf)
    _report_skipped(prep.skipped)
    err.print(f"{result.clips_embedded} clips embedded once; {time.perf_counter() - t0:.1f} s in all")


#: ``--windows`` of embed and predict: how a recording becomes one embedding.
FileWindowsOpt = Annotated[
    int | None,
    typer.Option(
        "--windows",
        min=1,
        help="Embed each file from N windows starting at its onset, as `fsl eval` does (suits single notes). "
        "Default: the mean over sliding windows across the whole file (suits longer recordings).",
    ),
]


# embed --------------------------------------------------------------------------------
@app.command()
@handle_errors
def embed(
    model: Annotated[Path, typer.Argument(help="model.pt")],
    inputs: Annotated[list[Path], typer.Argument(help="Audio files or folders.")],
    out_path: Annotated[Path, typer.Option("--out", help="Output: .npz, .csv or .parquet (by suffix).")] = Path(
        "embeddings.npz"
    ),
    windows: FileWindowsOpt = None,
) -> None:
    """One embedding per recording, with its path and label (the parent folder's name)."""
    from fslcli.checkpoint import load_model
    from fslcli.inference import collect_audio, embed_files
    from fslcli.workflows import device_for, write_embeddings

    suffix = out_path.suffix.lower()
    if suffix not in (".npz", ".csv", ".parquet"):
        raise FslError(f"--out {out_path}: unknown format {suffix or '(none)'}; use .npz, .csv or .parquet")
    loaded = load_model(model)
    files = collect_audio(inputs)
    device = device_for()
    with progress_bar() as bar:
        emb = embed_files(
            loaded.net.to(device),
            files,
            device=device,
            progress=lambda d, t: bar("Embedding", d, t),
            windows=windows,
        )
    _warn_skipped([(str(p), r) for p, r in emb.skipped])
    labels = [p.parent.name for p in emb.paths]
    write_embeddings(out_path, emb.embeddings, [str(p) for p in emb.paths], labels)
    _report_skipped([(str(p), r) for p, r in emb.skipped])
    out.print(f"Wrote {len(emb.paths)} embeddings of dimension {emb.embeddings.shape[1]} to {escape(str(out_path))}")


# predict ------------------------------------------------------------------------------
@app.command()
@handle_errors
def predict(
    model: Annotated[Path, typer.Argument(help="model.pt")],
    queries: Annotated[list[Path], typer.Argument(help="Query audio files or folders.")],
    support: Annotated[
        Path, typer.Option("--support", help="Folder with one subfolder of example recordings per class.")
    ] = ...,  # type: ignore[assignment]
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Classes to list per query (JSON).")] = 2,
    reject: Annotated[
        bool, typer.Option("--reject", help="Report queries far from every prototype as 'unknown'.")
    ] = False,
    windows: FileWindowsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Classify recordings against classes given by a few examples each."""
    from fslcli.checkpoint import load_model
    from fslcli.inference import predict as run_predict
    from fslcli.workflows import device_for

    loaded = load_model(model)
    device = device_for()
    with progress_bar(quiet=False) as bar:
        res = run_predict(
            loaded.net.to(device),
            support,
            queries,
            top_k=top_k,
            reject=reject,
            device=device,
            progress=lambda d, t: bar("Embedding", d, t),
            windows=windows,
        )
    _warn_skipped([(str(p), r) for p, r in res.skipped])
    labelled = [p for p in res.predictions if p.true_class is not None]
    if as_json:
        records = []
        for p in res.predictions:
            rec = {
                "path": str(p.path),
                "predicted": p.predicted,
                "probability": p.probability,
                "runner_up": p.runner_up,
                "runner_up_probability": p.runner_up_probability,
                "top_k": [{"class": c, "probability": q} for c, q in p.top_k],
                "distance": p.distance,
            }
            if p.true_class is not None:
                rec["true_class"] = p.true_class
            records.append(rec)
        sys.stdout.write(json.dumps(records) + "\n")
        _report_skipped([(str(p), r) for p, r in res.skipped])
        return
    table = Table()
    for col in ("file", "predicted", "probability", "runner-up", "probability"):
        table.add_column(col, justify="right" if col == "probability" else "left")
    roots = [q for q in queries if q.is_dir()]
    for p in res.predictions:
        mark = "" if p.true_class is None else (" ✓" if p.predicted == p.true_class else f" ✗ ({p.true_class})")
        table.add_row(
            escape(_short_path(p.path, roots)),
            escape(p.predicted + mark),
            f"{p.probability:.3f}",
            p.runner_up or "-",
            f"{p.runner_up_probability:.3f}" if p.runner_up_probability is not None else "-",
        )
    out.print(table)
    if labelled:
        import numpy as np

        correct = sum(p.predicted == p.true_class for p in labelled)
        out.print(f"Accuracy: {correct}/{len(labelled)} = {correct / len(labelled):.3f}")
        classes = res.classes + (["unknown"] if reject else [])
        m = np.zeros((len(res.classes), len(classes)), dtype=int)
        for p in labelled:
            m[res.classes.index(p.true_class), classes.index(p.predicted)] += 1
        conf = Table(title="Confusion (rows: true, columns: predicted)")
        conf.add_column("")
        for c in classes:
            conf.add_column(c[:10], justify="right")
        for c, row in zip(res.classes, m, strict=True):
            conf.add_row(c, *[str(v) for v in row])
        out.print(conf)
    _report_skipped([(str(p), r) for p, r in res.skipped])


# plots --------------------------------------------------------------------------------
@app.command("plot-episode")
@handle_errors
def plot_episode(
    model: Annotated[Path | None, typer.Argument(help="model.pt (default: the newest runs/*/model.pt).")] = None,
    out_path: Annotated[Path, typer.Option("--out", help="Output: .html (self-contained), .png, .svg or .pdf.")] = Path(
        "episode.html"
    ),
    method: Annotated[Method, typer.Option("--method", help="Projection.")] = Method.tsne,
    dims: Annotated[int, typer.Option("--dims", min=2, max=3, help="2 or 3 dimensions.")] = 2,
    episode: Annotated[int, typer.Option("--episode", min=0, help="Which test episode (same N, same episode).")] = 0,
    ways: WaysOpt = 5,
    shots: ShotsOpt = 5,
    queries: QueriesOpt = 15,
    seed: SeedOpt = 0,
    group_by: GroupByOpt = GroupBy.source,
    dataset: DatasetOpt = None,
    data_home: DataHomeOpt = None,
    data_dir: DataDirOpt = None,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Plot one test episode's support, query and prototype embeddings."""
    from fslcli.checkpoint import load_model
    from fslcli.config import EpisodeConfig
    from fslcli.visualize import episode_plot

    loaded = load_model(_model_path(model))
    source = _source(dataset, data_home, data_dir, fallback=loaded.source)
    cfg = EpisodeConfig(ways=ways, shots=shots, queries=queries)
    with progress_bar() as bar:
        res = episode_plot(
            loaded, source, cfg, episode, seed, method.value, dims, out_path, cache_dir, bar, group_by=group_by.value
        )
    _warn_skipped(res.skipped)
    out.print(f"Episode {episode}: accuracy {res.accuracy:.3f}; wrote {escape(str(res.path))}")
    _report_skipped(res.skipped)


@app.command("plot-embeddings")
@handle_errors
def plot_embeddings(
    model: Annotated[Path | None, typer.Argument(help="model.pt (default: the newest runs/*/model.pt).")] = None,
    out_path: Annotated[Path, typer.Option("--out", help="Output: .html, .png, .svg or .pdf.")] = Path(
        "embeddings.html"
    ),
    method: Annotated[Method, typer.Option("--method", help="Projection.")] = Method.tsne,
    dims: Annotated[int, typer.Option("--dims", min=2, max=3, help="2 or 3 dimensions.")] = 2,
    include_train: Annotated[
        bool, typer.Option("--include-train", help="Also show the training classes, greyed.")
    ] = False,
    seed: SeedOpt = 0,
    dataset: DatasetOpt = None,
    data_home: DataHomeOpt = None,
    data_dir: DataDirOpt = None,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Plot every test clip and the class prototypes in one picture."""
    from fslcli.checkpoint import load_model
    from fslcli.visualize import embeddings_plot

    loaded = load_model(_model_path(model))
    source = _source(dataset, data_home, data_dir, fallback=loaded.source)
    with progress_bar() as bar:
        res = embeddings_plot(loaded, source, method.value, dims, include_train, seed, out_path, cache_dir, bar)
    _warn_skipped(res.skipped)
    out.print(f"Wrote {escape(str(res.path))} ({res.points} points)")
    _report_skipped(res.skipped)


# info ---------------------------------------------------------------------------------
@app.command()
@handle_errors
def info(
    model: Annotated[Path | None, typer.Argument(help="model.pt (default: the newest runs/*/model.pt).")] = None,
) -> None:
    """What a model is: settings, classes, data source, training time and accuracy."""
    from fslcli.checkpoint import read_payload, sha256_file

    path = _model_path(model)
    payload = read_payload(path)
    path = path / "model.pt" if path.is_dir() else path
    s, meta, splits = payload["settings"], payload.get("meta", {}), payload["splits"]
    table = Table(show_header=False, title=str(path))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("format", f"{payload['format']} v{payload['format_version']}")
    table.add_row("sha256", sha256_file(path))
    table.add_row("data", f"{payload['source']['kind']} at {payload['source']['path']}")
    table.add_row("trained on", ", ".join(splits["train"]))
    table.add_row(
        "validated on",
        meta.get("val_description") or (", ".join(splits["val"]) if splits["val"] else f"fold {splits['val_fold']}"),
    )
    table.add_row("tested on", ", ".join(splits["test"]))
    ep, tr, m, a = s["episode"], s["train"], s["model"], s["audio"]
    table.add_row("episodes", f"{ep['ways']}-way {ep['shots']}-shot {ep['queries']} queries")
    table.add_row(
        "model",
        (f"{m['members']} x " if m.get("members", 1) > 1 else "")
        + f"{m['backbone']} {m['channels']} -> {m['embedding_dim']}, pooling {m.get('pooling', 'global')}, "
        f"input norm {m['input_norm']}" + (f", dropout {m['dropout']}" if m.get("dropout") else ""),
    )
    norm = m.get("embedding_norm", "none")
    if norm == "whitened":
        adapt = m.get("support_cov_weight", 0.0)
        norm = f"whitened (shrinkage {m.get('whiten_shrinkage')}" + (f", support covariance {adapt})" if adapt else ")")
    else:
        norm = f"embeddings {norm}"
    table.add_row("compared by", f"{m['distance']} distance, {norm}")
    shifts = m.get("eval_shifts", 0)
    pitches = m.get("eval_pitch_shifts", [])
    table.add_row(
        "evaluation",
        f"{s.get('eval_windows', 1)} window(s) per clip, the first at its onset"
        + (f", band shifts -{shifts}..{shifts}" if shifts else "")
        + (f", pitch shifts {', '.join(f'{p:+d}' for p in pitches)} semitones" if pitches else ""),
    )
    table.add_row(
        "audio",
        f"{a['sample_rate']} Hz, {a['excerpt_seconds']} s excerpts, {a['n_mels']} {a.get('frequency_scale', 'mel')} "
        f"bands, {a['compression']}",
    )
    table.add_row(
        "training",
        f"{meta.get('steps', '?')} steps, seed {tr['seed']}, lr {tr['learning_rate']}, {meta.get('train_seconds', '?')} s",
    )
    if meta.get("best_val_acc") is not None:
        table.add_row("validation accuracy", f"{meta['best_val_acc']:.4f} (step {meta.get('best_step')})")
    if meta.get("test_acc") is not None:
        table.add_row("test accuracy", f"{meta['test_acc']:.4f}")
    out.print(table)


# cache --------------------------------------------------------------------------------
@cache_app.command("info")
@handle_errors
def cache_info(cache_dir: CacheDirOpt = None) -> None:
    """List the caches and the space they use."""
    from fslcli.features import default_cache_dir, list_caches

    root = cache_dir or default_cache_dir()
    entries = list_caches(root)
    table = Table(title=f"Cache: {root}")
    for col in ("folder", "clips", "sample rate", "size"):
        table.add_column(col)
    for e in entries:
        table.add_row(e.path.name, str(e.clips), str(e.sample_rate), f"{e.bytes / 2**20:.1f} MiB")
    out.print(table)
    out.print(f"{len(entries)} cache(s), {sum(e.bytes for e in entries) / 2**20:.1f} MiB in all")


@cache_app.command("clear")
@handle_errors
def cache_clear(cache_dir: CacheDirOpt = None) -> None:
    """Delete every cache (they are rebuilt on demand)."""
    from fslcli.features import clear_caches, default_cache_dir

    root = cache_dir or default_cache_dir()
    freed = clear_caches(root)
    out.print(f"Freed {freed / 2**20:.1f} MiB in {root}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
