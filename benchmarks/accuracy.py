"""Accuracy benchmark: "training and evaluation a researcher can trust".

Trains, in one run and on the same data, cache, split and validation fold:

1. the ISMIR 2022 tutorial's configuration, mapped onto fslcli's settings: five conv blocks
   32-64-128-256-512 with GroupNorm and max-pool over a raw power 64-band mel spectrogram
   (n_fft 400, hop 200: torchaudio's MelSpectrogram defaults), 1 s excerpts at 16 kHz,
   5-way 5-shot with 20 queries, Adam at a constant 1e-3, 600 steps, no augmentation
   (random 1 s excerpts only, as the tutorial draws them);
2. fslcli's default configuration (``RunConfig()``) with ``fsl train``'s default steps.

Both are evaluated on the same 1,000 seeded test episodes (5-way 5-shot and 5-way 1-shot,
15 queries) on the held-out instruments, with 95% intervals; with ``--seeds N`` each is
trained N times and the mean and spread across seeds are printed too. From each run's
``history.jsonl`` it prints validation accuracy over wall time, and reports when fslcli's
default first reached the tutorial configuration's final validation accuracy, against a
third of the tutorial's training time.

    python benchmarks/accuracy.py [--data-home DIR] [--out accuracy.json] [--quick] [--seeds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

#: The tutorial's training length (steps) and fslcli's target: pass it within a third of its time.
TUTORIAL_STEPS = 600
TIME_FRACTION = 1 / 3


def cli_train_defaults() -> dict[str, int]:
    """``fsl train``'s defaults (steps, validation cadence), read from the CLI rather than copied."""
    import inspect

    from fslcli import cli

    params = inspect.signature(cli.train).parameters
    return {k: int(params[k].default) for k in ("steps", "val_every", "val_episodes")}


def no_augmentation() -> Any:
    """Every augmentation off (including any added to AugmentConfig later) but the random 1 s
    crop, which is how the tutorial draws its excerpts."""
    from dataclasses import fields

    from fslcli.config import AugmentConfig

    base = AugmentConfig()
    off = {}
    for f in fields(AugmentConfig):
        value = getattr(base, f.name)
        off[f.name] = False if isinstance(value, bool) else type(value)(0)
    return AugmentConfig(**{**off, "random_crop": True})


def tutorial_config(seed: int, steps: int, val_every: int, val_episodes: int, accelerator: str) -> Any:
    from fslcli.config import AudioConfig, EpisodeConfig, ModelConfig, RunConfig, TrainConfig

    return RunConfig(
        audio=AudioConfig(
            sample_rate=16_000, excerpt_seconds=1.0, n_fft=400, hop_length=200, n_mels=64, compression="power"
        ),
        model=ModelConfig(
            backbone="tutorial",
            channels=(32, 64, 128, 256, 512),
            input_norm="none",
            embedding_norm="none",
            eval_shifts=0,
            eval_pitch_shifts=(),
        ),
        episode=EpisodeConfig(ways=5, shots=5, queries=20),
        augment=no_augmentation(),
        train=TrainConfig(
            steps=steps,
            seed=seed,
            learning_rate=1e-3,
            optimizer="adam",
            schedule="constant",
            val_every=min(val_every, steps),
            val_episodes=val_episodes,
            accelerator=accelerator,
        ),
    )


def default_config(seed: int, steps: int, val_every: int, val_episodes: int, accelerator: str) -> Any:
    from dataclasses import replace

    from fslcli.config import RunConfig

    base = RunConfig()
    train = replace(
        base.train,
        steps=steps,
        seed=seed,
        val_every=min(val_every, steps),
        val_episodes=val_episodes,
        accelerator=accelerator,
    )
    return replace(base, train=train)


def first_reach(history: list[dict[str, Any]], level: float) -> dict[str, Any] | None:
    """The first validation row at or above ``level``, or None."""
    for row in history:
        if row.get("val_acc") is not None and row["val_acc"] >= level:
            return row
    return None


def train_and_evaluate(
    name: str, config: Any, prep: Any, work: Path, n_episodes: int, test_seed: int
) -> dict[str, Any]:
    """Train with fit(), then evaluate the saved model as ``fsl eval`` would."""
    from fslcli.checkpoint import load_model
    from fslcli.config import EpisodeConfig
    from fslcli.evaluation import evaluate
    from fslcli.training import fit, read_history, split_val_config
    from fslcli.workflows import device_for

    run_dir = work / f"{name.replace(' ', '-')}-seed{config.train.seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)

    def progress(ev: dict[str, Any]) -> None:
        if ev.get("event") == "val" and "val_acc" in ev:
            print(
                f"  {name} seed {config.train.seed}: step {ev['step']}, {ev['seconds']:.0f} s, val acc {ev['val_acc']:.3f}",
                file=sys.stderr,
                flush=True,
            )

    fitted = fit(
        config,
        prep.cache,
        prep.pools.train,
        prep.pools.val,
        prep.source,
        run_dir,
        progress=progress,
        extra_meta={"val_description": prep.pools.val_description},
        groups=prep.pools.groups,
    )
    history = [{k: row.get(k) for k in ("step", "seconds", "val_acc", "train_loss")} for row in read_history(run_dir)]
    loaded = load_model(fitted.model_path)
    device = device_for(config.train.accelerator)
    net = loaded.net.to(device)
    tests = {}
    for shots in (5, 1):
        cfg = EpisodeConfig(ways=5, shots=shots, queries=15)
        t0 = time.perf_counter()
        r = evaluate(
            net,
            prep.cache,
            prep.pools.test,
            cfg,
            n_episodes,
            test_seed,
            loaded.config.eval_windows,
            device,
            groups=prep.pools.groups,
        )
        tests[f"{shots}-shot"] = {
            "mean_accuracy": r.mean_accuracy,
            "ci95_half_width": r.ci95_half_width,
            "episodes": r.episodes,
            "per_class": r.per_class,
            "seconds": time.perf_counter() - t0,
        }
    val_cfg = split_val_config(prep.pools.train, prep.pools.val, config.episode)
    return {
        "name": name,
        "seed": config.train.seed,
        "run_dir": str(run_dir),
        "settings": config.to_dict(),
        "train_seconds": fitted.seconds,
        "steps": fitted.steps,
        "best_val_acc": fitted.best_val_acc,
        "best_step": fitted.best_step,
        "final_val_acc": next((r["val_acc"] for r in reversed(history) if r.get("val_acc") is not None), None),
        "val_episode_shape": f"{val_cfg.ways}-way {val_cfg.shots}-shot {val_cfg.queries}-query",
        "history": history,
        "test": tests,
    }


def compare_speed(tut: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    """When fslcli's default first reached the tutorial's final validation accuracy, vs a third of its time."""
    level = tut["final_val_acc"]
    budget = tut["train_seconds"] * TIME_FRACTION
    row = first_reach(ours["history"], level) if level is not None else None
    return {
        "seed": tut["seed"],
        "tutorial_final_val_acc": level,
        "tutorial_train_seconds": tut["train_seconds"],
        "budget_seconds": budget,
        "default_reached_at_seconds": row["seconds"] if row else None,
        "default_reached_at_step": row["step"] if row else None,
        "passes": bool(row is not None and row["seconds"] <= budget),
    }


# --- report ----------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{100 * x:.1f}"


def render(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=130)
    runs = results["runs"]
    names = list(results["configs"])
    table = Table(
        title=f"Test accuracy (%), {results['settings']['test_episodes']} episodes, 5-way, 15 queries, "
        f"test seed {results['settings']['test_seed']}, on {', '.join(results['test_classes'])}"
    )
    for col in (
        "configuration",
        "seed",
        "steps",
        "train time",
        "5-shot ± 95% CI",
        "1-shot ± 95% CI",
        "best val (step)",
    ):
        table.add_column(col, justify="left" if col == "configuration" else "right")
    for r in runs:
        t5, t1 = r["test"]["5-shot"], r["test"]["1-shot"]
        table.add_row(
            r["name"],
            str(r["seed"]),
            str(r["steps"]),
            f"{r['train_seconds']:.0f} s",
            f"{_pct(t5['mean_accuracy'])} ± {_pct(t5['ci95_half_width'])}",
            f"{_pct(t1['mean_accuracy'])} ± {_pct(t1['ci95_half_width'])}",
            f"{_pct(r['best_val_acc'])} ({r['best_step']})",
        )
    console.print(table)

    if len(results["settings"]["seeds"]) > 1:
        table = Table(title=f"Across {len(results['settings']['seeds'])} seeds: mean ± std (%)")
        for col in ("configuration", "5-shot", "1-shot", "train time"):
            table.add_column(col, justify="left" if col == "configuration" else "right")
        for name in names:
            s = results["summary"][name]
            table.add_row(
                name,
                f"{_pct(s['5-shot_mean'])} ± {_pct(s['5-shot_std'])}",
                f"{_pct(s['1-shot_mean'])} ± {_pct(s['1-shot_std'])}",
                f"{s['train_seconds_mean']:.0f} ± {s['train_seconds_std']:.0f} s",
            )
        console.print(table)

    for seed in results["settings"]["seeds"]:
        by_name = {r["name"]: r for r in runs if r["seed"] == seed}
        shapes = "; ".join(f"{n}: {by_name[n]['val_episode_shape']}" for n in names)
        table = Table(
            title=f"Validation accuracy (%) over wall time, seed {seed} ({shapes} episodes on {results['val_description']})"
        )
        table.add_column("step", justify="right")
        for n in names:
            table.add_column(f"{n} s", justify="right")
            table.add_column(f"{n} val", justify="right")
        steps = sorted({row["step"] for n in names for row in by_name[n]["history"]})
        rows = {n: {row["step"]: row for row in by_name[n]["history"]} for n in names}
        for step in steps:
            cells = [str(step)]
            for n in names:
                row = rows[n].get(step)
                cells += [f"{row['seconds']:.0f}" if row else "", _pct(row.get("val_acc")) if row else ""]
            table.add_row(*cells)
        console.print(table)

    for c in results["time_to_tutorial_accuracy"]:
        reached = (
            f"at {c['default_reached_at_seconds']:.0f} s (step {c['default_reached_at_step']})"
            if c["default_reached_at_seconds"] is not None
            else "never"
        )
        mark = "✓" if c["passes"] else "✗"
        console.print(
            f"seed {c['seed']}: tutorial configuration's final validation accuracy {_pct(c['tutorial_final_val_acc'])}% "
            f"after {c['tutorial_train_seconds']:.0f} s; fslcli default first reached it {reached}; "
            f"target ≤ {c['budget_seconds']:.0f} s (a third of the tutorial's time) {mark}"
        )


def summarise(runs: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    out = {}
    for name in names:
        rs = [r for r in runs if r["name"] == name]
        s: dict[str, Any] = {}
        for k in ("5-shot", "1-shot"):
            acc = np.array([r["test"][k]["mean_accuracy"] for r in rs])
            s[f"{k}_mean"] = float(acc.mean())
            s[f"{k}_std"] = float(acc.std(ddof=1)) if len(acc) > 1 else float("nan")
        secs = np.array([r["train_seconds"] for r in rs])
        s["train_seconds_mean"] = float(secs.mean())
        s["train_seconds_std"] = float(secs.std(ddof=1)) if len(secs) > 1 else 0.0
        out[name] = s
    return out


def main() -> None:
    from fslcli.datasets.base import default_data_home

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--data-home",
        type=Path,
        default=default_data_home("tinysol-gm"),
        help="The offline set (default: %(default)s).",
    )
    p.add_argument("--out", type=Path, help="Write every number (and the validation curves) to this JSON file.")
    p.add_argument(
        "--quick", action="store_true", help="A smoke run: 4 steps each, 10 test episodes (numbers not meaningful)."
    )
    p.add_argument("--seeds", type=int, default=1, help="Train each configuration with seeds 0..N-1 (default 1).")
    p.add_argument("--test-episodes", type=int, help="Test episodes (default 1000; quick 10).")
    p.add_argument(
        "--test-seed", type=int, default=0, help="Seed of the test episodes, the same for every run (default 0)."
    )
    p.add_argument("--accelerator", default="auto", help="auto, cpu, cuda or mps (default auto, as `fsl train`).")
    p.add_argument(
        "--cache-dir", type=Path, help="Decoded-audio cache (default: fslcli's, ~/.cache/fslcli or $FSL_CACHE_DIR)."
    )
    p.add_argument("--work-dir", type=Path, help="Where the runs go (default: a new temporary folder, kept).")
    args = p.parse_args()

    from fslcli.config import SplitConfig
    from fslcli.datasets import DataSource
    from fslcli.training import quiet_lightning
    from fslcli.workflows import prepare

    quiet_lightning()
    defaults = cli_train_defaults()
    quick = args.quick
    tut_steps = 4 if quick else TUTORIAL_STEPS
    our_steps = 4 if quick else defaults["steps"]
    val_every = 2 if quick else defaults["val_every"]
    val_episodes = 3 if quick else defaults["val_episodes"]
    n_test = args.test_episodes or (10 if quick else 1000)
    seeds = list(range(max(1, args.seeds)))
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="fsl-bench-accuracy-"))
    work.mkdir(parents=True, exist_ok=True)
    source = DataSource("tinysol-gm", args.data_home.expanduser())
    if not source.path.is_dir():
        raise SystemExit(
            f"--data-home {source.path} does not exist; render the offline set with: fsl download tinysol-gm --data-home {source.path}"
        )
    prep = prepare(source, SplitConfig(), 16_000, args.cache_dir)

    configs = {
        "tutorial": lambda seed: tutorial_config(seed, tut_steps, val_every, val_episodes, args.accelerator),
        "fslcli default": lambda seed: default_config(seed, our_steps, val_every, val_episodes, args.accelerator),
    }
    results: dict[str, Any] = {
        "env": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "load_average_at_start": list(os.getloadavg()),
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
        "settings": {
            "quick": quick,
            "data_home": str(source.path),
            "seeds": seeds,
            "test_episodes": n_test,
            "test_seed": args.test_seed,
            "val_every": val_every,
            "val_episodes": val_episodes,
            "work_dir": str(work),
        },
        "configs": {name: make(0).to_dict() for name, make in configs.items()},
        "test_classes": list(prep.pools.test),
        "val_description": prep.pools.val_description,
        "runs": [],
    }
    t_start = time.perf_counter()
    for seed in seeds:
        for name, make in configs.items():
            print(f"[{time.strftime('%H:%M:%S')}] training {name}, seed {seed}", file=sys.stderr, flush=True)
            results["runs"].append(train_and_evaluate(name, make(seed), prep, work, n_test, args.test_seed))
            if args.out:  # partial results survive an interrupted run
                args.out.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    runs = results["runs"]
    results["summary"] = summarise(runs, list(configs))
    results["time_to_tutorial_accuracy"] = [
        compare_speed(
            next(r for r in runs if r["name"] == "tutorial" and r["seed"] == s),
            next(r for r in runs if r["name"] == "fslcli default" and r["seed"] == s),
        )
        for s in seeds
    ]
    results["env"]["total_seconds"] = time.perf_counter() - t_start
    results["env"]["load_average_at_end"] = list(os.getloadavg())
    if args.out:
        args.out.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    render(results)
    print(f"Runs kept in {work}" + (f"; all numbers: {args.out}" if args.out else ""))


if __name__ == "__main__":
    from fslcli.errors import FslError

    try:
        main()
    except FslError as exc:  # bad data or settings: one line, as the CLI prints it
        raise SystemExit(f"error: {' '.join(str(exc).split())}") from None
