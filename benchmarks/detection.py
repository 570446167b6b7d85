"""Detection benchmark: ``fsl detect``'s core on long recordings built from a TinySOL-shaped render.

Accuracy (the default). For each data home (``--data-home``, repeatable; made by ``fsl download
tinysol-gm --data-home DIR``) and each of ``--recordings`` seeded recordings:

* an episode: ``--ways`` of the model's test instruments and ``--shots`` support notes of each,
  drawn as ``fsl eval`` draws a support set (``episodes.grouped_draw``: uniformly over the
  class's notes); the recording's notes of the class come from the source groups the support
  did not use (different samples of the font, so never a copy of a support note);
* a recording of ``--seconds`` at 44.1 kHz: one line of notes at random times (gaps of 0.3 to
  4 s; one note in five starts inside the previous one), each at -9 to 0 dB, over pink noise
  (``--noise-dbfs``). With ``--distractors sequence`` (the default) a share of the notes
  (``--distractor-share``, 0.3) are distractors: notes of the test instruments outside the
  episode, within the pitch range of the episode's notes, never annotated. The ground truth of a
  note runs from its first to its last 1024-sample frame within ``FLOOR_DB`` of its loudest;
* ``fsl detect``'s core (``detection.support_from_folder`` + ``detection.detect``) with its
  default settings, and a baseline: energy segmentation (frames ``BASELINE_DB`` above the
  recording's noise floor, gaps under 0.1 s bridged, segments of 0.2 s or more), each segment
  given the class whose support notes' mean log-mel is nearest to its own.

Both are scored with event-based F-measures, counts summed over all recordings (F = 2 TP /
(N_ref + N_sys)), under three rules, each with optimal one-to-one matching of same-class events:

* IoU >= 0.3, the DCASE few-shot bioacoustic task's rule (the headline);
* onset within 200 ms (``sed_eval``'s ``EventBasedMetrics`` with ``evaluate_offset=False``);
* onset within 200 ms and offset within max(200 ms, half the reference's length)
  (``sed_eval``'s defaults, DCASE 2016-2019 task 3/4 style; a sustained note's release makes its
  offset a matter of definition, so this rule says more about the -30 dB convention than about
  detection).

``sed_eval`` itself does not import on this set-up (its ``dcase_util`` needs ``pkg_resources``),
so the rules are implemented here with SciPy's maximum bipartite matching (Hopcroft-Karp, as
``sed_eval.util.bipartite_match``); on 200 random pairs of event lists the collar rule gave the
same counts as sed_eval 0.2.1 (imported for the check through a stand-in ``pkg_resources``).
Recordings without the episode's notes (the distractors and the noise alone) give false alarms
per minute.

``--support-draw groups --distractors overlay`` is the first version of this benchmark: support
notes from whole source groups (one sample's few neighbouring pitches), distractors of any pitch
added anywhere, over the targets too, about one every 6 s.

Speed (``--speed``): a 30-minute and a 3-hour 44.1 kHz recording (pink noise and notes) are
written to a temporary folder; a child process runs the detection on each, and the benchmark
reports its wall time as times real time and its peak resident memory (``os.wait4``'s
``ru_maxrss`` of the child).

    python benchmarks/detection.py --model M --data-home A [--data-home B] [--out det.json]
    python benchmarks/detection.py --model M --data-home A --tune [--seed 100]
    python benchmarks/detection.py --model M --speed [--speed-minutes 30,180]

Figures are reported, never asserted. ``--quick`` runs a smoke test whose numbers mean little.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

SR_OUT = 44_100
#: A note's ground truth: its frames within this many dB of its loudest.
FLOOR_DB = 30.0
#: Frame of the note extent and of the baseline's energy, in samples at 16 kHz.
BASELINE_FRAME = 512
#: The baseline's segments: frames this many dB above the noise floor (20th percentile of frame energy).
BASELINE_DB = 10.0
#: Event-based matching (sed_eval's defaults) and the DCASE bioacoustic task's IoU.
COLLAR = 0.2
OFFSET_SHARE = 0.5
MIN_IOU = 0.3
#: The matching rules, the headline first.
RULES = ("iou", "onset", "collar")
#: Pink background noise, RMS in dB relative to full scale.
NOISE_DBFS = -60.0


# --- building recordings ---------------------------------------------------------------------


@dataclass(frozen=True)
class Truth:
    onset: float
    offset: float
    label: str


@dataclass(frozen=True)
class Episode:
    classes: list[str]
    support: dict[str, list[Path]]
    pool: dict[str, list[Path]]
    distractors: list[Path]
    #: Share of the test instruments' other notes that lay inside the episode's pitch range.
    distractors_in_range: float = 1.0


#: ``--support-draw``: "uniform" draws the support as ``fsl eval`` does (``episodes.grouped_draw``:
#: clips drawn uniformly, the recording's notes from the other source groups); "groups" takes
#: whole source groups until ``shots`` clips (one sample's few neighbouring pitches; the first
#: version of this benchmark).
SUPPORT_DRAWS = ("uniform", "groups")
#: ``--distractors``: "sequence" mixes distractor notes into the one line of notes (they overlap
#: a note only as targets overlap one another); "overlay" adds about one every 6 s anywhere, over
#: the targets too (the first version); "none".
DISTRACTORS = ("sequence", "overlay", "none")


def draw_episode(
    clips: Sequence[Any], test_classes: Sequence[str], ways: int, shots: int, rng, *, draw: str = "uniform"
) -> Episode:
    """``ways`` test classes, ``shots`` support notes each and the class's notes of the other
    source groups for the recording (``draw``: :data:`SUPPORT_DRAWS`); distractors: notes of the
    test classes left out, within the pitch range of the episode's notes."""
    from fslcli.episodes import grouped_draw

    classes = sorted(rng.choice(sorted(test_classes), size=ways, replace=False).tolist())
    support, pool, pitches = {}, {}, []
    for c in classes:
        mine = [x for x in clips if x.label == c]
        groups = np.asarray([x.group for x in mine])
        if len(set(groups.tolist())) < 2:
            raise SystemExit(
                f"{c} has {len(set(groups.tolist()))} source group(s); support and test notes need two or more"
            )
        if draw == "uniform":
            pick, _ = grouped_draw(groups, shots, 1, rng)
        else:
            order = sorted(set(groups.tolist()))
            rng.shuffle(order)
            chosen: list[int] = []
            for g in order[:-1]:  # at least one group stays for the recording
                chosen += np.flatnonzero(groups == g).tolist()
                if len(chosen) >= shots:
                    break
            pick = np.asarray(chosen)[rng.choice(len(chosen), size=min(shots, len(chosen)), replace=False)]
        used = set(groups[pick].tolist())
        support[c] = [mine[i].path for i in sorted(pick.tolist())]
        pool[c] = [x.path for x in mine if x.group not in used]
        pitches += [x.pitch_id for x in mine if x.group not in used and x.pitch_id is not None]
    others = [x for x in clips if x.label in set(test_classes) - set(classes)]
    lo, hi = (min(pitches), max(pitches)) if pitches else (-1, 10**6)
    inside = [x.path for x in others if x.pitch_id is None or lo <= x.pitch_id <= hi]
    return Episode(classes, support, pool, inside, len(inside) / max(1, len(others)))


def pink_noise(n: int, rng) -> np.ndarray:
    """``(n,)`` pink (1/f) noise of unit RMS, by filtering white noise in the frequency domain."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spec), dtype=np.float64)
    f[0] = 1.0
    x = np.fft.irfft(spec / np.sqrt(f), n)
    return (x / (np.sqrt(np.mean(x**2)) + 1e-12)).astype(np.float32)


def note_extent(wave: np.ndarray, floor_db: float = FLOOR_DB, frame: int = 1024) -> tuple[int, int]:
    """First and last sample (end exclusive) of the frames within ``floor_db`` of the loudest."""
    n = len(wave) // frame
    if n == 0:
        return 0, len(wave)
    rms = np.sqrt(np.square(wave[: n * frame].reshape(n, frame), dtype=np.float64).mean(1))
    loud = np.flatnonzero(rms >= rms.max() * 10 ** (-floor_db / 20))
    return int(loud[0]) * frame, int(loud[-1] + 1) * frame


def _read(path: Path, sr: int) -> np.ndarray:
    from fslcli.features import decode_audio

    return decode_audio(path, sr)


def _note(path: Path, sr: int, rng) -> np.ndarray:
    """A note at ``sr``, peak 0.5, then -9 to 0 dB."""
    wave = _read(path, sr)
    return wave * 10 ** (rng.uniform(-9, 0) / 20) * (0.5 / (np.abs(wave).max() + 1e-9))


def render_recording(
    episode: Episode,
    seconds: float,
    rng,
    *,
    sr: int = SR_OUT,
    overlap: float = 0.2,
    noise_dbfs: float = NOISE_DBFS,
    distractors: str = "sequence",
    distractor_share: float = 0.3,
) -> tuple[np.ndarray, list[Truth]]:
    """A recording ``(n,)`` at ``sr`` and its ground truth: one line of notes at random times,
    gaps of 0.3 to 4 s, a note starting inside the previous one with probability ``overlap``,
    over pink noise. With ``distractors="sequence"``, each note is a distractor (never
    annotated) with probability ``distractor_share``; "overlay" adds distractors anywhere, about
    one every 6 s, after the line is written (see :data:`DISTRACTORS`)."""
    n = int(seconds * sr)
    audio = pink_noise(n, rng) * 10 ** (noise_dbfs / 20)
    truth: list[Truth] = []
    t = rng.uniform(0.3, 2.0)
    last_onset, last_end = -1.0, 0.0
    targets = any(episode.pool.values())
    while True:
        other = distractors == "sequence" and episode.distractors and (not targets or rng.random() < distractor_share)
        if not other and not targets:
            break
        if other:
            wave = _note(episode.distractors[int(rng.integers(len(episode.distractors)))], sr, rng)
            label = None
        else:
            label = episode.classes[int(rng.integers(len(episode.classes)))]
            wave = _note(episode.pool[label][int(rng.integers(len(episode.pool[label])))], sr, rng)
        if rng.random() < overlap and last_onset >= 0:
            t = max(last_onset + 0.3, last_end - rng.uniform(0.3, 1.0))  # start inside the previous note
        start = int(t * sr)
        if start + len(wave) > n:
            break
        audio[start : start + len(wave)] += wave
        a, b = note_extent(wave)
        if label is not None:
            truth.append(Truth(round((start + a) / sr, 4), round((start + b) / sr, 4), label))
        last_onset, last_end = (start + a) / sr, (start + b) / sr
        t = last_end + rng.uniform(0.3, 4.0)
    if distractors == "overlay":
        for _ in range(int(seconds / 6)):
            wave = _note(episode.distractors[int(rng.integers(len(episode.distractors)))], sr, rng)
            start = int(rng.uniform(0, max(1, n - len(wave))))
            audio[start : start + len(wave)] += wave[: n - start]
    peak = np.abs(audio).max()
    if peak > 0.99:
        audio *= 0.99 / peak
    return audio.astype(np.float32), sorted(truth, key=lambda e: e.onset)


def write_support(episode: Episode, folder: Path) -> Path:
    """``folder/<class>/`` holding symbolic links to the episode's support notes."""
    for c, paths in episode.support.items():
        d = folder / c
        d.mkdir(parents=True, exist_ok=True)
        for p in paths:
            link = d / p.name
            link.unlink(missing_ok=True)
            link.symlink_to(p)
    return folder


# --- the baseline ----------------------------------------------------------------------------


def _log_mel(audio: np.ndarray, sr: int = 16_000) -> np.ndarray:
    """``(frames, 64)`` log-mel of ``audio`` at 16 kHz, 1024-sample FFT, ``BASELINE_FRAME`` hop."""
    import librosa

    mel = librosa.feature.melspectrogram(y=audio, sr=sr, n_fft=1024, hop_length=BASELINE_FRAME, n_mels=64)
    return np.log(mel + 1e-6).T


def _frame_db(audio: np.ndarray) -> np.ndarray:
    n = len(audio) // BASELINE_FRAME
    x = audio[: n * BASELINE_FRAME].reshape(n, BASELINE_FRAME).astype(np.float64)
    return 10 * np.log10(np.mean(x**2, axis=1) + 1e-12)


def baseline_prototypes(support: dict[str, list[Path]]) -> dict[str, np.ndarray]:
    """Per class, the mean over its support notes of each note's mean log-mel over its loud frames."""
    out = {}
    for c, paths in support.items():
        vecs = []
        for p in paths:
            audio = _read(p, 16_000)
            mel = _log_mel(audio)
            db = _frame_db(audio)
            loud = db >= db.max() - FLOOR_DB
            m = min(len(mel), len(loud))
            vecs.append(mel[:m][loud[:m]].mean(0) if loud[:m].any() else mel.mean(0))
        out[c] = np.mean(vecs, axis=0)
    return out


def baseline_detect(audio16: np.ndarray, protos: dict[str, np.ndarray]) -> list[Truth]:
    """Energy segmentation, then the nearest prototype on each segment's mean log-mel."""
    db = _frame_db(audio16)
    mel = _log_mel(audio16)
    m = min(len(db), len(mel))
    db, mel = db[:m], mel[:m]
    active = db >= np.percentile(db, 20) + BASELINE_DB
    hop = BASELINE_FRAME / 16_000
    # Bridge gaps shorter than 0.1 s.
    idx = np.flatnonzero(np.diff(np.concatenate([[0], active.astype(np.int8), [0]])))
    runs = [[a, b] for a, b in zip(idx[::2], idx[1::2], strict=True)]
    merged: list[list[int]] = []
    for a, b in runs:
        if merged and (a - merged[-1][1]) * hop < 0.1:
            merged[-1][1] = b
        else:
            merged.append([a, b])
    names = sorted(protos)
    p = np.stack([protos[c] for c in names])
    out = []
    for a, b in merged:
        if (b - a) * hop < 0.2:
            continue
        v = mel[a:b].mean(0)
        out.append(Truth(round(a * hop, 3), round(b * hop, 3), names[int(((p - v) ** 2).sum(1).argmin())]))
    return out


# --- scoring ---------------------------------------------------------------------------------


def _matches(ref: Sequence[Truth], est: Sequence[Truth], rule: str) -> int:
    """Largest one-to-one matching of same-class pairs that satisfy ``rule`` ("iou", "onset" or "collar")."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_bipartite_matching

    if not ref or not est:
        return 0
    hit = np.zeros((len(ref), len(est)), dtype=bool)
    for i, r in enumerate(ref):
        for j, e in enumerate(est):
            if r.label != e.label:
                continue
            if rule == "collar":
                ok = abs(e.onset - r.onset) <= COLLAR and abs(e.offset - r.offset) <= max(
                    COLLAR, OFFSET_SHARE * (r.offset - r.onset)
                )
            elif rule == "onset":
                ok = abs(e.onset - r.onset) <= COLLAR
            else:
                inter = min(r.offset, e.offset) - max(r.onset, e.onset)
                union = max(r.offset, e.offset) - min(r.onset, e.onset)
                ok = inter > 0 and inter / union >= MIN_IOU
            hit[i, j] = ok
    if not hit.any():
        return 0
    match = maximum_bipartite_matching(csr_matrix(hit), perm_type="column")
    return int((match >= 0).sum())


def event_counts(ref: Sequence[Truth], est: Sequence[Truth]) -> dict[str, int]:
    """Reference and system event counts and true positives under each rule."""
    return {
        "n_ref": len(ref),
        "n_sys": len(est),
        **{f"tp_{rule}": _matches(ref, est, rule) for rule in RULES},
    }


def f_measures(counts: Sequence[dict[str, int]]) -> dict[str, float]:
    """Micro-averaged precision, recall and F over recordings (counts summed first), per rule."""
    n_ref = sum(c["n_ref"] for c in counts)
    n_sys = sum(c["n_sys"] for c in counts)
    out: dict[str, float] = {"n_ref": n_ref, "n_sys": n_sys}
    for rule in RULES:
        tp = sum(c[f"tp_{rule}"] for c in counts)
        out[f"f_{rule}"] = 2 * tp / (n_ref + n_sys) if n_ref + n_sys else float("nan")
        out[f"precision_{rule}"] = tp / n_sys if n_sys else float("nan")
        out[f"recall_{rule}"] = tp / n_ref if n_ref else float("nan")
    return out


# --- running ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One benchmark recording: the file, its support folder, its ground truth, its episode."""

    home: str
    path: Path
    support: Path
    truth: list[Truth]
    classes: list[str]
    distractors_in_range: float = 1.0


@dataclass(frozen=True)
class Protocol:
    """How the benchmark's recordings are made (see the module docstring)."""

    seconds: float = 120.0
    ways: int = 3
    shots: int = 5
    seed: int = 0
    noise_dbfs: float = NOISE_DBFS
    draw: str = "uniform"
    distractors: str = "sequence"
    distractor_share: float = 0.3


def build_cases(
    home: Path, test_classes: Sequence[str], work: Path, *, n: int, protocol: Protocol, targets: bool = True
) -> list[Case]:
    """``n`` seeded recordings from one data home (see the module docstring); ``targets=False``:
    the same without the episode's notes (distractors and noise only), for counting false alarms."""
    import soundfile as sf

    from fslcli.datasets import DataSource, load_clips

    clips = load_clips(DataSource("tinysol-gm", Path(home))).clips
    cases = []
    for i in range(n):
        rng = np.random.default_rng([protocol.seed, i])
        episode = draw_episode(clips, test_classes, protocol.ways, protocol.shots, rng, draw=protocol.draw)
        if not targets:
            episode = replace(episode, pool={c: [] for c in episode.classes})
        audio, truth = render_recording(
            episode, protocol.seconds, rng, noise_dbfs=protocol.noise_dbfs, distractors=protocol.distractors,
            distractor_share=protocol.distractor_share,
        )  # fmt: skip
        folder = work / f"{Path(home).name}-{'' if targets else 'empty-'}{i}"
        folder.mkdir(parents=True, exist_ok=True)
        wav = folder / "recording.wav"
        sf.write(wav, audio, SR_OUT, subtype="PCM_16")
        support = write_support(episode, folder / "support")
        cases.append(Case(str(home), wav, support, truth, episode.classes, episode.distractors_in_range))
    return cases


def as_truth(events: Sequence[Any]) -> list[Truth]:
    return [Truth(e.onset, e.offset, e.label) for e in events]


def run_detector(net: Any, cases: Sequence[Case], settings: Any) -> tuple[list[dict[str, int]], float, float]:
    """``fsl detect``'s core on each case: event counts, seconds of audio, seconds taken."""
    from fslcli import detection

    counts, audio_s, took = [], 0.0, 0.0
    for case in cases:
        support = detection.support_from_folder(net, case.support, windows=settings.support_windows)
        t0 = time.perf_counter()
        res = detection.detect(net, [case.path], support, settings=settings)
        took += time.perf_counter() - t0
        audio_s += res.timelines[0].duration
        counts.append(event_counts(case.truth, as_truth(res.events)))
    return counts, audio_s, took


def run_baseline(cases: Sequence[Case]) -> list[dict[str, int]]:
    counts = []
    for case in cases:
        protos = baseline_prototypes({d.name: sorted(d.iterdir()) for d in sorted(case.support.iterdir())})
        counts.append(event_counts(case.truth, baseline_detect(_read(case.path, 16_000), protos)))
    return counts


#: The instruments ``--tune`` builds its recordings from: TinySOL training instruments (the
#: design study's held-out five), so no setting is chosen on a test instrument.
TUNE_CLASSES = ("Cello", "Oboe", "Trombone", "Clarinet in Bb", "Flute")

#: The grid ``--tune`` searches: how support and windows are embedded, then the settings that
#: change the probabilities, then those that read them.
TUNE_EMBEDDING = {"support_windows": (1, "all"), "hop": (0.25, 0.125)}
TUNE_PROBABILITY = {
    "background_share": (0.75, 0.9),
    "temperature": (0.25, 0.5),
    "margin": (0.5, 1.0, 1.5),
}
TUNE_EVENTS = {
    "threshold": (0.4, 0.5, 0.6),
    "smooth": (0.0, 1.0, 1.5),
    "min_duration": (0.5,),
    "onset_snap": (0.0, 0.75),
}


def tune(net: Any, cases: Sequence[Case], base: Any) -> list[dict[str, Any]]:
    """Event F-measures at every grid point over ``cases``, best F (IoU) first. Each recording is
    embedded once per ``TUNE_EMBEDDING`` point."""
    import itertools

    from fslcli import detection

    rows = []
    for values0 in itertools.product(*TUNE_EMBEDDING.values()):
        s0 = replace(base, **dict(zip(TUNE_EMBEDDING, values0, strict=True)))
        hop = detection.hop_samples(net, s0.hop)
        scans = []
        for case in cases:
            support = detection.support_from_folder(net, case.support, windows=s0.support_windows)
            scans.append((case, support, detection.scan_recording(net, case.path, support, hop=hop)))
        for values in itertools.product(*TUNE_PROBABILITY.values()):
            s1 = replace(s0, **dict(zip(TUNE_PROBABILITY, values, strict=True)))
            probs = [detection.window_probabilities(scan, s1) for _, _, scan in scans]
            for values2 in itertools.product(*TUNE_EVENTS.values()):
                s2 = replace(s1, **dict(zip(TUNE_EVENTS, values2, strict=True)))
                counts = []
                for (case, support, scan), p in zip(scans, probs, strict=True):
                    ev = detection.timeline_events(detection.scan_timeline(scan, p, s2), support.classes, s2)
                    counts.append(event_counts(case.truth, as_truth(ev)))
                names = (*TUNE_EMBEDDING, *TUNE_PROBABILITY, *TUNE_EVENTS)
                rows.append({**{k: getattr(s2, k) for k in names}, **f_measures(counts)})
    return sorted(rows, key=lambda r: -r["f_iou"])


def tune_summary(rows: Sequence[dict[str, Any]], base: Any, best: int = 50) -> dict[str, Any]:
    """What ``--out`` keeps of a search: its size, the ``best`` rows, the row of the settings
    ``base`` and the rows that change one of them (each setting's effect at the defaults)."""
    names = [*TUNE_EMBEDDING, *TUNE_PROBABILITY, *TUNE_EVENTS]

    def changed(r: dict[str, Any]) -> int:
        return sum(r[k] != getattr(base, k) and not (k == "hop" and base.hop is None and r[k] == 0.25) for k in names)

    return {
        "grid": {**TUNE_EMBEDDING, **TUNE_PROBABILITY, **TUNE_EVENTS},
        "points": len(rows),
        "best": list(rows[:best]),
        "defaults_rank": next((i for i, r in enumerate(rows) if changed(r) == 0), None),
        "defaults_and_one_change": [r for r in rows if changed(r) <= 1],
    }


# --- speed -----------------------------------------------------------------------------------

#: The child process of ``--speed``: load the model, embed the support folder, then time the
#: detection alone; prints one JSON line.
_CHILD = """
import json, sys, time
from pathlib import Path
import torch
from fslcli.checkpoint import load_model
from fslcli.config import DetectConfig
from fslcli.detection import detect, support_from_folder
net = load_model(Path(sys.argv[1])).net
support = support_from_folder(net, Path(sys.argv[2]), windows=DetectConfig().support_windows)
t0, c0 = time.perf_counter(), time.process_time()
res = detect(net, [Path(sys.argv[3])], support)
took, cpu = time.perf_counter() - t0, time.process_time() - c0
print(json.dumps({"seconds": took, "cpu_seconds": cpu, "audio_seconds": res.timelines[0].duration,
                  "events": len(res.events), "hop": res.hop, "threads": torch.get_num_threads()}))
"""


def _tone(rng, seconds: float, sr: int, partials: Sequence[float]) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    f0 = 110.0 * 2 ** (rng.integers(0, 24) / 12)
    x = sum(a * np.sin(2 * np.pi * f0 * (k + 1) * t) for k, a in enumerate(partials))
    env = np.minimum(1.0, t / 0.02) * np.exp(-t * 1.5)
    return (0.3 * x * env / (np.abs(x).max() + 1e-9)).astype(np.float32)


SPEED_CLASSES = {"bright": (1.0, 0.9, 0.8, 0.7, 0.6), "dark": (1.0, 0.3, 0.1)}


def write_long_recording(path: Path, minutes: float, rng, sr: int = SR_OUT) -> Path:
    """A ``minutes``-long mono 16-bit recording at ``sr``: pink noise with a synthetic note about
    every 3 s, written a minute at a time (never whole in memory)."""
    import soundfile as sf

    with sf.SoundFile(path, "w", samplerate=sr, channels=1, subtype="PCM_16") as f:
        for _ in range(int(np.ceil(minutes))):
            block = pink_noise(60 * sr, rng) * 10 ** (NOISE_DBFS / 20)
            for start in rng.uniform(0, 58, size=20):
                partials = SPEED_CLASSES[sorted(SPEED_CLASSES)[int(rng.integers(2))]]
                note = _tone(rng, 1.5, sr, partials)
                s = int(start * sr)
                block[s : s + len(note)] += note
            f.write(np.clip(block, -1, 1))
    return path


def measured_child(cmd: list[str]) -> dict[str, Any]:
    """Run ``cmd`` as a child: its stdout, wall seconds and its own peak RSS (``os.wait4``) in MiB."""
    import subprocess

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            raise SystemExit(f"the detection child failed:\n{err.read()[-2000:]}")
        out.seek(0)
        return {"stdout": out.read(), "wall_s": wall, "peak_rss_mib": usage.ru_maxrss / 1024}


def run_speed(model: Path, work: Path, minutes: Sequence[float], seed: int) -> list[dict[str, Any]]:
    """Times real time and peak RSS of the detection on generated recordings (see the module docstring)."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    support = work / "speed-support"
    for name, partials in SPEED_CLASSES.items():
        (support / name).mkdir(parents=True, exist_ok=True)
        for k in range(5):
            sf.write(support / name / f"{k}.wav", _tone(rng, 1.5, 16_000, partials), 16_000)
    rows = []
    for m in minutes:
        path = write_long_recording(work / f"long-{m:g}min.wav", m, rng)
        run = measured_child([sys.executable, "-c", _CHILD, str(model), str(support), str(path)])
        info = json.loads(run["stdout"].strip().splitlines()[-1])
        rows.append(
            {
                "minutes": m,
                "file_mib": round(path.stat().st_size / 2**20, 1),
                "detect_seconds": round(info["seconds"], 2),
                "x_real_time": round(info["audio_seconds"] / info["seconds"], 1),
                # CPU seconds of all threads: on a busy machine, audio seconds per CPU second times
                # the cores is what an idle machine of those cores would give, at best.
                "cpu_seconds": round(info["cpu_seconds"], 2),
                "audio_per_cpu_second": round(info["audio_seconds"] / info["cpu_seconds"], 1),
                "load_average": list(os.getloadavg()),
                "wall_seconds_with_start_up": round(run["wall_s"], 2),
                "peak_rss_mib": round(run["peak_rss_mib"], 1),
                "hop": info["hop"],
                "torch_threads": info["threads"],
            }
        )
        path.unlink()
    return rows


# --- main ------------------------------------------------------------------------------------


def _fmt(x: float) -> str:
    return "-" if x != x else f"{x:.3f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="model.pt to detect with (its test instruments are used).")
    p.add_argument(
        "--data-home", type=Path, action="append", default=[], help="A rendered TinySOL-shaped set (repeatable)."
    )
    p.add_argument("--recordings", type=int, default=3, help="Recordings per data home (default 3).")
    p.add_argument("--seconds", type=float, default=120.0, help="Length of each recording (default 120).")
    p.add_argument("--ways", type=int, default=3, help="Classes per recording's episode (default 3).")
    p.add_argument("--shots", type=int, default=5, help="Support examples per class (default 5).")
    p.add_argument("--seed", type=int, default=0, help="Seed of the recordings and episodes (default 0).")
    p.add_argument("--noise-dbfs", type=float, default=NOISE_DBFS, help=f"Pink noise level (default {NOISE_DBFS:g}).")
    p.add_argument(
        "--support-draw",
        choices=SUPPORT_DRAWS,
        default="uniform",
        help="How support notes are drawn (default uniform).",
    )
    p.add_argument(
        "--distractors", choices=DISTRACTORS, default="sequence", help="Where distractor notes go (default sequence)."
    )
    p.add_argument(
        "--distractor-share",
        type=float,
        default=0.3,
        help="sequence: share of notes that are distractors (default 0.3).",
    )
    p.add_argument("--tune", action="store_true", help="Search TUNE_PROBABILITY x TUNE_EVENTS on the recordings.")
    p.add_argument(
        "--tune-classes",
        default=",".join(TUNE_CLASSES),
        help="With --tune: the instruments the recordings are made of, none of them a test instrument "
        f"(default {', '.join(TUNE_CLASSES)}: TinySOL training instruments).",
    )
    p.add_argument("--speed", action="store_true", help="Only the speed and memory of long recordings.")
    p.add_argument("--speed-minutes", default="30,180", help="Lengths of the --speed recordings (default 30,180).")
    p.add_argument("--quick", action="store_true", help="Smoke run: 1 recording of 30 s per home; speed: 1 and 3 min.")
    p.add_argument("--out", type=Path, help="Write every figure to this JSON file.")
    p.add_argument("--work-dir", type=Path, help="Keep the generated recordings here (default: a temporary folder).")
    args = p.parse_args()

    sys.path.insert(0, str(Path(__file__).parent))
    import torch

    from fslcli.checkpoint import load_model
    from fslcli.config import DetectConfig

    torch.set_grad_enabled(False)
    if args.quick:
        args.recordings, args.seconds, args.speed_minutes = 1, 30.0, "1,3"
    loaded = load_model(args.model)
    settings = DetectConfig()
    protocol = Protocol(
        seconds=args.seconds, ways=args.ways, shots=args.shots, seed=args.seed, noise_dbfs=args.noise_dbfs,
        draw=args.support_draw, distractors=args.distractors, distractor_share=args.distractor_share,
    )  # fmt: skip
    results: dict[str, Any] = {
        "env": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpus": os.cpu_count(),
            "load_average_at_start": list(os.getloadavg()),
        },
        "model": {
            "path": str(loaded.path),
            "sha256": loaded.sha256,
            "test_classes": list(loaded.config.split.test_classes),
        },
        "settings": asdict(settings),
        "protocol": {**asdict(protocol), "recordings": args.recordings, "quick": args.quick},
    }
    tmp = tempfile.TemporaryDirectory(prefix="fsl-detect-bench-") if args.work_dir is None else None
    work = Path(tmp.name) if tmp is not None else args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    try:
        if args.speed:
            minutes = [float(m) for m in args.speed_minutes.split(",")]
            rows = run_speed(args.model, work, minutes, args.seed)
            results["speed"] = rows
            print(
                f"{'minutes':>8} {'x real time':>12} {'audio s/CPU s':>14} {'peak RSS MiB':>13} {'wall s':>8} "
                f"{'file MiB':>9} {'load':>5}"
            )
            for r in rows:
                print(
                    f"{r['minutes']:>8g} {r['x_real_time']:>12.1f} {r['audio_per_cpu_second']:>14.1f} "
                    f"{r['peak_rss_mib']:>13.1f} {r['wall_seconds_with_start_up']:>8.1f} {r['file_mib']:>9.1f} "
                    f"{r['load_average'][0]:>5.1f}"
                )
            print("target: at least 100x real time on 2 cores; peak RSS flat from 30 min to 3 h")
        else:
            if not args.data_home:
                raise SystemExit("give --data-home DIR (a render made by `fsl download tinysol-gm --data-home DIR`)")
            test_classes = loaded.config.split.test_classes
            if args.tune:
                # Settings are chosen on training instruments, never on the test instruments reported.
                tune_classes = tuple(c.strip() for c in args.tune_classes.split(","))
                if set(tune_classes) & set(test_classes):
                    raise SystemExit(f"--tune-classes must leave out the model's test instruments {test_classes}")
                test_classes = tune_classes
                results["tune_classes"] = list(tune_classes)
            results["homes"] = {}
            table = []
            for home in args.data_home:
                cases = build_cases(home, test_classes, work, n=args.recordings, protocol=protocol)
                if args.tune:
                    rows = tune(loaded.net, cases, settings)
                    results.setdefault("tune", {})[str(home)] = tune_summary(rows, settings)
                    for r in rows[:10]:
                        print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()})
                    continue
                counts, audio_s, took = run_detector(loaded.net, cases, settings)
                base = run_baseline(cases)
                empty = build_cases(home, test_classes, work, n=args.recordings, protocol=protocol, targets=False)
                fa, fa_s, _ = run_detector(loaded.net, empty, settings)
                base_fa = run_baseline(empty)
                row = {
                    "home": str(home),
                    # Share of the left-out test instruments' notes inside the episode's pitch range
                    # (the distractors are drawn from those).
                    "distractors_in_range": [round(c.distractors_in_range, 3) for c in cases],
                    "detector": f_measures(counts),
                    "baseline": f_measures(base),
                    "x_real_time": audio_s / took,
                    "false_alarms_per_minute": sum(c["n_sys"] for c in fa) / (fa_s / 60),
                    "baseline_false_alarms_per_minute": sum(c["n_sys"] for c in base_fa) / (fa_s / 60),
                    "per_recording": {
                        "detector": counts,
                        "baseline": base,
                        "empty_detector": fa,
                        "empty_baseline": base_fa,
                    },
                }
                results["homes"][str(home)] = row
                table.append(row)
            if table:
                head = (
                    f"{'data home':<20} {'refs':>5} | {'F IoU':>6} {'P':>6} {'R':>6} {'onset':>6} {'collar':>6} | "
                    f"{'base IoU':>8} {'onset':>6} {'collar':>6} | {'FA/min':>6} {'base':>6} | {'x RT':>6}"
                )
                print(head)
                print("-" * len(head))
                for r in table:
                    d, b = r["detector"], r["baseline"]
                    print(
                        f"{Path(r['home']).name:<20} {d['n_ref']:>5} | {_fmt(d['f_iou']):>6} {_fmt(d['precision_iou']):>6} "
                        f"{_fmt(d['recall_iou']):>6} {_fmt(d['f_onset']):>6} {_fmt(d['f_collar']):>6} | "
                        f"{_fmt(b['f_iou']):>8} {_fmt(b['f_onset']):>6} {_fmt(b['f_collar']):>6} | "
                        f"{r['false_alarms_per_minute']:>6.2f} {r['baseline_false_alarms_per_minute']:>6.2f} | "
                        f"{r['x_real_time']:>6.1f}"
                    )
                print(
                    "F IoU: IoU >= 0.3 (DCASE few-shot bioacoustics); onset: onset within 200 ms; collar: sed_eval's "
                    "defaults (onset 200 ms, offset max(200 ms, 50%)); FA/min: events in recordings without the classes"
                )
    finally:
        results["env"]["load_average_at_end"] = list(os.getloadavg())
        if args.out:
            args.out.write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
