"""Few-shot sound event detection: where in a long recording do the support classes sound?

Every window of a recording (the model's excerpt, one every ``hop`` seconds) is embedded on its
own, as ``eval`` and ``predict`` embed an excerpt (:mod:`fslcli.streaming`), and compared with
the class prototypes as every command compares an episode (:func:`fslcli.scoring.compare`: the
comparison space fitted to the support set, class means, negative squared distances; Snell et
al., 2017). Each support example is embedded as ``fsl predict`` embeds a file
(:func:`fslcli.embedding.embed_files`), from ``support_windows`` of its windows (by default the
one at its onset, as ``eval`` embeds a clip).

A recording's windows all lie far nearer to one another than to examples recorded elsewhere, so
raw distances say little on their own. A window's evidence for a class is its logit for the
class standardised by the mean and standard deviation of that logit over the recording's
background: the windows least like every class (the lower ``background_share`` by their highest
class logit; annotated examples left out), so evidence is measured in units of the recording's
own spread. Class probabilities are the softmax over the classes' evidence and a constant
``margin`` for "none of them", over a ``temperature`` (:func:`window_probabilities`).
Probabilities are median-filtered over ``smooth`` seconds; runs of windows at or above
``threshold`` become events (:func:`merge_events`), whose onsets move to the strongest rise in
energy nearby (:func:`snap_onsets`); events shorter than ``min_duration`` are dropped.

One pass over the audio: memory holds each window's class logits and each 16 ms frame's energy,
a few bytes per window, whatever the recording's length. Settings:
:class:`fslcli.config.DetectConfig`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fslcli.config import DetectConfig
from fslcli.embedding import Windows, cut, embed_files, embed_windows, starts_of
from fslcli.errors import DataError
from fslcli.features import DecodeError
from fslcli.model import ProtoNet
from fslcli.scoring import compare
from fslcli.streaming import (
    CoarseSpectrogram,
    FrameEnergy,
    WindowEmbedder,
    audio_info,
    read_blocks,
    read_segment,
    release_memory,
)

#: Windows compared with the support set at once (each comparison factorises the support
#: set's covariance afresh, the same every time).
FINISH_ROWS = 4096

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Event:
    """One detected (or annotated) event: ``onset`` and ``offset`` in seconds from the start of
    ``path``, its class and a score (the mean smoothed probability of its windows)."""

    path: Path
    onset: float
    offset: float
    label: str
    score: float


@dataclass(frozen=True)
class Timeline:
    """One recording's scores: ``probabilities`` ``(n_windows, n_classes)`` (smoothed), window
    ``k`` covering ``k * hop`` to ``k * hop + window`` seconds; and, when asked for, a coarse
    log-mel ``spectrogram`` ``(n_mels, columns)``, one column every ``spectrogram_step`` seconds."""

    path: Path
    duration: float
    hop: float
    window: float
    probabilities: np.ndarray
    spectrogram: np.ndarray | None = None
    spectrogram_step: float = 0.0
    #: Frame energies in dB ``(n_frames,)``, one every ``energy_step`` seconds (onsets snap to them).
    energy: np.ndarray | None = None
    energy_step: float = 0.0


@dataclass(frozen=True)
class DetectResult:
    """Events of every recording (by recording, then onset), the timelines, and the files skipped."""

    classes: list[str]
    events: list[Event]
    timelines: list[Timeline]
    skipped: list[tuple[Path, str]]
    settings: DetectConfig
    #: Seconds between windows, as run.
    hop: float
    #: Support examples per class.
    shots: dict[str, int] = field(default_factory=dict)


# --- pure maths ----------------------------------------------------------------------------


def median_smooth(scores: np.ndarray, size: int, *, rows: int = 1 << 15) -> np.ndarray:
    """Running median over ``size`` windows (made odd) of each column of ``(n, C)`` scores; the
    ends repeat the edge values. Computed ``rows`` windows at a time, so the working memory is
    ``rows * C * size`` values whatever ``n``."""
    size = max(1, int(size) | 1)
    if size == 1 or len(scores) == 0:
        return scores.copy()
    half = size // 2
    padded = np.pad(scores, ((half, half), (0, 0)), mode="edge")
    out = np.empty_like(scores)
    for start in range(0, len(scores), rows):
        part = padded[start : start + rows + size - 1]
        out[start : start + rows] = np.median(np.lib.stride_tricks.sliding_window_view(part, size, axis=0), axis=-1)
    return out


def merge_events(
    probabilities: np.ndarray,
    classes: Sequence[str],
    *,
    path: Path,
    hop: float,
    window: float,
    duration: float,
    threshold: float,
    min_duration: float,
) -> list[Event]:
    """Runs of windows whose probability ``(n, C)`` is at or above ``threshold`` -> events.

    Window ``k`` covers ``k * hop`` to ``k * hop + window`` seconds and speaks for the ``hop``
    seconds at its centre, so a run of windows ``a .. b`` spans from ``a``'s centre minus half a
    hop to ``b``'s centre plus half a hop (from 0 when ``a`` is the first window, to
    ``duration`` when ``b`` is the last), clipped to the recording. Events shorter than
    ``min_duration`` are dropped. Sorted by onset, then label.
    """
    out = []
    n = len(probabilities)
    for c, label in enumerate(classes):
        active = probabilities[:, c] >= threshold
        edges = np.flatnonzero(np.diff(np.concatenate([[0], active.astype(np.int8), [0]])))
        for a, b in zip(edges[::2], edges[1::2] - 1, strict=True):
            onset = 0.0 if a == 0 else a * hop + (window - hop) / 2
            offset = duration if b == n - 1 else b * hop + (window + hop) / 2
            onset, offset = max(0.0, onset), min(duration, offset)
            if offset - onset < min_duration or offset <= onset:
                continue
            score = float(probabilities[a : b + 1, c].mean())
            out.append(Event(Path(path), round(onset, 3), round(offset, 3), label, round(score, 4)))
    return sorted(out, key=lambda e: (e.onset, e.label))


#: Frames over which an onset's rise in energy is measured, and the least rise that counts (dB).
RISE_FRAMES = 4
MIN_RISE_DB = 6.0


def snap_onsets(
    events: Sequence[Event], energy_db: np.ndarray, frame: float, radius: float, min_duration: float = 0.0
) -> list[Event]:
    """Each event's onset moved to the frame within ``radius`` seconds whose energy rises most
    over the ``RISE_FRAMES`` frames before it, when that rise is at least ``MIN_RISE_DB``
    (``energy_db`` ``(n_frames,)``, one frame every ``frame`` seconds). An onset never moves into
    the previous event of its class; events left shorter than ``min_duration`` are dropped.
    Sorted by onset, then label."""
    if radius <= 0 or len(energy_db) <= RISE_FRAMES:
        return list(events)
    low = np.lib.stride_tricks.sliding_window_view(energy_db, RISE_FRAMES).min(axis=1)  # low[j]: min of j..j+R-1
    rise = np.full(len(energy_db), -np.inf, dtype=np.float32)
    rise[RISE_FRAMES:] = energy_db[RISE_FRAMES:] - low[: len(energy_db) - RISE_FRAMES]
    out = []
    last_offset: dict[str, float] = {}
    for e in sorted(events, key=lambda e: (e.label, e.onset)):
        floor = last_offset.get(e.label, 0.0)
        a = max(RISE_FRAMES, int(np.ceil(max(e.onset - radius, floor) / frame)))
        b = min(len(rise), int(min(e.onset + radius, e.offset) / frame) + 1)
        if b > a:
            j = a + int(np.argmax(rise[a:b]))
            if rise[j] >= MIN_RISE_DB:
                e = Event(e.path, round(j * frame, 3), e.offset, e.label, e.score)
        last_offset[e.label] = e.offset
        if e.offset - e.onset >= min_duration:
            out.append(e)
    return sorted(out, key=lambda e: (e.onset, e.label))


# --- support -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExampleEvent:
    """An annotated example inside a recording: ``start`` to ``end`` seconds of ``path``,
    from ``line`` of the examples file."""

    path: Path
    start: float
    end: float
    label: str
    line: int


@dataclass(frozen=True)
class Support:
    """Backbone embeddings ``(n, dim)`` of the support examples, their class indices ``(n,)``,
    the class names, and per recording the annotated spans kept out of its background."""

    embeddings: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    skipped: list[tuple[Path, str]]
    annotated: dict[Path, list[tuple[float, float]]] = field(default_factory=dict)


def support_from_folder(
    net: ProtoNet,
    folder: Path,
    *,
    windows: Windows = "all",
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
) -> Support:
    """Support examples from a folder with one subfolder of recordings per class, embedded as
    ``fsl predict`` embeds them (:func:`fslcli.embedding.embed_files` with ``windows``)."""
    from fslcli.inference import support_set

    files, labels = support_set(folder, min_classes=1)
    emb = embed_files(
        net,
        files,
        windows=windows,
        device=device,
        progress=(lambda d, t: progress("Embedding support examples", d, t)) if progress else None,
    )
    label_of = dict(zip(files, labels, strict=True))
    kept = [label_of[p] for p in emb.paths]
    named = sorted(set(labels))
    missing = [c for c in named if c not in kept]
    if missing:
        why = {c: [r for p, r in emb.skipped if label_of[p] == c] for c in missing}
        raise DataError(
            f"--support {folder}: class {missing[0]!r} has no usable example ({why[missing[0]][0]}); "
            f"add a readable recording to {Path(folder) / missing[0]} or remove that folder"
        )
    classes = sorted(set(kept))
    idx = torch.as_tensor([classes.index(c) for c in kept])
    return Support(torch.from_numpy(emb.embeddings), idx, classes, list(emb.skipped))


def support_from_examples(
    net: ProtoNet,
    examples: Sequence[ExampleEvent],
    *,
    windows: Windows = "all",
    device: torch.device | str = "cpu",
) -> Support:
    """Support examples cut from annotated spans of the recordings themselves, each embedded as
    a support file would be (``windows`` of its windows, :func:`fslcli.embedding.starts_of`; a
    span shorter than a window is zero-padded)."""
    sr, excerpt = net.audio.sample_rate, net.audio.excerpt_samples
    wins, owners = [], []
    for k, ex in enumerate(examples):
        try:
            seg = read_segment(ex.path, sr, ex.start, ex.end)
        except DecodeError as exc:
            raise DataError(f"--examples: line {ex.line}: {ex.path} {exc}; fix or remove that row") from None
        w = cut(seg, starts_of(seg, excerpt, windows, sr), excerpt)
        wins.append(w)
        owners += [k] * len(w)
    emb = embed_windows(net, np.concatenate(wins), np.asarray(owners), len(examples), device=device)
    classes = sorted({ex.label for ex in examples})
    idx = torch.as_tensor([classes.index(ex.label) for ex in examples])
    annotated: dict[Path, list[tuple[float, float]]] = {}
    for ex in examples:
        annotated.setdefault(ex.path.resolve(), []).append((ex.start, ex.end))
    return Support(emb, idx, classes, [], annotated)


# --- one recording -------------------------------------------------------------------------


def hop_samples(net: ProtoNet, hop: float | None) -> int:
    """The hop in samples for ``hop`` seconds; None: a quarter of the model's excerpt."""
    seconds = hop if hop is not None else DetectConfig.DEFAULT_HOP_SHARE * net.audio.excerpt_seconds
    return max(1, int(round(seconds * net.audio.sample_rate)))


@dataclass(frozen=True)
class Scan:
    """One recording's pass: each window's class logits ``(n_windows, C)`` (window ``k`` covering
    samples ``k * hop`` to ``k * hop + window``), which windows overlap an annotated example
    ``(n_windows,)``, frame energies in dB ``(n_frames,)`` (one every ``energy_frame`` samples, for
    onsets) and, when asked for, the coarse spectrogram."""

    path: Path
    duration: float
    hop: int
    window: int
    sample_rate: int
    logits: np.ndarray
    annotated: np.ndarray
    energy: np.ndarray
    energy_frame: int
    spectrogram: CoarseSpectrogram | None = None


@torch.no_grad()
def scan_recording(
    net: ProtoNet,
    path: Path,
    support: Support,
    *,
    hop: int,
    progress: Callable[[int], None] | None = None,
    spectrogram: bool = False,
) -> Scan:
    """Stream ``path``, embed every window (one every ``hop`` samples) and compare it with the
    support set (:func:`fslcli.scoring.compare`). ``progress(samples)`` is called as audio is
    read. Raises :class:`~fslcli.features.DecodeError` when the file cannot be read or holds no
    whole window."""
    sr, excerpt = net.audio.sample_rate, net.audio.excerpt_samples
    info = audio_info(path)
    if info.seconds * sr < excerpt:
        raise DecodeError(f"shorter than one window ({info.seconds:.2f} s; the model's windows are {excerpt / sr:g} s)")
    embedder = WindowEmbedder(net, hop=hop)
    spec = CoarseSpectrogram(net, int(info.seconds * sr)) if spectrogram else None
    energy = FrameEnergy(net.audio.hop_length)
    logits: list[np.ndarray] = []
    pending: list[torch.Tensor] = []

    def flush(final: bool) -> None:
        if pending and (final or sum(map(len, pending)) >= FINISH_ROWS):
            emb = torch.cat(pending)
            pending.clear()
            logits.append(compare(net, support.embeddings, support.labels, emb, len(support.classes)).logits.numpy())
            release_memory()

    n_read = 0
    for block in read_blocks(path, sr):
        if spec is not None:
            spec.feed(block)
        energy.feed(block)
        pending += embedder.feed(block)
        flush(final=False)
        n_read += len(block)
        if progress is not None:
            progress(n_read)
    pending += embedder.close()
    flush(final=True)
    if not logits:
        raise DecodeError(f"shorter than one window ({n_read / sr:.2f} s decoded)")
    lg = np.concatenate(logits).astype(np.float32)
    starts = np.arange(len(lg)) * hop / sr
    annotated = np.zeros(len(lg), dtype=bool)
    for a, b in support.annotated.get(Path(path).resolve(), []):
        annotated |= (starts < b) & (a < starts + excerpt / sr)
    return Scan(
        path=Path(path),
        duration=n_read / sr,
        hop=hop,
        window=excerpt,
        sample_rate=sr,
        logits=lg,
        annotated=annotated,
        energy=energy.result(),
        energy_frame=net.audio.hop_length,
        spectrogram=spec,
    )


def window_probabilities(scan: Scan, settings: DetectConfig) -> np.ndarray:
    """Each window's probability per class ``(n_windows, C)`` (unsmoothed).

    A window's evidence for class c is its logit for c standardised by the mean and standard
    deviation of that logit over the recording's background windows: those outside annotated
    examples whose highest class logit is in the lower ``background_share``. The probabilities
    are the softmax over the classes' evidence and a constant ``margin`` ("none of them"),
    divided by ``temperature``.
    """
    lg = scan.logits
    free = ~scan.annotated
    if free.sum() < 2:  # nothing left to measure against (every window annotated): all of them
        free = np.ones(len(lg), dtype=bool)
    best = lg.max(axis=1)
    background = lg[free & (best <= np.quantile(best[free], settings.background_share))]
    if len(background) < 2:
        background = lg[free]
    mean = background.mean(axis=0)
    std = np.maximum(background.std(axis=0, ddof=1), 1e-6) if len(background) > 1 else np.ones_like(mean)
    z = torch.from_numpy((lg - mean) / std)
    z = torch.cat([z, torch.full((len(z), 1), settings.margin, dtype=z.dtype)], dim=1)
    return torch.softmax(z / settings.temperature, dim=1)[:, :-1].numpy()


def score_recording(
    net: ProtoNet,
    path: Path,
    support: Support,
    settings: DetectConfig,
    *,
    hop: int,
    progress: Callable[[int], None] | None = None,
    spectrogram: bool = False,
) -> Timeline:
    """One recording's :class:`Timeline`."""
    scan = scan_recording(net, path, support, hop=hop, progress=progress, spectrogram=spectrogram)
    return scan_timeline(scan, window_probabilities(scan, settings), settings)


def scan_timeline(scan: Scan, probabilities: np.ndarray, settings: DetectConfig) -> Timeline:
    """A scanned recording's :class:`Timeline`: its window probabilities ``(n_windows, C)``
    median-filtered over ``smooth`` seconds, with its energy and spectrogram."""
    hop_s = scan.hop / scan.sample_rate
    smoothed = (
        median_smooth(probabilities, int(round(settings.smooth / hop_s))) if settings.smooth > 0 else probabilities
    )
    spec, step = scan.spectrogram.result() if scan.spectrogram is not None else (None, 0.0)
    return Timeline(
        scan.path,
        scan.duration,
        hop_s,
        scan.window / scan.sample_rate,
        smoothed,
        spec,
        step,
        scan.energy,
        scan.energy_frame / scan.sample_rate,
    )


def timeline_events(timeline: Timeline, classes: Sequence[str], settings: DetectConfig) -> list[Event]:
    """A timeline's events: :func:`merge_events`, then :func:`snap_onsets`."""
    events = merge_events(
        timeline.probabilities,
        classes,
        path=timeline.path,
        hop=timeline.hop,
        window=timeline.window,
        duration=timeline.duration,
        threshold=settings.threshold,
        min_duration=settings.min_duration,
    )
    if timeline.energy is None:
        return events
    return snap_onsets(events, timeline.energy, timeline.energy_step, settings.onset_snap, settings.min_duration)


# --- many recordings -----------------------------------------------------------------------


def detect(
    net: ProtoNet,
    recordings: Sequence[Path],
    support: Support,
    *,
    settings: DetectConfig = DetectConfig(),
    progress: Progress | None = None,
    spectrogram: bool = False,
) -> DetectResult:
    """Detect the support classes' events in each recording (see the module docstring).

    Unreadable recordings, and those shorter than one window, are skipped with the reason.
    """
    excerpt_s = net.audio.excerpt_seconds
    if why := settings.problem(excerpt_s):
        raise DataError(why)
    net.eval()
    sr = net.audio.sample_rate
    hop = hop_samples(net, settings.hop)
    skipped = list(support.skipped)
    sizes = {}
    for p in recordings:
        try:
            sizes[Path(p)] = audio_info(Path(p)).seconds
        except DecodeError as exc:
            skipped.append((Path(p), str(exc)))
    total = int(math.ceil(sum(sizes.values())))
    done = 0.0
    events: list[Event] = []
    timelines: list[Timeline] = []
    for path, seconds in sizes.items():

        def tick(samples: int, base: float = done) -> None:
            if progress is not None:
                progress("Detecting", int(base + samples / sr), total)

        try:
            tl = score_recording(
                net,
                path,
                support,
                settings,
                hop=hop,
                progress=tick,
                spectrogram=spectrogram,
            )
        except DecodeError as exc:
            skipped.append((path, str(exc)))
            done += seconds
            continue
        done += seconds
        timelines.append(tl)
        events += timeline_events(tl, support.classes, settings)
    if progress is not None:
        progress("Detecting", total, total)
    if not timelines:
        raise DataError(
            f"no recording could be scanned ({len(skipped)} skipped: {skipped[-1][0]}: {skipped[-1][1]}); "
            f"give readable recordings of at least {excerpt_s:g} s"
        )
    shots = {c: int((support.labels == k).sum()) for k, c in enumerate(support.classes)}
    return DetectResult(support.classes, events, timelines, skipped, settings, hop / sr, shots)
