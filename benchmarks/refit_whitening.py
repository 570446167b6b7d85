"""Diagnosis: refit a trained model's comparison space (centre and whitening) on its training
clips, the weights untouched, to see how much of a result lies in that space.

Modes, over the renders given with ``--home`` (the model's training libraries):

- ``pooled``: every library's clips, one group per class (as ``fsl train`` fitted it before
  training on several libraries kept them apart);
- ``per-library``: every library's clips, a class in each library its own group (as ``fsl train``
  fits it now on several libraries);
- ``first``: the first library's clips alone.

Each draws 20 training clips per class and library (seed 0), one excerpt at the onset, as
training's calibration embeds them. Score the written model with ``libraries.py --models`` or
``fsl eval``.

    python benchmarks/refit_whitening.py MODEL OUT.pt --mode per-library --home TIMGM6MB_ALL --home FLUIDR3_ALL
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

MODES = ("pooled", "per-library", "first")
PER_CLASS = 20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--mode", choices=MODES, required=True)
    ap.add_argument("--home", type=Path, action="append", required=True, help="A training library's render (repeat).")
    args = ap.parse_args()

    import torch

    from fslcli.checkpoint import load_model, save_model
    from fslcli.data import prepare
    from fslcli.datasets import DataSource
    from fslcli.embedding import embed_cached

    homes = args.home[:1] if args.mode == "first" else args.home
    loaded = load_model(args.model)
    prep = prepare(
        [DataSource("tinysol-gm", h) for h in homes], loaded.config.split, sample_rate=16_000, cache_dir=None
    )
    library = prep.libraries if prep.libraries is not None else np.zeros(len(prep.cache), dtype=np.int64)
    rng = np.random.default_rng(0)
    ids: list[int] = []
    labels: list[int] = []
    for k, pool in enumerate(prep.pools.train.values()):
        for lib in range(len(homes)):
            mine = pool[library[pool] == lib]
            pick = rng.choice(mine, size=min(len(mine), PER_CLASS), replace=False)
            ids += [int(i) for i in pick]
            labels += [k * len(homes) + lib if args.mode == "per-library" else k] * len(pick)
    emb = embed_cached(loaded.net, prep.cache, ids, windows=1)
    loaded.net.calibrate(emb, torch.tensor(labels))
    meta = {**loaded.meta, "refit_whitening": {"mode": args.mode, "clips": len(ids), "from": str(args.model)}}
    save_model(args.out, loaded.net, loaded.config, loaded.source, meta)
    print(f"{args.mode}: refitted on {len(ids)} clips of {len(prep.pools.train)} classes -> {args.out}")


if __name__ == "__main__":
    main()
