"""Held-out sample libraries: what a model's figures are worth on recordings it never heard.

Renders the offline set from three General MIDI sample libraries, each with its own role:

- TimGM6mb (ships with pretty_midi): trains the default. Its own figures are *in-font* and
  optimistic: the test instruments were played by the same sample library, and its Viola plays
  the Violin's samples (a training instrument);
- FluidR3_GM (Debian ``fluid-soundfont-gm``): held out; may guide design choices;
- MuseScore_General (Debian ``musescore-general-soundfont``): held out; reports only.

Trains fslcli's default configuration on TimGM6mb with each seed, and the ISMIR 2022 tutorial's
configuration for the same wall time (its step count is set from a short timing probe), then
evaluates every model on the test instruments of every library under the grouped protocol
(support and query never share a source recording): 5-way 5-shot and 5-way 1-shot, 15 queries,
1,000 episodes, test seed 0, each clip embedded as ``fsl eval`` embeds it (``EVAL_WINDOWS``).
The table gives each cell's mean over seeds with the mean 95% interval over episodes, and the
seeds' spread (min-max). The in-font rows are also given
ungrouped (clips drawn freely, as before grouping existed) for comparison.

    python benchmarks/libraries.py --out benchmarks/results/libraries-cpu.json [--seeds 0,1,2]
    python benchmarks/libraries.py --models runs/a/model.pt runs/b/model.pt --name mine   # no training

Needs ``apt-get install fluid-soundfont-gm musescore-general-soundfont`` for the two held-out
fonts (or ``--font NAME=PATH``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

#: The libraries, in report order: (name, role, where Debian or pip puts the font; None: pretty_midi's).
LIBRARIES: tuple[tuple[str, str, str | None], ...] = (
    ("TimGM6mb", "train (in-font: optimistic)", None),
    ("FluidR3_GM", "held out (may guide design)", "/usr/share/sounds/sf2/FluidR3_GM.sf2"),
    ("MuseScore_General", "held out (report only)", "/usr/share/sounds/sf3/MuseScore_General.sf3"),
)
TRAIN_LIBRARY = "TimGM6mb"
SHOTS = (5, 1)
#: Steps of the tutorial configuration's timing probe.
PROBE_STEPS = 20


def render_libraries(work: Path, fonts: dict[str, Path | None]) -> dict[str, Path]:
    """Render (or reuse) the offline set from each font into ``work/data/<name>``: the training
    library with every GM sound, as ``fsl download tinysol-gm`` renders it; the held-out ones with
    TinySOL's 14 instruments, all their test needs."""
    from fslcli.config import DEFAULT_TEST_CLASSES
    from fslcli.datasets.general_midi import ALL_INSTRUMENTS
    from fslcli.datasets.instruments import INSTRUMENTS
    from fslcli.datasets.tinysol_gm import render_tinysol_gm

    homes = {}
    for name, font in fonts.items():
        t0 = time.perf_counter()
        instruments = ALL_INSTRUMENTS if name == TRAIN_LIBRARY else INSTRUMENTS
        report = render_tinysol_gm(work / "data" / name, font, instruments=instruments)
        what = "reused" if report.reused else f"rendered in {time.perf_counter() - t0:.0f} s"
        tested = [(p.first, p.second) for p in report.shared if {p.first, p.second} & set(DEFAULT_TEST_CLASSES)]
        log(
            f"{name}: {report.written} files ({what}); {len(report.shared)} pairs of sounds share samples, with test instruments: {tested}"
        )
        homes[name] = report.data_home
    return homes


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def train(config: Any, prep: Any, run_dir: Path) -> tuple[Path, float, dict[str, Any]]:
    """Train with fit() as ``fsl train`` does; the model file, wall seconds and its history."""
    from fslcli.data import shared_pairs_in, sources_meta
    from fslcli.splits import make_pools, resolve_split
    from fslcli.training import fit, read_history

    def progress(ev: dict[str, Any]) -> None:
        if ev.get("event") == "val" and "val_acc" in ev:
            log(f"  step {ev['step']}: validation accuracy {ev['val_acc']:.3f}")

    # The configuration's own split (the tutorial preset's differs from the data's default),
    # resolved as fsl train resolves it (train_classes None made explicit).
    split, _ = resolve_split(config.split, prep.cache.labels(), shared_pairs_in(prep.sources))
    pools = prep.pools if split == prep.split else make_pools(prep.cache.clips, split)
    config = replace(config, split=split)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "history.jsonl").unlink(missing_ok=True)  # a run folder reused: its history starts again
    t0 = time.perf_counter()
    fitted = fit(
        config,
        prep.cache,
        train_pool=pools.train,
        val_pool=pools.val,
        source=prep.source,
        run_dir=run_dir,
        groups=pools.groups,
        libraries=prep.libraries,
        progress=progress,
        extra_meta={"val_description": pools.val_description, **sources_meta(prep.sources)},
    )
    seconds = time.perf_counter() - t0
    history = [{k: r.get(k) for k in ("step", "seconds", "val_acc", "val_loss")} for r in read_history(run_dir)]
    return (
        fitted.model_path,
        seconds,
        {"best_step": fitted.best_step, "best_val_acc": fitted.best_val_acc, "history": history},
    )


def evaluate_model(model: Path, preps: dict[str, Any], n_episodes: int, test_seed: int) -> dict[str, Any]:
    """Grouped 5-shot and 1-shot figures on every library, and in-font ungrouped."""
    from fslcli.checkpoint import load_model
    from fslcli.config import EpisodeConfig
    from fslcli.devices import device_for
    from fslcli.evaluation import evaluate

    loaded = load_model(model)
    device = device_for()
    net = loaded.net.to(device)
    out: dict[str, Any] = {}
    cells = [(name, True) for name in preps] + [(TRAIN_LIBRARY, False)]
    for name, grouped in cells:
        prep = preps[name]
        key = name if grouped else f"{name} ungrouped"
        out[key] = {}
        for shots in SHOTS:
            t0 = time.perf_counter()
            r = evaluate(
                net,
                prep.cache,
                prep.pools.test,
                EpisodeConfig(ways=5, shots=shots, queries=15),
                episodes=n_episodes,
                seed=test_seed,
                groups=prep.pools.groups if grouped else None,
                device=device,
            )
            out[key][f"{shots}-shot"] = {
                "mean_accuracy": r.mean_accuracy,
                "ci95_half_width": r.ci95_half_width,
                "per_class": r.per_class,
                "seconds": round(time.perf_counter() - t0, 2),
            }
            log(f"  {key} {shots}-shot: {r.mean_accuracy:.3f} ± {r.ci95_half_width:.3f}")
    return out


def tutorial_steps(seconds: float, prep: Any, work: Path, accelerator: str) -> int:
    """Steps of the tutorial configuration that take about ``seconds`` (validation included), from
    a probe of :data:`PROBE_STEPS` steps with validation at its end, as in a full run."""
    probe = configuration("tutorial", 0, PROBE_STEPS, accelerator, quick=False)
    probe = replace(probe, train=replace(probe.train, val_every=PROBE_STEPS))
    _, took, _ = train(probe, prep, work / "tutorial-probe")
    return max(PROBE_STEPS, int(seconds / (took / PROBE_STEPS)) // 100 * 100)


def configuration(name: str, seed: int, steps: int | None, accelerator: str, quick: bool) -> Any:
    """``fsl train``'s defaults (``--preset default`` or ``tutorial``), with the seed and steps."""
    from fslcli.config import PRESETS, RunConfig

    base = RunConfig()
    train = replace(base.train, seed=seed, accelerator=accelerator)
    if quick:
        train = replace(train, steps=4, val_every=2, val_episodes=5)
    elif steps is not None:
        train = replace(train, steps=steps, val_every=min(train.val_every, steps))
    return PRESETS[name](replace(base, train=train))


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per configuration and cell: mean over seeds, mean 95% CI over episodes, min and max."""
    out: dict[str, Any] = {}
    for name in dict.fromkeys(r["name"] for r in rows):
        mine = [r for r in rows if r["name"] == name]
        cells: dict[str, Any] = {}
        for key in mine[0]["test"]:
            for shots in mine[0]["test"][key]:
                acc = np.array([r["test"][key][shots]["mean_accuracy"] for r in mine])
                ci = np.array([r["test"][key][shots]["ci95_half_width"] for r in mine])
                cells.setdefault(key, {})[shots] = {
                    "mean": float(acc.mean()),
                    "ci95": float(ci.mean()),
                    "min": float(acc.min()),
                    "max": float(acc.max()),
                    "seeds": len(acc),
                }
        secs = [r["train_seconds"] for r in mine if r.get("train_seconds") is not None]
        out[name] = {"cells": cells, "train_seconds_mean": float(np.mean(secs)) if secs else None}
    return out


def render(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=150)
    s = results["settings"]
    table = Table(
        title=f"5-way accuracy on the test instruments ({', '.join(results['test_classes'])}), trained on "
        f"{TRAIN_LIBRARY} alone; grouped episodes (support and query never share a source recording), "
        f"{s['episodes']} episodes, test seed {s['test_seed']}, 15 queries; mean over seeds ± mean 95% CI "
        "[seed min-max]"
    )
    for col in ("configuration", "library", "role", "5-shot", "1-shot"):
        table.add_column(col)
    roles = {name: role for name, role, _ in LIBRARIES}
    for name, summary in results["summary"].items():
        secs = summary["train_seconds_mean"]
        label = f"{name} ({summary['cells'][TRAIN_LIBRARY]['5-shot']['seeds']} seeds" + (
            f", {secs / 60:.1f} min)" if secs else ")"
        )
        for key, cell in summary["cells"].items():
            role = roles.get(key, "in-font, clips drawn freely (before grouping)")
            table.add_row(label, key, role, *[_cell(cell[f"{k}-shot"]) for k in SHOTS])
            label = ""
        held = [summary["cells"][n] for n, _, _ in LIBRARIES if n != TRAIN_LIBRARY and n in summary["cells"]]
        if held:
            gap = [
                summary["cells"][TRAIN_LIBRARY][f"{k}-shot"]["mean"] - np.mean([h[f"{k}-shot"]["mean"] for h in held])
                for k in SHOTS
            ]
            table.add_row("", "in-font minus held-out", "", *[f"{g:+.3f}" for g in gap])
    console.print(table)


def _cell(c: dict[str, float]) -> str:
    spread = f" [{c['min']:.3f}-{c['max']:.3f}]" if c["seeds"] > 1 else ""
    return f"{c['mean']:.3f} ± {c['ci95']:.3f}{spread}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, help="Write every figure to this JSON file (rewritten after each model).")
    p.add_argument("--seeds", default="0,1,2", help="Training seeds, comma-separated (default 0,1,2).")
    p.add_argument("--configs", default="default,tutorial", help="Configurations to train (default,tutorial).")
    p.add_argument("--models", type=Path, nargs="*", help="Evaluate these model files instead of training.")
    p.add_argument(
        "--table", type=Path, nargs="*", help="Print one table from these earlier --out files (computes nothing)."
    )
    p.add_argument("--name", default="given models", help="With --models: the configuration's name in the table.")
    p.add_argument("--episodes", type=int, default=1000, help="Test episodes per cell (default 1000).")
    p.add_argument("--test-seed", type=int, default=0, help="Seed of the test episodes (default 0).")
    p.add_argument("--accelerator", default="auto", help="auto, cpu, cuda or mps.")
    p.add_argument("--work-dir", type=Path, help="Renders and runs (default: a new temporary folder, kept).")
    p.add_argument("--font", action="append", default=[], help="NAME=PATH: another place for a library's font.")
    p.add_argument("--quick", action="store_true", help="Smoke run: 4 steps, 20 episodes (figures meaningless).")
    p.add_argument("--steps", type=int, help="Steps of the default configuration (default: fsl train's).")
    p.add_argument(
        "--tutorial-seconds",
        type=float,
        help="Train the tutorial's configuration for about this long (default: the default's mean training time "
        "in this run, else 840 s). Wall times compare fairly only on a quiet machine.",
    )
    p.add_argument(
        "--tutorial-steps",
        type=int,
        help="Train the tutorial's configuration for this many steps instead of timing a probe "
        "(results/README.md: 1600 matched the default's 1000 here).",
    )
    args = p.parse_args()
    if args.table:
        runs = [r for path in args.table for r in json.loads(path.read_text(encoding="utf-8"))["runs"]]
        first = json.loads(args.table[0].read_text(encoding="utf-8"))
        render({**first, "runs": runs, "summary": summarise(runs)})
        return

    from fslcli.config import EVAL_WINDOWS, SplitConfig
    from fslcli.data import prepare
    from fslcli.datasets import DataSource
    from fslcli.training import quiet_lightning

    quiet_lightning()
    fonts: dict[str, Path | None] = {name: Path(path) if path else None for name, _, path in LIBRARIES}
    for item in args.font:
        name, _, path = item.partition("=")
        fonts[name] = Path(path)
    missing = [f"{n} ({f})" for n, f in fonts.items() if f is not None and not f.is_file()]
    if missing:
        raise SystemExit(
            f"missing fonts: {', '.join(missing)}; apt-get install fluid-soundfont-gm musescore-general-soundfont, "
            "or give --font NAME=PATH"
        )
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="fsl-libraries-"))
    homes = render_libraries(work, fonts)
    preps = {
        name: prepare(DataSource("tinysol-gm", home), SplitConfig(), sample_rate=16_000, cache_dir=None)
        for name, home in homes.items()
    }
    episodes = 20 if args.quick else args.episodes
    results: dict[str, Any] = {
        "env": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "load_average_at_start": list(os.getloadavg()),
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
        "settings": {
            "episodes": episodes,
            "test_seed": args.test_seed,
            "group_by": "source",
            "windows": EVAL_WINDOWS,
            "quick": args.quick,
            "work_dir": str(work),
            "libraries": {
                name: {"role": role, "font": str(fonts[name] or "pretty_midi TimGM6mb.sf2")}
                for name, role, _ in LIBRARIES
            },
        },
        "test_classes": list(preps[TRAIN_LIBRARY].pools.test),
        "runs": [],
    }

    def save() -> None:
        results["summary"] = summarise(results["runs"])
        if args.out:
            args.out.write_text(json.dumps(results, indent=1, default=str) + "\n", encoding="utf-8")

    if args.models:
        for model in args.models:
            log(f"evaluating {model}")
            results["runs"].append(
                {"name": args.name, "model": str(model), "test": evaluate_model(model, preps, episodes, args.test_seed)}
            )
            save()
    else:
        seeds = [int(s) for s in args.seeds.split(",")]
        default_seconds: list[float] = []
        for name in args.configs.split(","):
            steps = None
            if name == "tutorial" and args.tutorial_steps:
                steps = args.tutorial_steps
            elif name == "tutorial" and not args.quick:
                budget = args.tutorial_seconds or (float(np.mean(default_seconds)) if default_seconds else 840.0)
                steps = tutorial_steps(budget, preps[TRAIN_LIBRARY], work, args.accelerator)
                log(f"tutorial configuration: {steps} steps for about {budget:.0f} s")
            for seed in seeds:
                config = configuration(name, seed, steps, args.accelerator, args.quick)
                if args.steps and name == "default":
                    config = replace(config, train=replace(config.train, steps=args.steps))
                log(f"training {name}, seed {seed}, {config.train.steps} steps")
                model, seconds, fitted = train(config, preps[TRAIN_LIBRARY], work / f"{name}-seed{seed}")
                if name == "default":
                    default_seconds.append(seconds)
                row = {"name": name, "seed": seed, "model": str(model), "train_seconds": seconds, **fitted}
                row["test"] = evaluate_model(model, preps, episodes, args.test_seed)
                results["runs"].append(row)
                save()
    results["env"]["load_average_at_end"] = list(os.getloadavg())
    save()
    render(results)
    print(f"Renders and runs kept in {work}" + (f"; every figure in {args.out}" if args.out else ""))


if __name__ == "__main__":
    main()
