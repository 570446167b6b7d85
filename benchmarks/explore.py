"""Design-choice study on held-out *training* classes (never the test instruments).

Each variant trains on 6 of the 9 default training instruments and is scored on the other 3
(Cello, Oboe, Trombone: 3-way episodes, 1,000 of them, 5-shot and 1-shot). Test instruments
are not read at all, so choosing defaults from this table does not tune to the test set.
Meant for a GPU (each variant ~30 s there); on a CPU use --steps to shorten.

    python benchmarks/explore.py --data-home ~/mir_datasets/tinysol-gm --accelerator cuda --precision bf16-mixed
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from fslcli.config import DEFAULT_TRAIN_CLASSES, AugmentConfig, EpisodeConfig, RunConfig, SplitConfig
from fslcli.datasets import DataSource
from fslcli.evaluation import VAL_STREAM, evaluate
from fslcli.training import fit
from fslcli.workflows import device_for, prepare

HELD_OUT = ("Cello", "Oboe", "Trombone")


def variants(base: RunConfig) -> dict[str, RunConfig]:
    a, m, t, au = base.audio, base.model, base.train, base.augment
    return {
        "default": base,
        # The study's baseline when it was run (results/explore-h200-*.json call it "default"):
        # 5-way training episodes, the episode shape of the tutorial.
        "5-way": replace(base, train=replace(t, train_ways=5)),
        "no-eq-shift": replace(base, augment=replace(au, eq_db=0.0, max_shift_bins=0)),
        "no-aug": replace(
            base,
            augment=AugmentConfig(
                random_crop=True, gain_db=0.0, spec_time_masks=0, spec_freq_masks=0, eq_db=0.0, max_shift_bins=0
            ),
        ),
        "shift4": replace(base, augment=replace(au, max_shift_bins=4)),
        "clip-norm": replace(base, model=replace(m, input_norm="clip")),
        "cosine": replace(base, model=replace(m, distance="cosine")),
        "train-ways-6": replace(base, train=replace(t, train_ways=6)),
        "mels-128": replace(base, audio=replace(a, n_mels=128)),
        "wide": replace(base, model=replace(m, channels=(64, 128, 256, 512))),
        "steps-x2": replace(base, train=replace(t, steps=2 * t.steps)),
        "ways6+clip": replace(base, train=replace(t, train_ways=6), model=replace(m, input_norm="clip")),
        "ways6+clip+no-eq": replace(
            base,
            train=replace(t, train_ways=6),
            model=replace(m, input_norm="clip"),
            augment=replace(au, eq_db=0.0, max_shift_bins=0),
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-home", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--accelerator", default="auto")
    ap.add_argument("--precision", default="32")
    ap.add_argument("--only", default="", help="comma-separated variant names")
    ap.add_argument("--work-dir", type=Path, default=Path("/tmp/fsl-explore"))
    ap.add_argument("--out", type=Path, default=Path("explore.json"))
    args = ap.parse_args()
    train = tuple(c for c in DEFAULT_TRAIN_CLASSES if c not in HELD_OUT)
    base = RunConfig(
        split=SplitConfig(train_classes=train, val_classes=HELD_OUT, test_classes=()),
        train=replace(RunConfig().train, steps=args.steps, accelerator=args.accelerator, precision=args.precision),
    )
    source = DataSource("tinysol-gm", args.data_home)
    results = {}
    wanted = [v for v in args.only.split(",") if v]
    for name, cfg in variants(base).items():
        if wanted and name not in wanted:
            continue
        prep = prepare(source, cfg.split, cfg.audio.sample_rate, None)
        run_dir = args.work_dir / name
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "history.jsonl").unlink(missing_ok=True)
        t0 = time.perf_counter()
        res = fit(cfg, prep.cache, prep.pools.train, prep.pools.val, source, run_dir)
        secs = time.perf_counter() - t0
        from fslcli.checkpoint import load_model

        net = load_model(res.model_path).net.to(device_for())
        row = {"train_seconds": round(secs, 1), "best_val_acc_during_training": res.best_val_acc}
        for shots in (5, 1):
            r = evaluate(
                net,
                prep.cache,
                prep.pools.val,
                EpisodeConfig(3, shots, 15),
                1000,
                123,
                cfg.eval_windows,
                device_for(),
                stream=VAL_STREAM + 50,
            )
            row[f"heldout_3way_{shots}shot"] = round(r.mean_accuracy, 4)
            row[f"heldout_3way_{shots}shot_ci95"] = round(r.ci95_half_width, 4)
        results[name] = row
        print(f"{name:14s} {row}", flush=True)
        args.out.write_text(json.dumps(results, indent=1))
    print("\nvariant        5-shot   1-shot   train s")
    for name, row in results.items():
        print(
            f"{name:14s} {row['heldout_3way_5shot']:.4f}  {row['heldout_3way_1shot']:.4f}  {row['train_seconds']:.0f}"
        )


if __name__ == "__main__":
    main()
