"""Speed benchmarks: "every second goes to the model".

On the offline TinySOL-shaped set (``fsl download tinysol-gm``) this measures

(a) episodes per second delivered from the cache (``EpisodeDataset``) next to the tutorial's
    loading (decode + resample every clip of every episode), for the same episodes;
(b) one training step split into waiting for data and computing, on the DataLoader and
    LightningModule ``fsl train`` builds, run by a Lightning Trainer;
(c) wall time of ``fsl eval`` with 1,000 and 50 episodes, as subprocesses (start-up included);
(d) cache build time per hour of audio (a fresh cache; hours at the files' native rate);
(e) peak resident memory of (b) and (c);
(f) time per training step and peak memory on the set and on a copy ten times its size.

Each figure is printed next to its target. Timings are reported, never asserted: on a
shared or busy machine they say as much about the machine as about fslcli.

    python benchmarks/speed.py [--data-home DIR] [--out speed.json] [--quick] [--model model.pt]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

TARGETS = {
    "loader_ratio": 50.0,  # (a) cache loader / tutorial loader, at least
    "data_wait_fraction": 0.05,  # (b) share of a step spent waiting for data, at most
    "eval_1000_seconds": 20.0,  # (c) `fsl eval` with 1,000 episodes, at most
    "cache_seconds_per_hour": 60.0,  # (d) at most
    "eval_rss_gib": 2.0,  # (e) peak RSS of `fsl eval`, at most
    "scale_growth": 0.10,  # (f) step time and RSS growth from 1x to 10x data, at most
}

#: Runs a command and writes its wall time and its peak RSS (the largest of the waited-for
#: descendants, RUSAGE_CHILDREN) to a JSON file. A fresh wrapper per command isolates the peak.
_MEASURE = (
    "import json,resource,subprocess,sys,time\n"
    "t=time.perf_counter();r=subprocess.run(sys.argv[2:]);w=time.perf_counter()-t\n"
    "m=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "open(sys.argv[1],'w').write(json.dumps({'rc':r.returncode,'wall_s':w,'ru_maxrss':m}))\n"
    "sys.exit(r.returncode)\n"
)


def _mib(ru_maxrss: int) -> float:
    """``ru_maxrss`` in MiB (Linux reports KiB, macOS bytes)."""
    return ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)


def measured_run(cmd: list[str], tmp: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``cmd`` in a fresh wrapper: return code, wall seconds, peak RSS (MiB), stdout and stderr."""
    report = Path(tempfile.mkstemp(dir=tmp, suffix=".json")[1])
    proc = subprocess.run([sys.executable, "-c", _MEASURE, str(report), *cmd], capture_output=True, text=True, env=env)
    info = (
        json.loads(report.read_text())
        if report.stat().st_size
        else {"rc": proc.returncode, "wall_s": float("nan"), "ru_maxrss": 0}
    )
    report.unlink(missing_ok=True)
    return {
        "rc": info["rc"],
        "wall_s": info["wall_s"],
        "max_rss_mib": _mib(info["ru_maxrss"]),
        "stdout": proc.stdout,
        "stderr": proc.stderr,
    }


def _check(rc: dict[str, Any], what: str) -> None:
    if rc["rc"] != 0:
        sys.stderr.write(rc["stdout"][-3000:] + rc["stderr"][-3000:])
        raise SystemExit(f"{what} failed (exit code {rc['rc']}); its output is above")


def default_train_settings() -> dict[str, int]:
    """``fsl train``'s own defaults for the validation cadence (read from the CLI, not copied)."""
    import inspect

    from fslcli import cli

    params = inspect.signature(cli.train).parameters
    return {k: int(params[k].default) for k in ("steps", "val_every", "val_episodes")}


def env_info() -> dict[str, Any]:
    import torch

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_at_start": list(os.getloadavg()),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


# --- (d) cache build -------------------------------------------------------------------


def bench_cache_build(source: Any, cache_dir: Path) -> dict[str, Any]:
    """Build the cache of ``source`` in ``cache_dir`` (fresh) and time it against the audio's duration."""
    import soundfile as sf

    from fslcli.datasets import load_clips
    from fslcli.features import open_cache

    read = load_clips(source)
    seconds_audio, rates = 0.0, Counter()
    for clip in read.clips:
        info = sf.info(str(clip.path))
        seconds_audio += info.frames / info.samplerate
        rates[info.samplerate] += 1
    hours = seconds_audio / 3600
    t0 = time.perf_counter()
    cache, built = open_cache(read.clips, 16_000, cache_dir)
    seconds = time.perf_counter() - t0
    return {
        "files": len(read.clips),
        "hours_of_audio": hours,
        "native_sample_rates": {str(k): v for k, v in rates.items()},
        "seconds": seconds,
        "seconds_per_hour": seconds / hours if hours else float("nan"),
        "fresh_build": built,
        "cache_mib": cache.waves.nbytes / 2**20,
        "decode_threads": min(4, os.cpu_count() or 1),
    }


# --- (a) loader ------------------------------------------------------------------------


def bench_loader(prep: Any, n_loader: int, n_tutorial: int, n_whole: int) -> dict[str, Any]:
    """Episodes per second: fslcli's cache loader vs the tutorial's loading, same episodes."""
    import torch
    from tutorial_loader import tutorial_episode

    from fslcli.config import RunConfig
    from fslcli.episodes import episode_rng, sample_episode
    from fslcli.evaluation import TRAIN_STREAM
    from fslcli.training import EpisodeDataset

    config = RunConfig()
    audio, cfg = config.audio, config.episode
    n_frames = audio.excerpt_samples // audio.hop_length + 1  # as training.py computes it
    pool = prep.pools.train
    steps = max(n_loader, n_tutorial, n_whole) + 3
    ds = EpisodeDataset(
        prep.cache, pool, cfg, audio.excerpt_samples, config.augment, 0, 0, steps, audio.n_mels, n_frames
    )
    for i in range(3):  # untimed: first touches of the memory map
        ds[steps - 1 - i]
    t0 = time.perf_counter()
    for i in range(n_loader):
        ds[i]
    loader_s = time.perf_counter() - t0

    def paths_of(i: int) -> list[Path]:
        ep = sample_episode(pool, cfg, episode_rng(0, i, 0, TRAIN_STREAM))  # the episode ds[i] delivers
        ids = np.concatenate([ep.support.reshape(-1), ep.query.reshape(-1)])
        return [prep.cache.clips[int(j)].path for j in ids]

    # Untimed: librosa's first call pays for lazy imports.
    tutorial_episode(paths_of(0)[:2], audio.excerpt_seconds, audio.sample_rate, random.Random(0))
    timings = {}
    for name, n, whole in (("tutorial_excerpt", n_tutorial, False), ("tutorial_whole_clip", n_whole, True)):
        t0 = time.perf_counter()
        for i in range(n):
            torch.from_numpy(
                tutorial_episode(paths_of(i), audio.excerpt_seconds, audio.sample_rate, random.Random(i), whole)
            )
        timings[name] = (n, time.perf_counter() - t0)
    loader_eps = n_loader / loader_s
    out: dict[str, Any] = {
        "episode": f"{cfg.ways}-way {cfg.shots}-shot {cfg.queries}-query, {audio.excerpt_seconds:g} s at {audio.sample_rate} Hz",
        "loader_episodes": n_loader,
        "loader_seconds": loader_s,
        "loader_episodes_per_s": loader_eps,
    }
    for name, (n, s) in timings.items():
        eps = n / s if s > 0 else float("nan")
        out[f"{name}_episodes"] = n
        out[f"{name}_seconds"] = s
        out[f"{name}_episodes_per_s"] = eps
        out[f"ratio_vs_{name}"] = loader_eps / eps
    return out


# --- (b), (f): training steps in a child process ---------------------------------------


class TimedLoader:
    """Wraps a DataLoader and records the seconds each ``next()`` blocks."""

    def __init__(self, loader: Any, waits: list[float]) -> None:
        self.loader, self.waits = loader, waits
        self.sampler = loader.sampler  # Lightning sets the block (epoch) through it

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        it = iter(self.loader)
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                return
            self.waits.append(time.perf_counter() - t0)
            yield batch


def _rss_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def child_train(spec: dict[str, Any]) -> None:
    """Run ``spec['steps']`` training steps plus the block's validation, as ``fsl train`` would, timing each part."""
    import resource

    import torch

    from fslcli.config import RunConfig, TrainConfig
    from fslcli.datasets import DataSource
    from fslcli.training import _lit_module_class, make_val_data, preflight, quiet_lightning
    from fslcli.workflows import prepare

    quiet_lightning()
    import pytorch_lightning as pl
    from pytorch_lightning.loggers import TensorBoardLogger

    quiet_lightning()
    source = DataSource(spec["kind"], Path(spec["path"]))
    steps = int(spec["steps"])
    config = RunConfig(train=TrainConfig(steps=steps, val_every=steps, val_episodes=int(spec["val_episodes"])))
    prep = prepare(
        source, config.split, config.audio.sample_rate, Path(spec["cache_dir"]), adapt_split=source.kind == "folder"
    )
    config = replace(config, split=prep.split)
    accelerator = preflight(config, prep.pools.train, prep.pools.val)
    rss_opened = _rss_mib()
    t0 = time.perf_counter()
    val = make_val_data(prep.cache, prep.pools.val, config, prep.pools.train)
    val_build_s = time.perf_counter() - t0
    rss_val = _rss_mib()

    cuda = accelerator in ("cuda", "gpu")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    waits: list[float] = []

    class StepTimer(pl.Callback):
        def __init__(self) -> None:
            self.starts: list[float] = []
            self.ends: list[float] = []
            self.val_s = 0.0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            sync()
            self.starts.append(time.perf_counter())

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            sync()
            self.ends.append(time.perf_counter())

        def on_validation_start(self, trainer, pl_module) -> None:
            self.v0 = time.perf_counter()

        def on_validation_end(self, trainer, pl_module) -> None:
            self.val_s += time.perf_counter() - self.v0

    lit_class = _lit_module_class()

    class TimedLit(lit_class):  # type: ignore[misc, valid-type]
        def train_dataloader(self):
            return TimedLoader(super().train_dataloader(), waits)

    lit = TimedLit(config, prep.cache, prep.pools.train, val)
    timer = StepTimer()
    run_dir = Path(spec["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = pl.Trainer(  # as fit() builds it, minus checkpointing
        accelerator=accelerator,
        devices=1,
        precision=config.train.precision,
        max_steps=steps,
        max_epochs=1,
        check_val_every_n_epoch=1,
        num_sanity_val_steps=0,
        logger=TensorBoardLogger(str(run_dir), name="tensorboard", version="", default_hp_metric=False),
        log_every_n_steps=max(1, min(10, config.train.val_every // 5)),
        callbacks=[timer],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        default_root_dir=str(run_dir),
    )
    trainer.fit(lit)
    w = int(spec["warmup"])
    starts, ends = np.asarray(timer.starts), np.asarray(timer.ends)
    compute = ends - starts
    n = len(starts)
    step_s = (starts[-1] - starts[w]) / (n - 1 - w) if n - 1 > w else float("nan")
    # The median step resists the load spikes of a shared machine; (f) compares medians.
    step_median = float(np.median(np.diff(starts[w:]))) if n - 1 > w else float("nan")
    wait_s = float(np.mean(waits[w : n - 1])) if n - 1 > w else float("nan")
    result = {
        "source": source.describe(),
        "accelerator": accelerator,
        "steps": n,
        "warmup_steps_excluded": w,
        "cache_clips": len(prep.cache),
        "cache_mib": prep.cache.waves.nbytes / 2**20,
        "train_clips": int(sum(len(v) for v in prep.pools.train.values())),
        "val_clips": int(sum(len(v) for v in prep.pools.val.values())),
        "val_episodes": config.train.val_episodes,
        "val_windows_mib": val.windows.nbytes / 2**20,
        "val_build_seconds": val_build_s,
        "validation_seconds": timer.val_s,
        "step_seconds": step_s,
        "step_seconds_median": step_median,
        "data_wait_seconds": wait_s,
        "compute_seconds": float(np.mean(compute[w : n - 1])) if n - 1 > w else float("nan"),
        "data_wait_fraction": wait_s / step_s,
        "rss_after_open_mib": rss_opened,
        "rss_after_val_data_mib": rss_val,
        "max_rss_self_mib": _mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss),
    }
    Path(spec["result"]).write_text(json.dumps(result), encoding="utf-8")


def run_train_child(
    source: Any, cache_dir: Path, steps: int, warmup: int, val_episodes: int, work: Path, name: str
) -> dict[str, Any]:
    result_path = work / f"{name}.json"
    spec = {
        "kind": source.kind,
        "path": str(source.path),
        "cache_dir": str(cache_dir),
        "steps": steps,
        "warmup": warmup,
        "val_episodes": val_episodes,
        "run_dir": str(work / name),
        "result": str(result_path),
    }
    run = measured_run([sys.executable, str(Path(__file__).resolve()), "--child-train", json.dumps(spec)], work)
    _check(run, f"training steps on {source.describe()}")
    result = json.loads(result_path.read_text())
    result["max_rss_mib"] = run["max_rss_mib"]
    result["process_wall_s"] = run["wall_s"]
    return result


# --- (c) fsl eval ----------------------------------------------------------------------


def fsl_executable() -> str:
    here = Path(sys.executable).parent / "fsl"
    found = str(here) if here.exists() else shutil.which("fsl")
    if not found:
        raise SystemExit("no `fsl` executable next to this Python or on PATH; install fslcli (pip install -e .)")
    return found


def train_tiny_model(fsl: str, source: Any, cache_dir: Path, work: Path) -> Path:
    """A 2-step model with the default architecture: enough for timing evaluation."""
    run_dir = work / "tiny-run"
    cmd = [
        fsl,
        "train",
        "--steps",
        "2",
        "--val-every",
        "2",
        "--val-episodes",
        "5",
        "--out",
        str(run_dir),
        "--force",
        "--data-home",
        str(source.path),
        "--cache-dir",
        str(cache_dir),
    ]
    _check(measured_run(cmd, work), "`fsl train --steps 2`")
    return run_dir / "model.pt"


def bench_eval(
    fsl: str, model: Path, source: Any, cache_dir: Path, episodes: list[int], work: Path, warm_up: bool
) -> dict[str, Any]:
    """Wall time and peak RSS of ``fsl eval MODEL --episodes N`` for each N, start-up included."""
    base = [fsl, "eval", str(model), "--json", "--data-home", str(source.path), "--cache-dir", str(cache_dir)]
    if warm_up:  # untimed: fills the OS file cache with the Python packages, as any second run finds it
        _check(measured_run([*base, "--episodes", "1"], work), "`fsl eval` (warm-up)")
    out: dict[str, Any] = {"model": str(model)}
    for n in episodes:
        run = measured_run([*base, "--episodes", str(n)], work)
        _check(run, f"`fsl eval --episodes {n}`")
        summary = json.loads(run["stdout"].strip().splitlines()[-1])
        out[str(n)] = {
            "wall_s": run["wall_s"],
            "max_rss_mib": run["max_rss_mib"],
            "seconds_reported_by_fsl": summary.get("seconds"),
            "clips_embedded": summary.get("clips_embedded"),
            "mean_accuracy": summary.get("mean_accuracy"),
        }
    return out


# --- (f) a dataset ten times the size --------------------------------------------------


def make_scaled_folder(clips: list[Any], root: Path, copies: int) -> int:
    """A class-per-folder dataset with ``copies`` symlinked copies of every clip under new names."""
    n = 0
    for i, clip in enumerate(clips):
        folder = root / clip.label
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(copies):
            dst = folder / f"copy{k}-{i:05d}-{clip.path.name}"
            if not dst.exists():
                os.symlink(Path(clip.path).resolve(), dst)
            n += 1
    return n


# --- report ----------------------------------------------------------------------------


def _mark(ok: bool | None) -> str:
    return "" if ok is None else ("✓" if ok else "✗")


def render(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    rows: list[tuple[str, str, str, str, bool | None]] = []
    a, b, c, d, f = (results.get(k) for k in ("a", "b", "c", "d", "f"))
    if a:
        r = a["ratio_vs_tutorial_excerpt"]
        rows.append(("a", "loader, episodes/s (cache)", f"{a['loader_episodes_per_s']:.1f}", "", None))
        rows.append(("a", "tutorial loader, episodes/s", f"{a['tutorial_excerpt_episodes_per_s']:.2f}", "", None))
        rows.append(
            (
                "a",
                "  ratio cache / tutorial",
                f"{r:.0f}x",
                f"≥ {TARGETS['loader_ratio']:.0f}x",
                r >= TARGETS["loader_ratio"],
            )
        )
        rows.append(("a", "  ratio vs whole-clip load + crop", f"{a['ratio_vs_tutorial_whole_clip']:.0f}x", "", None))
    if b:
        frac = b["data_wait_fraction"]
        rows.append(("b", "training step (wall, per step)", f"{b['step_seconds'] * 1000:.0f} ms", "", None))
        rows.append(("b", "  computing (fwd+bwd+optimizer)", f"{b['compute_seconds'] * 1000:.0f} ms", "", None))
        rows.append(
            (
                "b",
                "  waiting for data",
                f"{b['data_wait_seconds'] * 1000:.1f} ms ({frac:.1%})",
                f"≤ {TARGETS['data_wait_fraction']:.0%}",
                frac <= TARGETS["data_wait_fraction"],
            )
        )
    if c:
        for n in c["episodes"]:
            e = c[str(n)]
            ok = e["wall_s"] <= TARGETS["eval_1000_seconds"] if n == 1000 else None
            rows.append(
                (
                    "c",
                    f"fsl eval, {n} episodes (wall)",
                    f"{e['wall_s']:.1f} s",
                    f"≤ {TARGETS['eval_1000_seconds']:.0f} s" if n == 1000 else "",
                    ok,
                )
            )
    if d:
        sph = d["seconds_per_hour"]
        ok = sph <= TARGETS["cache_seconds_per_hour"] if d["fresh_build"] else None
        rows.append(
            ("d", f"cache build ({d['files']} files, {d['hours_of_audio']:.2f} h)", f"{d['seconds']:.1f} s", "", None)
        )
        rows.append(
            (
                "d",
                "  per hour of audio",
                f"{sph:.1f} s/h" + ("" if d["fresh_build"] else " (reused!)"),
                f"≤ {TARGETS['cache_seconds_per_hour']:.0f} s/h",
                ok,
            )
        )
    if f and f.get("build"):
        rows.append(
            (
                "d",
                f"  at {f['copies']}x ({f['build']['files']} files)",
                f"{f['build']['seconds_per_hour']:.1f} s/h",
                "",
                None,
            )
        )
    if b:
        rows.append(("e", "peak RSS, training (b)", f"{b['max_rss_mib']:.0f} MiB", "", None))
    if c:
        for n in c["episodes"]:
            mib = c[str(n)]["max_rss_mib"]
            rows.append(
                (
                    "e",
                    f"peak RSS, fsl eval {n} episodes",
                    f"{mib:.0f} MiB",
                    f"≤ {TARGETS['eval_rss_gib']:.0f} GiB",
                    mib <= TARGETS["eval_rss_gib"] * 1024,
                )
            )
    if f:
        one, big, k = f["1x"], f["big"], f["copies"]
        g_step = big["step_seconds_median"] / one["step_seconds_median"] - 1
        g_rss = big["max_rss_mib"] / one["max_rss_mib"] - 1
        lim = TARGETS["scale_growth"]
        rows.append(
            (
                "f",
                f"step time (median), 1x ({one['cache_clips']} clips)",
                f"{one['step_seconds_median'] * 1000:.0f} ms",
                "",
                None,
            )
        )
        rows.append(
            (
                "f",
                f"step time (median), {k}x ({big['cache_clips']} clips)",
                f"{big['step_seconds_median'] * 1000:.0f} ms ({g_step:+.0%})",
                f"≤ +{lim:.0%}",
                g_step <= lim,
            )
        )
        rows.append(
            (
                "f",
                f"  data wait per step 1x / {k}x",
                f"{one['data_wait_seconds'] * 1000:.1f} / {big['data_wait_seconds'] * 1000:.1f} ms",
                "",
                None,
            )
        )
        rows.append(("f", "peak RSS, 1x", f"{one['max_rss_mib']:.0f} MiB", "", None))
        rows.append(
            ("f", f"peak RSS, {k}x", f"{big['max_rss_mib']:.0f} MiB ({g_rss:+.0%})", f"≤ +{lim:.0%}", g_rss <= lim)
        )
        rows.append(
            (
                "f",
                f"  validation windows 1x / {k}x",
                f"{one['val_windows_mib']:.0f} / {big['val_windows_mib']:.0f} MiB",
                "",
                None,
            )
        )
        rows.append(
            (
                "f",
                f"  one validation 1x / {k}x",
                f"{one['validation_seconds']:.1f} / {big['validation_seconds']:.1f} s",
                "",
                None,
            )
        )
    env = results["env"]
    table = Table(
        title=f"fslcli speed ({'quick smoke run' if results['settings']['quick'] else 'full run'}; "
        f"{env['cpu_count']} CPUs, {env['cuda'] or 'no GPU'}, load {env['load_average_at_start'][0]:.1f} at start)"
    )
    for col, just in (("", "left"), ("measure", "left"), ("value", "right"), ("target", "right"), ("", "center")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(*row[:4], _mark(row[4]))
    Console(width=120).print(table)


def main() -> None:
    from fslcli.datasets.base import default_data_home

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--data-home",
        type=Path,
        default=default_data_home("tinysol-gm"),
        help="The offline set (default: %(default)s).",
    )
    p.add_argument("--out", type=Path, help="Write every number to this JSON file.")
    p.add_argument("--quick", action="store_true", help="A smoke run with tiny sizes (numbers not meaningful).")
    p.add_argument(
        "--model", type=Path, help="model.pt for (c) (default: train a 2-step model with the default architecture)."
    )
    p.add_argument(
        "--only", default="abcdef", help="Which parts to run, e.g. 'ad' (default: all; e comes with b and c, f runs b)."
    )
    p.add_argument("--steps", type=int, help="Training steps timed in (b) and (f) (default 60; quick 4).")
    p.add_argument("--copies", type=int, help="Copies of every clip for the large set in (f) (default 10; quick 2).")
    p.add_argument(
        "--work-dir",
        type=Path,
        help="Scratch folder for caches, runs and the scaled set (default: a new temporary folder).",
    )
    p.add_argument("--keep", action="store_true", help="Keep the scratch folder.")
    p.add_argument("--child-train", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child_train:
        child_train(json.loads(args.child_train))
        return

    from fslcli.config import SplitConfig
    from fslcli.datasets import DataSource
    from fslcli.workflows import prepare

    quick = args.quick
    steps = args.steps or (4 if quick else 60)
    warmup = 1 if quick else 5
    copies = args.copies or (2 if quick else 10)
    only = set(args.only) | ({"b"} if "f" in args.only else set())
    val_episodes = 20 if quick else default_train_settings()["val_episodes"]
    source = DataSource("tinysol-gm", args.data_home.expanduser())
    if not source.path.is_dir():
        raise SystemExit(
            f"--data-home {source.path} does not exist; render the offline set with: fsl download tinysol-gm --data-home {source.path}"
        )
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="fsl-bench-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    cache_dir = work / "cache"
    results: dict[str, Any] = {
        "env": env_info(),
        "settings": {
            "quick": quick,
            "data_home": str(source.path),
            "steps": steps,
            "warmup_steps": warmup,
            "copies": copies,
            "val_episodes": val_episodes,
            "work_dir": str(work),
        },
        "targets": TARGETS,
    }

    def say(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    try:
        if "d" in only:
            say("(d) building a fresh cache")
            results["d"] = bench_cache_build(source, cache_dir)
        prep = prepare(source, SplitConfig(), 16_000, cache_dir)
        if "a" in only:
            say("(a) loader vs the tutorial's loading")
            n_loader, n_tut, n_whole = (30, 1, 1) if quick else (300, 5, 3)
            results["a"] = bench_loader(prep, n_loader, n_tut, n_whole)
        if "b" in only:
            say(f"(b) {steps} training steps on {source.describe()}")
            results["b"] = run_train_child(source, cache_dir, steps, warmup, val_episodes, work, "train-1x")
        if "c" in only:
            fsl = fsl_executable()
            model = args.model
            if model is None:
                say("(c) training a 2-step model with the default architecture")
                model = train_tiny_model(fsl, source, cache_dir, work)
            say("(c) timing fsl eval")
            episodes = [1000] if quick else [1000, 50]
            results["c"] = {
                "episodes": episodes,
                **bench_eval(fsl, model, source, cache_dir, episodes, work, warm_up=not quick),
            }
        if "f" in only:
            say(f"(f) a {copies}x copy of the set")
            big_root = work / f"data-x{copies}"
            make_scaled_folder(prep.cache.clips, big_root, copies)
            big_source = DataSource("folder", big_root)
            build = bench_cache_build(big_source, cache_dir)
            big = run_train_child(big_source, cache_dir, steps, warmup, val_episodes, work, f"train-{copies}x")
            results["f"] = {"copies": copies, "1x": results["b"], "big": big, "build": build}
    finally:
        results["env"]["load_average_at_end"] = list(os.getloadavg())
        if args.out:
            args.out.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
        if not args.keep and args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    render(results)
    if args.out:
        print(f"All numbers: {args.out}")


if __name__ == "__main__":
    from fslcli.errors import FslError

    try:
        main()
    except FslError as exc:  # bad data or settings: one line, as the CLI prints it
        raise SystemExit(f"error: {' '.join(str(exc).split())}") from None
