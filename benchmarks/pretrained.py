"""Rebuild the model that ships with fslcli (``fslcli/models/default.pt``) from scratch.

Renders the offline set from TimGM6mb (the font pretty_midi ships) with every GM sound, trains
fslcli's default configuration on it with seed 0 (``fsl train``'s defaults), scores it on the
held-out libraries as ``benchmarks/libraries.py`` does (grouped, 1,000 episodes), and writes the
model file with its recipe (data, seed, steps, fslcli commit) and those figures inside, shown by
``fsl info`` and ``fsl models``. The data source is recorded without a path, so the file points
at each user's own default data home.

``--check`` trains the same way but writes nowhere: it compares the result with the shipped file
(the weights bit for bit, else their largest difference, and the figures).

    python benchmarks/pretrained.py [--work-dir DIR] [--out fslcli/models/default.pt] [--check]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

DATA = "TimGM6mb (pretty_midi's TimGM6mb.sf2) rendered by `fsl download tinysol-gm`: every GM program and drum sound"
SEED = 0


def commit() -> str:
    """The fslcli commit this runs from (with "+changes" when the tree differs from it)."""
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "fslcli"], cwd=root, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def build(work: Path) -> tuple[Path, dict[str, Any]]:
    """Train the default on TimGM6mb and score it; the run's model.pt and its held-out figures."""
    from libraries import LIBRARIES, TRAIN_LIBRARY, configuration, evaluate_model, render_libraries, train

    from fslcli.config import SplitConfig
    from fslcli.data import prepare
    from fslcli.datasets import DataSource

    fonts = {name: Path(path) if path else None for name, _, path in LIBRARIES}
    fonts = {name: font for name, font in fonts.items() if font is None or font.is_file()}
    homes = render_libraries(work, fonts)
    preps = {
        name: prepare(DataSource("tinysol-gm", home), SplitConfig(), sample_rate=16_000, cache_dir=None)
        for name, home in homes.items()
    }
    model, _, _ = train(configuration("default", SEED, None, "cpu", quick=False), preps[TRAIN_LIBRARY], work / "run")
    scores = evaluate_model(model, preps, 1000, 0)
    held_out = {
        name if name != TRAIN_LIBRARY else f"{name} (in-font)": {
            k: scores[name][k]["mean_accuracy"] for k in ("5-shot", "1-shot")
        }
        for name in homes
    }
    return model, held_out


def stamp(model: Path, out: Path, held_out: dict[str, Any]) -> None:
    """Write ``model`` to ``out`` with its recipe and figures, and its data source without a path."""
    import torch

    from fslcli import __version__
    from fslcli.checkpoint import atomic_torch_save

    payload = torch.load(model, map_location="cpu", weights_only=True)
    payload["source"] = {"kind": "tinysol-gm", "path": None}
    payload["meta"]["recipe"] = {
        "command": "make pretrained",
        "data": DATA,
        "seed": SEED,
        "steps": payload["settings"]["train"]["steps"],
        "commit": commit(),
        "fslcli_version": __version__,
    }
    payload["meta"]["held_out"] = held_out
    # Paths of this machine's renders mean nothing elsewhere (a recipe on several libraries lists
    # them under "sources"; the fonts' sha256 under "soundfonts" hold anywhere and stay).
    payload["meta"].pop("soundfont_sha256", None)
    payload["meta"].pop("sources", None)
    atomic_torch_save(payload, out)


def compare(built: Path, shipped: Path) -> bool:
    """Print whether two model files hold the same weights (bit for bit, else the largest difference)."""
    import torch

    a = torch.load(built, map_location="cpu", weights_only=True)
    b = torch.load(shipped, map_location="cpu", weights_only=True)
    same = a["state_dict"].keys() == b["state_dict"].keys() and all(
        torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"]
    )
    if same:
        print(f"weights identical to {shipped}, bit for bit ({len(a['state_dict'])} tensors)")
    else:
        worst = max(
            float((a["state_dict"][k].float() - b["state_dict"][k].float()).abs().max()) for k in a["state_dict"]
        )
        print(f"weights differ from {shipped}: largest difference {worst:.3g}")
    print("figures, built:  ", a["meta"].get("held_out"))
    print("figures, shipped:", b["meta"].get("held_out"))
    return same


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work-dir", type=Path, help="Renders and the run (default: a new temporary folder).")
    ap.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parents[1] / "fslcli" / "models" / "default.pt"
    )
    ap.add_argument("--check", action="store_true", help="Compare with --out instead of writing it.")
    args = ap.parse_args()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="fsl-pretrained-"))
    model, held_out = build(work)
    target = work / "default.pt" if args.check else args.out
    stamp(model, target, held_out)
    if args.check:
        sys.exit(0 if compare(target, args.out) else 1)
    print(f"Wrote {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB); held-out figures: {held_out}")


if __name__ == "__main__":
    main()
