"""Study: training on several sample libraries with each episode drawn from one library.

``fsl train --data-home A --data-home B`` merges a class across libraries, so an episode's
support and queries of one class mix the libraries and the embedding is pushed to ignore the
library. Test episodes never mix them: support and queries come from one recording setup. This
variant keeps training episodes like test episodes: each draws its classes and clips from one
library (chosen uniformly per episode), so the extra library adds recordings without asking for
invariance the test never needs. Everything else is ``fsl train``'s default.

It is a study knob, not a product option: it writes a run folder whose ``model.pt`` is scored
with ``benchmarks/libraries.py --models`` (report it on MuseScore_General only: the model heard
the other two libraries).

    python benchmarks/library_episodes.py --home TIMGM6MB_RENDER --home FLUIDR3_RENDER --seed 0 --out RUN_DIR
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))


def per_library_dataset(libraries: np.ndarray) -> type:
    """An ``EpisodeDataset`` whose every episode comes from one library: ``libraries`` gives each
    cached clip's (``Prepared.libraries``)."""
    from fslcli.episodes import TRAIN_STREAM, episode_rng, sample_episode
    from fslcli.training.dataset import EpisodeDataset, episode_batch

    class PerLibraryEpisodes(EpisodeDataset):
        def __init__(self, cache: Any, pool: Any, cfg: Any, **kwargs: Any) -> None:
            super().__init__(cache, pool, cfg, **kwargs)
            self.pools = []
            for k in range(int(libraries.max()) + 1):
                own = {label: np.asarray(ids)[libraries[np.asarray(ids)] == k] for label, ids in pool.items()}
                self.pools.append({label: ids for label, ids in own.items() if len(ids) >= cfg.clips_per_class})

        def episode(self, i: int) -> tuple[Any, np.random.Generator]:
            """Training episode ``i`` (from one library) and the generator that goes on to crop it."""
            rng = episode_rng(self.seed, i, self.rank, TRAIN_STREAM)
            pool = self.pools[int(rng.integers(len(self.pools)))]
            cfg = replace(self.cfg, ways=min(self.cfg.ways, len(pool)))
            return sample_episode(pool, cfg, rng), rng

        def __getitem__(self, i: int) -> dict[str, Any]:
            ep, rng = self.episode(i)
            return episode_batch(
                self.cache, ep, self.excerpt, aug=self.aug, rng=rng, n_mels=self.n_mels, n_frames=self.n_frames
            )

    return PerLibraryEpisodes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, action="append", required=True, help="A library's render (repeat).")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, help="Training steps (default: fsl train's).")
    ap.add_argument("--out", type=Path, required=True, help="The run folder.")
    args = ap.parse_args()

    from libraries import configuration, log, train

    from fslcli.config import SplitConfig
    from fslcli.data import prepare
    from fslcli.datasets import DataSource
    from fslcli.training import module, quiet_lightning

    quiet_lightning()
    prep = prepare([DataSource("tinysol-gm", h) for h in args.home], SplitConfig(), sample_rate=16_000, cache_dir=None)
    if prep.libraries is None:
        raise SystemExit("give --home at least twice: the study draws each episode from one library")
    module.EpisodeDataset = per_library_dataset(prep.libraries)  # the one change from fsl train
    model, seconds, fitted = train(configuration("default", args.seed, args.steps, "auto", quick=False), prep, args.out)
    log(f"wrote {model} in {seconds:.0f} s; best validation accuracy {fitted['best_val_acc']:.3f}")


if __name__ == "__main__":
    main()
