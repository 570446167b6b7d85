"""Rebuild the model that ships with fslcli (``fslcli/models/default.pt``) from scratch.

Renders the offline set, every GM program and drum sound, from two sample libraries: TimGM6mb
(the font pretty_midi ships) and FluidR3_GM (Debian ``fluid-soundfont-gm``). Trains fslcli's
default configuration on both at once with seed 0, exactly as

    fsl train --data-home TIMGM6MB_RENDER --data-home FLUIDR3_RENDER --seed 0

does, scores it as ``benchmarks/libraries.py`` does (grouped, 1,000 episodes) on MuseScore_General,
the library it never heard, and in-font on its two training libraries, and writes the model file
with its recipe (data, seed, steps, fslcli commit) and those figures inside, shown by ``fsl info``
and ``fsl models``. The data source is recorded without a path, so the file points at each
user's own default data home.

``--check`` trains the same way but writes nowhere: it compares the result with the shipped file
(the weights bit for bit, else their largest difference, and the figures).

    python benchmarks/pretrained.py [--work-dir DIR] [--out fslcli/models/default.pt] [--check]

Needs ``apt-get install fluid-soundfont-gm musescore-general-soundfont`` (or ``--font NAME=PATH``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

DATA = (
    "TimGM6mb (pretty_midi's TimGM6mb.sf2) and FluidR3_GM (Debian fluid-soundfont-gm), each rendered by "
    "`fsl download tinysol-gm`: every GM program and drum sound"
)
SEED = 0
#: The libraries the bundled model trains on, in order (names as in ``libraries.LIBRARIES``).
TRAINED_ON = ("TimGM6mb", "FluidR3_GM")


def commit() -> str:
    """The fslcli commit this runs from (with "+changes" when the tree differs from it)."""
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "fslcli"], cwd=root, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def build(work: Path, fonts: dict[str, Path | None]) -> tuple[Path, dict[str, Any]]:
    """Train the default on both libraries and score it; the run's model.pt and its figures."""
    from libraries import configuration, evaluate_model, log, render_libraries, train

    from fslcli.config import SplitConfig
    from fslcli.data import prepare
    from fslcli.datasets import DataSource
    from fslcli.datasets.general_midi import ALL_INSTRUMENTS
    from fslcli.datasets.tinysol_gm import render_tinysol_gm

    homes = render_libraries(work, fonts)  # TimGM6mb with every GM sound; the others TinySOL's 14
    every_sound = work / "data" / "FluidR3_GM-all"
    t0 = time.perf_counter()
    report = render_tinysol_gm(every_sound, fonts["FluidR3_GM"], instruments=ALL_INSTRUMENTS)
    what = "reused" if report.reused else f"rendered in {time.perf_counter() - t0:.0f} s"
    log(f"FluidR3_GM, every GM sound: {report.written} files ({what})")
    training = {"TimGM6mb": homes["TimGM6mb"], "FluidR3_GM": report.data_home}
    both = prepare(
        [DataSource("tinysol-gm", training[name]) for name in TRAINED_ON], SplitConfig(), sample_rate=16_000,
        cache_dir=None,
    )  # fmt: skip
    model, _, _ = train(configuration("default", SEED, None, "cpu", quick=False), both, work / "run")
    preps = {
        name: prepare(DataSource("tinysol-gm", home), SplitConfig(), sample_rate=16_000, cache_dir=None)
        for name, home in homes.items()
    }
    scores = evaluate_model(model, preps, 1000, 0)
    figures = {
        name if name not in TRAINED_ON else f"{name} (in-font)": {
            k: scores[name][k]["mean_accuracy"] for k in ("5-shot", "1-shot")
        }
        for name in homes
    }
    return model, figures


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
    # Paths of this machine's renders mean nothing elsewhere; the fonts' sha256 (kept) do.
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
    ap.add_argument("--font", action="append", default=[], help="NAME=PATH: another place for a library's font.")
    args = ap.parse_args()
    from libraries import LIBRARIES

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
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="fsl-pretrained-"))
    model, held_out = build(work, fonts)
    target = work / "default.pt" if args.check else args.out
    stamp(model, target, held_out)
    if args.check:
        sys.exit(0 if compare(target, args.out) else 1)
    print(f"Wrote {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB); held-out figures: {held_out}")


if __name__ == "__main__":
    main()
