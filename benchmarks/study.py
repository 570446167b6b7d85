"""Design study for "learn the instrument, not the sample library": one variant per run.

The test instruments are never read. Every variant trains on TimGM6mb with five of TinySOL's
training instruments held out (:data:`STUDY_CLASSES`), and with three whole General MIDI families
held out (:data:`HELD_FAMILIES`: ethnic, percussive and sound-effect programs), and is scored on:

- ``study in-font``: the five held-out instruments from TimGM6mb (5-way);
- ``study FluidR3``: the same instruments from FluidR3_GM, a library it never heard (5-way);
- ``families FluidR3``: the held-out families' classes from FluidR3_GM (5-way among ~20), beside a
  20-MFCC nearest-prototype baseline on the same episodes.

All grouped (support and query never share a source recording), 5-shot and 1-shot, 1,000
episodes, test seed 0. (The first runs of this study, made before test-time views were removed,
also scored each model with the previous default's views; see benchmarks/results/README.md.)

    python benchmarks/study.py --variant all --train-home GM_ALL --fluid-home FLUID_ALL --out study.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

STUDY_CLASSES = ("Cello", "Oboe", "Trombone", "Clarinet in Bb", "Flute")
HELD_FAMILIES = ("GM_Ethnic", "GM_Percussive", "GM_Sound_Effects")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def study_split(prep_all: Any, base: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Training classes (every class but the test instruments, the study instruments, the held-out
    families and whatever shares recordings with any of them) and the held-out family classes."""
    from fslcli.datasets.provenance import read_shared_pairs

    clips = prep_all.cache.clips
    labels = sorted({c.label for c in clips})
    families = sorted({c.label for c in clips if c.family in HELD_FAMILIES})
    held = set(base.split.test_classes) | set(STUDY_CLASSES) | set(families)
    _, pairs = read_shared_pairs(prep_all.source.path)
    sharing = {p.first for p in pairs if p.second in held} | {p.second for p in pairs if p.first in held}
    train = tuple(c for c in labels if c not in held and c not in sharing)
    log(f"{len(train)} training classes; left out for sharing recordings: {sorted(sharing - held)}")
    return train, tuple(c for c in families if c not in sharing)


def variant(name: str, base: Any, all_classes: tuple[str, ...]) -> Any:
    from fslcli.config import DEFAULT_TRAIN_CLASSES, EpisodeConfig

    few = tuple(c for c in DEFAULT_TRAIN_CLASSES if c not in STUDY_CLASSES)
    many = replace(base.split, train_classes=all_classes)
    aug = base.augment
    table = {
        # The previous default's training: every class in each episode, 5 support and 15 query
        # clips, on the four TinySOL training instruments left (validation folds by note: only
        # one of the four has the five source groups a fold needs).
        "tinysol": lambda: replace(
            base,
            split=replace(base.split, train_classes=few, group_by="note"),
            episode=EpisodeConfig(ways=len(few), shots=5, queries=15),
            augment=replace(aug, pitch_semitones=0.0),
        ),
        "all": lambda: replace(base, split=many, augment=replace(aug, pitch_semitones=0.0)),
        # (the recording chain variants, all+chain and all+pitch+chain, run at the git tag
        # study/recording-chain, commit d5a516e, where the chain augmentation still exists)
        "all+pitch": lambda: replace(base, split=many, augment=replace(aug, pitch_semitones=8.0)),
        "all+pitch4": lambda: replace(base, split=many, augment=replace(aug, pitch_semitones=4.0)),
    }
    return table[name]()


def splittable(prep: Any, classes: tuple[str, ...] | list[str]) -> dict[str, np.ndarray]:
    """The test pool's ``classes`` that grouped 5-shot 15-query episodes can be drawn from."""
    from fslcli.episodes import groups_can_split

    pool = prep.pools.test
    return {c: pool[c] for c in classes if c in pool and groups_can_split(prep.pools.groups[pool[c]], 5, 15)}


def mfcc_baseline(prep: Any, pool: dict, groups: Any, shots: int, n: int, seed: int) -> float:
    """20 MFCCs (librosa), averaged over each whole clip, each coefficient standardised by the
    episode's support set (mean and standard deviation over its clips), nearest prototype by
    Euclidean distance."""
    import librosa

    from fslcli.config import EpisodeConfig
    from fslcli.episodes import draw_episodes
    from fslcli.evaluation import TEST_STREAM

    episodes = draw_episodes(pool, EpisodeConfig(5, shots, 15), n, seed, TEST_STREAM, groups=groups)
    ids = sorted({int(i) for ep in episodes for i in np.concatenate([ep.support.ravel(), ep.query.ravel()])})
    feats = {
        i: librosa.feature.mfcc(y=np.asarray(prep.cache.clip(i)), sr=prep.cache.sample_rate, n_mfcc=20).mean(axis=1)
        for i in ids
    }
    acc = []
    for ep in episodes:
        support = np.stack([feats[int(i)] for i in ep.support.ravel()])
        mu, sd = support.mean(axis=0), support.std(axis=0) + 1e-8
        protos = ((support - mu) / sd).reshape(ep.support.shape[0], ep.support.shape[1], -1).mean(axis=1)
        q = (np.stack([feats[int(i)] for i in ep.query.ravel()]) - mu) / sd
        pred = np.argmin(((q[:, None] - protos[None]) ** 2).sum(-1), axis=1)
        acc.append(np.mean(pred == np.repeat(np.arange(len(protos)), ep.query.shape[1])))
    return float(np.mean(acc))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--train-home", type=Path, required=True, help="TimGM6mb rendered with every GM program.")
    ap.add_argument("--fluid-home", type=Path, required=True, help="FluidR3_GM rendered with every GM program.")
    ap.add_argument(
        "--extra-home", type=Path, help="Train on this render too (several libraries, as fsl train --data-home twice)."
    )
    ap.add_argument("--episodes", type=int, default=1000)
    ap.add_argument("--work-dir", type=Path, default=Path("/tmp/fsl-study"))
    ap.add_argument("--out", type=Path, required=True, help="JSON lines, one per run, appended.")
    ap.add_argument("--model", type=Path, help="Score this model instead of training.")
    args = ap.parse_args()

    from fslcli.checkpoint import load_model
    from fslcli.config import EpisodeConfig, RunConfig, SplitConfig
    from fslcli.data import prepare
    from fslcli.datasets import DataSource
    from fslcli.evaluation import evaluate
    from fslcli.training import fit, quiet_lightning

    quiet_lightning()
    base = RunConfig()
    base = replace(base, train=replace(base.train, steps=args.steps, seed=args.seed))
    everything = SplitConfig(train_classes=(), test_classes=(), val_classes=())
    prep_all = prepare(DataSource("tinysol-gm", args.train_home), everything, sample_rate=16_000, cache_dir=None)
    train_classes, families = study_split(prep_all, base)
    config = variant(args.variant, base, train_classes)
    config = replace(config, split=replace(config.split, test_classes=STUDY_CLASSES))
    homes = [args.train_home] + ([args.extra_home] if args.extra_home else [])
    prep = prepare([DataSource("tinysol-gm", h) for h in homes], config.split, sample_rate=16_000, cache_dir=None)
    name = args.variant + ("+" + args.extra_home.name if args.extra_home else "")
    run_dir = args.work_dir / f"{name}-seed{args.seed}"
    t0 = time.perf_counter()
    if args.model is None:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "history.jsonl").unlink(missing_ok=True)
        log(f"training {args.variant}: {len(prep.pools.train)} classes, {config.train.steps} steps")
        res = fit(
            config, prep.cache, train_pool=prep.pools.train, val_pool=prep.pools.val, source=prep.source,
            run_dir=run_dir, groups=prep.pools.groups, libraries=prep.libraries,
        )  # fmt: skip
        model_path = res.model_path
    else:
        model_path = args.model
    seconds = time.perf_counter() - t0
    loaded = load_model(model_path)
    net = loaded.net
    fluid_split = SplitConfig(train_classes=(), test_classes=STUDY_CLASSES + tuple(families), val_classes=())
    fluid = prepare(DataSource("tinysol-gm", args.fluid_home), fluid_split, sample_rate=16_000, cache_dir=None)
    scoring_split = replace(config.split, group_by="source")
    scoring = prepare(DataSource("tinysol-gm", args.train_home), scoring_split, sample_rate=16_000, cache_dir=None)
    sets = {
        "study in-font": (scoring, splittable(scoring, STUDY_CLASSES)),
        "study FluidR3": (fluid, splittable(fluid, STUDY_CLASSES)),
        "families FluidR3": (fluid, splittable(fluid, families)),
    }
    row_classes = {name: list(pool) for name, (_, pool) in sets.items()}
    nets = {"own views": net}
    row: dict[str, Any] = {
        "variant": name,
        "seed": args.seed,
        "steps": args.steps,
        "train_classes": len(prep.pools.train),
        "train_seconds": round(seconds, 1),
        "model": str(model_path),
        "classes": row_classes,
        "scores": {},
    }
    for set_name, (p, pool) in sets.items():
        for shots in (5, 1):
            cfg = EpisodeConfig(5, shots, 15)
            for view_name, n in nets.items():
                r = evaluate(n, p.cache, pool, cfg, episodes=args.episodes, seed=0, groups=p.pools.groups)
                row["scores"][f"{set_name} {shots}-shot {view_name}"] = round(r.mean_accuracy, 4)
                log(f"{set_name} {shots}-shot {view_name}: {r.mean_accuracy:.4f} ± {r.ci95_half_width:.4f}")
            if set_name == "families FluidR3":
                mf = mfcc_baseline(p, pool, p.pools.groups, shots, args.episodes, 0)
                row["scores"][f"{set_name} {shots}-shot MFCC"] = round(mf, 4)
                log(f"{set_name} {shots}-shot 20-MFCC baseline: {mf:.4f}")
    with open(args.out, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
