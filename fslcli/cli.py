"""The ``fsl`` command line: parse options, call one workflow, render the result.

Heavy modules (torch, Lightning, librosa, plotly, UMAP) are imported inside the workflows
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
from fslcli.config import EVAL_WINDOWS, TRAIN_EPISODE, DetectConfig, TrainConfig
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


class Downloadable(str, Enum):
    tinysol = "tinysol"
    tinysol_gm = "tinysol-gm"
    examples = "examples"


class Method(str, Enum):
    tsne = "tsne"
    umap = "umap"
    pca = "pca"


class Precision(str, Enum):
    p32 = "32"
    p16 = "16-mixed"
    bf16 = "bf16-mixed"


class Accelerator(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class GroupBy(str, Enum):
    source = "source"
    note = "note"
    none = "none"


class Preset(str, Enum):
    default = "default"
    tutorial = "tutorial"


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
    """A rich progress bar on standard error, shown from its first update; yields
    ``update(description, done, total)``."""
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
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    bars = Progress(*columns, console=err, transient=False)
    tasks: dict[str, Any] = {}

    def update(description: str, done: int, total: int) -> None:
        if not tasks:
            bars.start()
        if description not in tasks:
            tasks[description] = bars.add_task(description, total=total)
        bars.update(tasks[description], completed=done, total=total)

    try:
        yield update
    finally:
        if tasks:
            bars.stop()


def _note(line: str) -> None:
    err.print(f"[yellow]note:[/] {escape(line)}", soft_wrap=True)


def _skipped(skipped: list[tuple[Any, str]], limit: int = 10) -> None:
    """Name the first skipped files, then count them all."""
    for path, reason in skipped[:limit]:
        err.print(f"[yellow]skipped[/] {escape(str(path))}: {escape(' '.join(str(reason).split()))}", soft_wrap=True)
    if skipped:
        err.print(f"[yellow]{len(skipped)} file(s) skipped[/] (unreadable or missing)")


def _classes(value: str | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(n.strip() for n in value.split(",") if n.strip())


def _windows(value: str) -> Any:
    from fslcli.embedding import parse_windows

    return parse_windows(value)


def _model(model: Path | None) -> Path:
    """MODEL as given, else the newest ``runs/*/model.pt``, else the model that ships with fslcli
    (said in one line on standard error)."""
    from fslcli.checkpoint import default_model

    if model is not None:
        return model
    path, note = default_model()
    if note:
        _note(note)
    return path


def _model_and_inputs(args: list[Path], *, example: str, need_inputs: bool = True) -> tuple[Path, list[Path]]:
    """``[MODEL] INPUT...``: the first argument is the model when it is a ``.pt`` file or a run
    folder holding ``model.pt``; otherwise MODEL is chosen as :func:`_model` chooses it and every
    argument is input (at least one, with ``need_inputs``; ``example`` is the command's usage
    that the error shows)."""
    if args and (args[0].suffix == ".pt" or (args[0] / "model.pt").is_file()):
        model, inputs = args[0], args[1:]
    else:
        model, inputs = _model(None), args
    if not inputs and need_inputs:
        raise FslError(f"give audio files or folders after MODEL, e.g. {example}")
    return model, inputs


def _source(dataset: Dataset | None, data_home: Path | None, data_dir: Path | None) -> Any:
    from fslcli.workflows import SourceChoice

    return SourceChoice(dataset.value if dataset else None, data_home, data_dir)


# Shared options -----------------------------------------------------------------------
ModelArg = Annotated[
    Path | None, typer.Argument(help="model.pt or a run folder (default: the newest runs/*/model.pt).")
]
ModelAndInputs = Annotated[
    list[Path], typer.Argument(help="[MODEL] then audio files or folders (MODEL default: the newest runs/*/model.pt).")
]
DatasetOpt = Annotated[
    Dataset | None,
    typer.Option("--dataset", help="A named dataset (default: the offline tinysol-gm, or the model's own data)."),
]
DataHomeOpt = Annotated[
    Path | None, typer.Option("--data-home", help="That dataset's folder (default ~/mir_datasets/<dataset>).")
]
TrainDataHomeOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--data-home",
        metavar="PATH",
        help="That dataset's folder (default ~/mir_datasets/<dataset>). Repeat it to train on several libraries "
        "at once, e.g. two SoundFonts' renders: a class name in both is one class, its episodes mix them.",
    ),
]
DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="Your own data: a folder with one subfolder per class.")
]
CacheDirOpt = Annotated[
    Path | None, typer.Option("--cache-dir", help="Decoded-audio cache (default ~/.cache/fslcli or $FSL_CACHE_DIR).")
]
WaysOpt = Annotated[int, typer.Option("--ways", min=2, help="Classes per episode.")]
ShotsOpt = Annotated[int, typer.Option("--shots", min=1, help="Support examples per class.")]
QueriesOpt = Annotated[int, typer.Option("--queries", min=1, help="Query examples per class.")]
SeedOpt = Annotated[
    int, typer.Option("--seed", min=0, help="Seed: the same seed gives the same episodes and excerpts.")
]
GroupByOpt = Annotated[
    GroupBy,
    typer.Option(
        "--group-by",
        help="Keep support and query apart: source (clips sharing a recording, such as a TinySOL note, a "
        "SoundFont sample or a folder's groups.csv, never sit on both sides), note (by pitch) or none.",
    ),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print one JSON object on standard output (progress goes to standard error).")
]
MethodOpt = Annotated[Method, typer.Option("--method", help="Projection.")]
DimsOpt = Annotated[int, typer.Option("--dims", min=2, max=3, help="2 or 3 dimensions.")]


def _windows_opt(default: str, what: str) -> Any:
    return Annotated[
        str,
        typer.Option(
            "--windows",
            help=f"Excerpts per recording: N (the first at its onset, the rest spread to its end) or 'all' "
            f"(every excerpt across it). Default {default}: {what}.",
        ),
    ]


# download -----------------------------------------------------------------------------
@app.command()
@handle_errors
def download(
    dataset: Annotated[
        Downloadable,
        typer.Argument(
            help="tinysol: the real TinySOL from Zenodo; tinysol-gm: render an offline TinySOL-shaped set; examples: "
            "render a few notes of the five test instruments to try fsl predict on."
        ),
    ],
    data_home: DataHomeOpt = None,
    soundfont: Annotated[
        Path | None,
        typer.Option(
            "--soundfont", help="tinysol-gm: a .sf2/.sf3 General MIDI font (default: pretty_midi's TimGM6mb)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, help="tinysol-gm: seed for note lengths and folds.")] = 0,
    tinysol_only: Annotated[
        bool,
        typer.Option("--tinysol-only", help="tinysol-gm: TinySOL's 14 instruments alone, without the other GM sounds."),
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace what is there.")] = False,
) -> None:
    """Fetch TinySOL (audio, metadata, index) or render the offline set from a SoundFont."""
    from fslcli.datasets.base import default_data_home
    from fslcli.workflows import download as run

    home = (data_home or default_data_home(dataset.value)).expanduser()
    err.print(
        f"{'Downloading TinySOL (Zenodo record 3685367)' if dataset is Dataset.tinysol else 'Rendering'} into {home}"
    )
    with progress_bar() as bar:
        done = run(
            dataset.value,
            home=home,
            soundfont=soundfont,
            seed=seed,
            force=force,
            tinysol_only=tinysol_only,
            progress=bar,
        )
    report = done.report
    if dataset is Downloadable.examples:
        out.print(
            f"Examples in {home}: {report.support} support and {report.queries} query notes of each of "
            f"{', '.join(report.classes)}. Try: fsl predict --support {home / 'support'} {home / 'queries'}"
        )
        return
    if report is None:
        if done.already:
            err.print(f"already complete: {', '.join(done.already)}")
        out.print(f"TinySOL ready in {home} ({done.seconds:.0f} s)")
        return
    if report.reused:
        out.print(f"Already rendered with the same font and seed: {home} ({report.written} files)")
    else:
        silent = f"; {report.skipped_silent} notes the font cannot sound were skipped" if report.skipped_silent else ""
        out.print(
            f"Rendered {report.written} files of {len(report.per_instrument)} instruments and sounds into {home} "
            f"in {report.seconds:.0f} s{silent}"
        )
    _shared_samples(report)


def _shared_samples(report: Any) -> None:
    """Name the instruments of a render that share recordings with a test instrument."""
    from fslcli.datasets.tinysol_gm import default_roles

    roles = default_roles()
    tested = [p for p in report.shared if "test" in (roles.get(p.first), roles.get(p.second))]
    for pair in tested:
        # fsl train leaves out every class that shares recordings with a test class, unless
        # --train-classes names it (then fsl eval warns in that font).
        other = pair.first if roles.get(pair.second) == "test" else pair.second
        out.print(
            f"Shared samples: {escape(pair.describe(roles))} ({escape(other)} is left out of training by default)"
        )
    if report.shared:
        out.print(
            f"{len(report.shared)} pair(s) of sounds share recordings in all; provenance of every note: "
            f"{escape(str(report.data_home / 'render_report.json'))} and the metadata CSV"
        )


# train --------------------------------------------------------------------------------
_TRAIN = TrainConfig()


@app.command()
@handle_errors
def train(
    ways: Annotated[
        int | None,
        typer.Option(
            "--ways",
            min=2,
            help=f"Classes per training episode, at most the training classes (default {TRAIN_EPISODE.ways}; "
            "the tutorial preset's 5).",
        ),
    ] = None,
    shots: Annotated[
        int | None,
        typer.Option(
            "--shots", min=1, help=f"Support clips per class in training episodes (default {TRAIN_EPISODE.shots})."
        ),
    ] = None,
    queries: Annotated[
        int | None,
        typer.Option(
            "--queries",
            min=1,
            help=f"Query clips per class in training episodes (default {TRAIN_EPISODE.queries}; the tutorial preset's 20).",
        ),
    ] = None,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Training episodes (optimizer steps).")] = _TRAIN.steps,
    seed: SeedOpt = 0,
    preset: Annotated[
        Preset,
        typer.Option(
            "--preset",
            help="default, or tutorial: the ISMIR 2022 tutorial's network and training, on TinySOL's nine "
            "training instruments unless --train-classes names others.",
        ),
    ] = Preset.default,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Run folder (default runs/<timestamp>/).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Write into a non-empty run folder.")] = False,
    resume: Annotated[
        Path | None, typer.Option("--resume", help="Continue an interrupted run from its last checkpoint.")
    ] = None,
    dataset: DatasetOpt = None,
    data_home: TrainDataHomeOpt = None,
    data_dir: DataDirOpt = None,
    train_classes: Annotated[
        str | None,
        typer.Option("--train-classes", help="Comma-separated training classes (default: every other class)."),
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
    ] = _TRAIN.val_every,
    val_episodes: Annotated[
        int, typer.Option("--val-episodes", min=1, help="Validation episodes.")
    ] = _TRAIN.val_episodes,
    lr: Annotated[float, typer.Option("--lr", min=0.0, help="Peak learning rate.")] = _TRAIN.learning_rate,
    accelerator: Annotated[
        Accelerator, typer.Option("--accelerator", help="auto picks CUDA, MPS or the CPU.")
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

    from fslcli.config import PRESETS, RunConfig, SplitConfig
    from fslcli.workflows import check_run_dir, load_run_file

    is_child = os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0"
    explicit_split = (train_classes or test_classes or val_classes) is not None
    if resume is not None:
        config, sources = load_run_file(resume)
        run_dir = resume
    else:
        sources = tuple(_source(dataset, home, data_dir).resolve() for home in data_home or [None])
        base = RunConfig(
            train=replace(
                _TRAIN, steps=steps, seed=seed, learning_rate=lr, val_every=min(val_every, steps),
                val_episodes=val_episodes, accelerator=accelerator.value, devices=devices, num_nodes=num_nodes,
                precision=precision.value,
            ),
            split=SplitConfig(
                train_classes=_classes(train_classes),
                test_classes=_classes(test_classes) or SplitConfig().test_classes,
                val_classes=_classes(val_classes) or (),
                group_by=group_by.value,
            ),
        )  # fmt: skip
        config = PRESETS[preset.value](base)
        given = {k: v for k, v in (("ways", ways), ("shots", shots), ("queries", queries)) if v is not None}
        config = replace(config, episode=replace(config.episode, **given))
        env_dir = os.environ.get("FSL_RUN_DIR")
        run_dir = Path(env_dir) if is_child and env_dir else out_dir or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
        if not is_child:
            check_run_dir(run_dir, force)
    if not is_child and config.train.steps < _TRAIN.steps:
        _note(
            f"a short run of {config.train.steps} steps (a full `fsl train` runs {_TRAIN.steps}): expect lower accuracy"
        )
    os.environ["FSL_RUN_DIR"] = str(run_dir)  # DDP workers re-run this command: they must find the same folder
    _train(
        config,
        sources,
        run_dir,
        resume is not None,
        cache_dir,
        quiet=is_child,
        adapt=sources[0].kind == "folder" and not explicit_split,
    )


def _train(
    config: Any, sources: Any, run_dir: Path, resuming: bool, cache_dir: Path | None, *, quiet: bool, adapt: bool
) -> None:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from fslcli.workflows import train as run

    bars = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}  val acc {task.fields[val]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=err, disable=quiet,
    )  # fmt: skip

    def on_event(ev: dict[str, Any]) -> None:
        if "training" not in tasks:
            tasks["training"] = bars.add_task("Training", total=config.train.steps, loss="-", val="-")
        if ev["event"] == "step":
            bars.update(tasks["training"], completed=ev["step"], loss=f"{ev['loss']:.3f}")
        elif "val_acc" in ev:
            bars.update(tasks["training"], val=f"{ev['val_acc']:.3f}")

    def on_progress(description: str, done: int, total: int) -> None:
        if description not in tasks:
            tasks[description] = bars.add_task(description, total=total, loss="-", val="-")
        bars.update(tasks[description], completed=done, total=total)

    tasks: dict[str, Any] = {}
    t0 = time.perf_counter()
    try:
        with bars:
            result = run(
                config, sources, run_dir=run_dir, resume=resuming, adapt_split=adapt, cache_dir=cache_dir,
                report=(lambda line: None) if quiet else (lambda line: err.print(escape(line), soft_wrap=True)),
                progress=on_progress, events=on_event,
            )  # fmt: skip
    except KeyboardInterrupt:
        if (run_dir / "checkpoints" / "last.ckpt").is_file():
            err.print(f"[yellow]Interrupted.[/] Continue with: fsl train --resume {escape(str(run_dir))}")
        else:
            err.print(
                "[yellow]Interrupted[/] before the first validation, so there is nothing to resume: "
                f"run the same command again with --force (--out {escape(str(run_dir))})"
            )
        raise typer.Exit(130) from None
    if not result.is_global_zero:
        return
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
    model: ModelArg = None,
    episodes: Annotated[int, typer.Option("--episodes", min=1, help="Test episodes.")] = 1000,
    ways: WaysOpt = 5,
    shots: ShotsOpt = 5,
    queries: QueriesOpt = 15,
    seed: SeedOpt = 0,
    group_by: GroupByOpt = GroupBy.source,
    windows: _windows_opt(str(EVAL_WINDOWS), "one excerpt at each clip's onset, one at its end") = str(EVAL_WINDOWS),  # type: ignore[valid-type]
    as_json: JsonOpt = False,
    dataset: DatasetOpt = None,
    data_home: DataHomeOpt = None,
    data_dir: DataDirOpt = None,
    test_classes: Annotated[
        str | None, typer.Option("--test-classes", help="Comma-separated classes to test on (default: the model's).")
    ] = None,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Evaluate on the test classes: mean accuracy with its 95% interval, per class, and the confusion matrix."""
    from fslcli.config import EpisodeConfig
    from fslcli.workflows import evaluate_model

    cfg = EpisodeConfig(ways=ways, shots=shots, queries=queries)
    with progress_bar() as bar:
        done = evaluate_model(
            _model(model), data=_source(dataset, data_home, data_dir), test_classes=_classes(test_classes),
            episode=cfg, episodes=episodes, seed=seed, windows=_windows(windows), group_by=group_by.value,
            cache_dir=cache_dir, progress=bar,
        )  # fmt: skip
    for line in done.notices:
        _note(line)
    if done.warning:
        err.print(f"[yellow]warning:[/] {escape(done.warning)}", soft_wrap=True)
    if as_json:
        sys.stdout.write(json.dumps(done.summary) + "\n")
        _skipped(done.skipped)
        return
    r = done.result
    grouping = {
        "source": "support and query from different recordings",
        "note": "support and query from different notes",
    }
    protocol = grouping.get(group_by.value, "clips drawn freely: copies of one recording may sit on both sides")
    out.print(
        f"[bold]{cfg.ways}-way {cfg.shots}-shot, {episodes} episodes[/] on {', '.join(r.classes)} ({done.source.describe()}; {protocol})"
    )
    out.print(f"Mean accuracy: [bold]{r.mean_accuracy:.4f}[/] ± {r.ci95_half_width:.4f} (95% CI)")
    table = Table(title="Per-class accuracy")
    table.add_column("class")
    table.add_column("accuracy", justify="right")
    for c, a in r.per_class.items():
        table.add_row(escape(c), f"{a:.3f}")
    out.print(table)
    out.print(_confusion(r.classes, r.classes, r.confusion))
    _skipped(done.skipped)
    err.print(f"{r.clips_embedded} clips embedded once; {done.summary['seconds']:.1f} s in all")


def _confusion(rows: list[str], columns: list[str], matrix: Any) -> Table:
    table = Table(title="Confusion (rows: true, columns: predicted)")
    table.add_column("")
    for c in columns:
        table.add_column(escape(c[:10]), justify="right")
    for c, row in zip(rows, matrix, strict=True):
        table.add_row(escape(c), *[str(int(v)) for v in row])
    return table


# embed and predict --------------------------------------------------------------------
@app.command()
@handle_errors
def embed(
    args: ModelAndInputs,
    out_path: Annotated[Path, typer.Option("--out", help="Output file: .npz, .csv or .parquet (by suffix).")] = Path(
        "embeddings.npz"
    ),
    windows: _windows_opt("all", "every excerpt across each file") = "all",  # type: ignore[valid-type]
) -> None:
    """One embedding per recording, in the space the model compares in, with its path and label (the parent folder's name)."""
    from fslcli.inference import check_embeddings_path
    from fslcli.workflows import embed as run

    check_embeddings_path(out_path)
    model, inputs = _model_and_inputs(args, example="fsl embed runs/x/model.pt my_sounds/")
    with progress_bar() as bar:
        done = run(model, inputs, out=out_path, windows=_windows(windows), progress=bar)
    _skipped(done.skipped)
    out.print(f"Wrote {done.rows} embeddings of dimension {done.dim} to {escape(str(done.path))}")


@app.command()
@handle_errors
def predict(
    args: ModelAndInputs,
    support: Annotated[
        Path, typer.Option("--support", help="Folder with one subfolder of example recordings per class.")
    ] = ...,  # type: ignore[assignment]
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Classes to list per query (JSON).")] = 2,
    reject: Annotated[
        bool, typer.Option("--reject", help="Report queries far from every prototype as 'unknown'.")
    ] = False,
    windows: _windows_opt("all", "every excerpt across each file") = "all",  # type: ignore[valid-type]
    as_json: JsonOpt = False,
) -> None:
    """Classify recordings against classes given by a few examples each."""
    from fslcli.workflows import predict as run

    model, queries = _model_and_inputs(args, example="fsl predict --support examples/ my_sounds/")
    with progress_bar() as bar:
        res = run(model, queries, support=support, top_k=top_k, reject=reject, windows=_windows(windows), progress=bar)
    if as_json:
        sys.stdout.write(json.dumps([_prediction_record(p) for p in res.predictions]) + "\n")
    else:
        _prediction_tables(res, [q for q in queries if q.is_dir()], reject)
    _skipped(res.skipped)


def _prediction_record(p: Any) -> dict[str, Any]:
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
    return rec


def _prediction_tables(res: Any, roots: list[Path], reject: bool) -> None:
    import numpy as np

    table = Table()
    for col in ("file", "predicted", "probability", "runner-up", "probability"):
        table.add_column(col, justify="right" if col == "probability" else "left")
    for p in res.predictions:
        mark = "" if p.true_class is None else (" ✓" if p.predicted == p.true_class else f" ✗ ({p.true_class})")
        shown = next((str(p.path.relative_to(r)) for r in roots if p.path.is_relative_to(r)), str(p.path))
        table.add_row(
            escape(shown),
            escape(p.predicted + mark),
            f"{p.probability:.3f}",
            escape(p.runner_up),
            f"{p.runner_up_probability:.3f}",
        )
    out.print(table)
    labelled = [p for p in res.predictions if p.true_class is not None]
    if labelled:
        correct = sum(p.predicted == p.true_class for p in labelled)
        out.print(f"Accuracy: {correct}/{len(labelled)} = {correct / len(labelled):.3f}")
        columns = res.classes + (["unknown"] if reject else [])
        m = np.zeros((len(res.classes), len(columns)), dtype=int)
        for p in labelled:
            m[res.classes.index(p.true_class), columns.index(p.predicted)] += 1
        out.print(_confusion(res.classes, columns, m))


# detect -------------------------------------------------------------------------------
_DETECT = DetectConfig()
#: Events listed in the table (all of them go to --out and --json).
EVENTS_SHOWN = 50


@app.command()
@handle_errors
def detect(
    args: Annotated[
        list[Path] | None,
        typer.Argument(
            help="[MODEL] then recordings or folders (MODEL default: the newest runs/*/model.pt; with --examples, "
            "the recordings default to those its rows name).",
            metavar="[MODEL] RECORDING...",
            show_default=False,
        ),
    ] = None,
    support: Annotated[
        Path | None, typer.Option("--support", help="Folder with one subfolder of example recordings per class.")
    ] = None,
    examples: Annotated[
        Path | None,
        typer.Option(
            "--examples",
            help="CSV of path,start,end,label rows marking example events inside the recordings (instead of --support).",
        ),
    ] = None,
    out_path: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Write the events: .csv (path,onset,offset,label,score), .txt (Audacity labels) or "
            ".selections.txt (Raven selection table).",
        ),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            help="Draw the spectrogram and the events, one row per class: .html (self-contained), .png, .svg or .pdf.",
        ),
    ] = None,
    threshold: Annotated[
        float, typer.Option("--threshold", help="Smoothed class probability at which a window joins an event.")
    ] = _DETECT.threshold,
    min_duration: Annotated[
        float, typer.Option("--min-duration", help="Drop events shorter than this many seconds.")
    ] = _DETECT.min_duration,
    hop: Annotated[
        float | None,
        typer.Option(
            "--hop",
            help="Seconds between windows (default: a quarter of the model's excerpt, 0.25 s; at most half of it). "
            "Each window is embedded on its own: a longer hop is faster.",
            show_default=False,
        ),
    ] = None,
    smooth: Annotated[
        float, typer.Option("--smooth", help="Median filter over each class's probabilities, in seconds (0: off).")
    ] = _DETECT.smooth,
    as_json: JsonOpt = False,
) -> None:
    """Find where the support classes sound in long recordings (few-shot sound event detection)."""
    from dataclasses import replace

    from fslcli.workflows import detect as run

    model, recordings = _model_and_inputs(
        list(args or []), example="fsl detect --support examples/ recording.wav", need_inputs=examples is None
    )
    settings = replace(_DETECT, threshold=threshold, min_duration=min_duration, hop=hop, smooth=smooth)
    with progress_bar() as bar:
        done = run(
            model, recordings, support=support, examples=examples, settings=settings, out=out_path, plot=plot,
            progress=bar,
        )  # fmt: skip
    res = done.result
    if as_json:
        sys.stdout.write(json.dumps(done.summary) + "\n")
        _skipped(res.skipped)
        return
    table = Table(title=f"{len(res.events)} event(s) of {', '.join(escape(c) for c in res.classes)}")
    for col in ("file", "onset (s)", "offset (s)", "label", "score"):
        table.add_column(col, justify="right" if col in ("onset (s)", "offset (s)", "score") else "left")
    for e in res.events[:EVENTS_SHOWN]:
        table.add_row(escape(e.path.name), f"{e.onset:.2f}", f"{e.offset:.2f}", escape(e.label), f"{e.score:.2f}")
    out.print(table)
    if len(res.events) > EVENTS_SHOWN:
        out.print(f"... and {len(res.events) - EVENTS_SHOWN} more (all of them with --out or --json)")
    seconds = sum(t.duration for t in res.timelines)
    err.print(f"{len(res.timelines)} recording(s), {seconds:.1f} s of audio, windows every {res.hop:.3f} s")
    for path in (done.out, done.plot):
        if path is not None:
            out.print(f"Wrote {escape(str(path))}")
    _skipped(res.skipped)


# plots --------------------------------------------------------------------------------
@app.command("plot-episode")
@handle_errors
def plot_episode(
    model: ModelArg = None,
    out_path: Annotated[
        Path, typer.Option("--out", help="Output file: .html (self-contained), .png, .svg or .pdf.")
    ] = Path("episode.html"),
    method: MethodOpt = Method.tsne,
    dims: DimsOpt = 2,
    episode: Annotated[
        int, typer.Option("--episode", min=0, help="Which test episode (fsl eval's episode N, same seed).")
    ] = 0,
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
    from fslcli.config import EpisodeConfig
    from fslcli.workflows import plot_episode as run

    with progress_bar() as bar:
        res = run(
            _model(model), out=out_path, data=_source(dataset, data_home, data_dir),
            episode=EpisodeConfig(ways=ways, shots=shots, queries=queries), index=episode, seed=seed,
            group_by=group_by.value, method=method.value, dims=dims, cache_dir=cache_dir, progress=bar,
        )  # fmt: skip
    _skipped(res.skipped)
    out.print(f"Episode {episode}: accuracy {res.accuracy:.3f}; wrote {escape(str(res.path))}")


@app.command("plot-embeddings")
@handle_errors
def plot_embeddings(
    model: ModelArg = None,
    out_path: Annotated[Path, typer.Option("--out", help="Output file: .html, .png, .svg or .pdf.")] = Path(
        "embeddings.html"
    ),
    method: MethodOpt = Method.tsne,
    dims: DimsOpt = 2,
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
    from fslcli.workflows import plot_embeddings as run

    with progress_bar() as bar:
        res = run(
            _model(model), out=out_path, data=_source(dataset, data_home, data_dir), include_train=include_train,
            seed=seed, method=method.value, dims=dims, cache_dir=cache_dir, progress=bar,
        )  # fmt: skip
    _skipped(res.skipped)
    out.print(f"Wrote {escape(str(res.path))} ({res.points} points)")


# info and cache -----------------------------------------------------------------------
@app.command()
@handle_errors
def info(model: ModelArg = None) -> None:
    """What a model is: settings, classes, data source, training time and accuracy."""
    from fslcli.workflows import model_info

    table = Table(show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for field, value in model_info(_model(model)):
        table.add_row(field, escape(value))
    out.print(table)


@app.command()
@handle_errors
def models() -> None:
    """The models you can use: the ones that ship with fslcli, then your runs (runs/*/model.pt)."""
    from fslcli.workflows import list_models

    table = Table(title="Models (MODEL defaults to the newest run, else the bundled default)")
    for col in ("name", "kind", "where", "trained on", "held-out libraries, 5-way 5-shot/1-shot"):
        table.add_column(col)
    for m in list_models():
        table.add_row(escape(m.name), m.kind, escape(str(m.path)), escape(m.trained_on), escape(m.held_out))
    out.print(table)


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
    out.print(f"Freed {clear_caches(root) / 2**20:.1f} MiB in {root}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
