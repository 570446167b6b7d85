"""Speed where users feel it: the real ``fsl`` commands, timed from the shell, start-up included.

- ``fsl eval MODEL`` with 1,000 episodes (target: within 10 s), on a warm cache, after one untimed
  run that builds it;
- ``fsl embed MODEL FOLDER`` over a folder holding 30 minutes of audio (target: at least 200x
  real time): 120 files of 15 s, cut from the offline set's clips (mono 44.1 kHz WAV), so decoding
  and resampling count as they would for a user;
- with ``--train``, ``fsl train`` with every default (target: within 20 minutes on 2 cores).

Each command runs as a child process under ``/usr/bin/time``-like accounting (wall seconds from
the parent, peak RSS from ``getrusage(RUSAGE_CHILDREN)``). Timings are reported, never asserted:
they depend on the machine and on whatever else runs on it; the load average is recorded.

    python benchmarks/speed.py --model runs/x/model.pt --data-home ~/mir_datasets/tinysol-gm [--train] [--out speed.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

FSL = str(Path(sys.executable).with_name("fsl"))


def timed(args: list[str]) -> dict[str, Any]:
    """Run ``fsl ARGS`` as a child: its wall seconds and its own peak RSS (``os.wait4``), in MiB."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([FSL, *args], stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"fsl {' '.join(args)} failed:\n{err.read()[-2000:]}")
        out.seek(0)
        return {
            "command": "fsl " + " ".join(args),
            "seconds": round(seconds, 2),
            "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
            "stdout_tail": out.read()[-300:],
        }


def thirty_minutes(data_home: Path, folder: Path, minutes: float = 30.0, seconds_per_file: float = 15.0) -> float:
    """Write ``minutes`` of audio as files of ``seconds_per_file``, each a sequence of the offline set's
    clips (44.1 kHz mono WAV, as rendered); returns the seconds written."""
    import soundfile as sf

    clips = sorted((data_home / "audio").rglob("*.wav"))
    rng = np.random.default_rng(0)
    n_files = int(round(minutes * 60 / seconds_per_file))
    folder.mkdir(parents=True, exist_ok=True)
    total = 0.0
    for k in range(n_files):
        parts, length, rate = [], 0, 44_100
        while length < seconds_per_file * rate:
            audio, rate = sf.read(clips[int(rng.integers(len(clips)))], dtype="float32")
            parts.append(audio)
            length += len(audio)
        audio = np.concatenate(parts)[: int(seconds_per_file * rate)]
        sf.write(folder / f"take_{k:03d}.wav", audio, rate, subtype="PCM_16")
        total += len(audio) / rate
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--data-home", type=Path, required=True, help="The offline set (fsl download tinysol-gm).")
    ap.add_argument("--train", action="store_true", help="Also time a default `fsl train` (about 15 minutes).")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    results: dict[str, Any] = {"load_average_at_start": list(os.getloadavg()), "cpu_count": os.cpu_count()}
    common = ["--data-home", str(args.data_home), "--dataset", "tinysol-gm"]
    timed(["eval", str(args.model), "--episodes", "10", *common])  # builds the cache; not timed
    results["eval_1000"] = timed(["eval", str(args.model), "--episodes", "1000", "--json", *common])
    results["eval_1000"]["target_seconds"] = 10
    with tempfile.TemporaryDirectory(prefix="fsl-speed-") as tmp:
        audio_seconds = thirty_minutes(args.data_home, Path(tmp) / "takes")
        run = timed(["embed", str(args.model), str(Path(tmp) / "takes"), "--out", str(Path(tmp) / "e.npz")])
        run["audio_seconds"] = audio_seconds
        run["x_real_time"] = round(audio_seconds / run["seconds"], 1)
        run["target_x_real_time"] = 200
        results["embed_30_minutes"] = run
        if args.train:
            out = Path(tmp) / "run"
            results["train_default"] = timed(["train", *common, "--out", str(out)])
            results["train_default"]["target_seconds"] = 20 * 60
    results["load_average_at_end"] = list(os.getloadavg())
    for key in ("eval_1000", "embed_30_minutes", "train_default"):
        if key in results:
            r = results[key]
            extra = f", {r['x_real_time']}x real time" if "x_real_time" in r else ""
            print(f"{key}: {r['seconds']} s wall{extra}, peak RSS {r['peak_rss_mib']} MiB  ({r['command']})")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
