"""Paired effect of whitened embeddings on one trained model.

Scores a model trained with ``embedding_norm`` "whitened" twice on the same seeded test
episodes, as ``fsl eval`` draws them: once as it is, and once with its whitening matrix
replaced by the identity, which leaves "centered-l2" (minus the training clips' mean, unit
length). The weights, excerpts and episodes are the same, so the difference is the whitening's
alone. Each ``--data-home`` is a TinySOL-shaped set (``fsl download tinysol-gm`` with any
``--soundfont``), scored on the model's test classes.

    python benchmarks/whitening.py MODEL --data-home DIR [--data-home DIR2 ...] [--out whitening.jsonl]
"""

from __future__ import annotations

import argparse
import copy
import json
from dataclasses import replace
from pathlib import Path

import torch

from fslcli.checkpoint import load_model
from fslcli.config import EpisodeConfig
from fslcli.datasets import DataSource
from fslcli.evaluation import evaluate
from fslcli.workflows import prepare


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("--data-home", type=Path, action="append", required=True)
    ap.add_argument("--episodes", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None, help="also write one JSON line per (data, shots)")
    args = ap.parse_args()

    loaded = load_model(args.model)
    if loaded.net.whitener is None:
        raise SystemExit(f"{args.model} compares {loaded.config.model.embedding_norm!r} embeddings, not 'whitened'")
    plain = copy.deepcopy(loaded.net)
    plain.whitener.copy_(torch.eye(plain.dim))
    split = replace(loaded.config.split, train_classes=(), val_classes=())
    rows = []
    for home in args.data_home:
        prep = prepare(DataSource("tinysol-gm", home), split, loaded.config.audio.sample_rate, args.cache_dir)
        for shots in (5, 1):
            cfg = EpisodeConfig(5, shots, 15)
            acc = {}
            for name, net in (("whitened", loaded.net), ("centered-l2", plain)):
                res = evaluate(
                    net, prep.cache, prep.pools.test, cfg, args.episodes, args.seed, loaded.config.eval_windows
                )
                acc[name] = (round(res.mean_accuracy, 4), round(res.ci95_half_width, 4))
            row = {"data": str(home), "shots": shots, **{k: v[0] for k, v in acc.items()}, "ci95": acc["whitened"][1]}
            rows.append(row)
            print(
                f"{home.name:24s} 5-way {shots}-shot  whitened {acc['whitened'][0]:.4f}  "
                f"centered-l2 {acc['centered-l2'][0]:.4f}  difference {acc['whitened'][0] - acc['centered-l2'][0]:+.4f}",
                flush=True,
            )
    if args.out:
        args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    main()
