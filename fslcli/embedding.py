"""The one way audio becomes a vector: windows of a clip or file, embedded, averaged.

A clip's embedding is the mean of its windows' backbone embeddings. Which windows: ``windows``
N takes N excerpts, the first at the clip's onset (the first 256-sample frame within 40 dB of
its loudest, so leading silence is skipped), the others spread evenly to its end; ``"all"``
takes every excerpt across the file (hop of one excerpt), capped at :data:`MAX_WINDOWS` evenly
spaced. Evaluation and the plots embed clips from two windows, at the onset and at the end
(:data:`fslcli.config.EVAL_WINDOWS`); validation during training from one, at the onset;
``embed`` and ``predict`` default to every window, which suits recordings longer than a note.

The result is in the backbone's space: :mod:`fslcli.scoring` (episodes) and ``net.finish``
(single items) take it to the space the model compares in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fslcli.features import DecodeError, WaveCache, decode_audio
from fslcli.model import ProtoNet

#: ``--windows``: a number of windows from the onset, or every window across the file.
Windows = int | str
ALL = "all"
#: At most this many windows per recording (evenly spaced), so an hour-long file stays cheap.
MAX_WINDOWS = 64
#: Onset detection: frames of this many samples; the first frame within this many dB of the
#: loudest frame is where a clip's sound starts, looked for in its first this many seconds.
ONSET_FRAME = 256
ONSET_FLOOR_DB = 40.0
ONSET_SEARCH_SECONDS = 30.0


def parse_windows(value: str | int) -> Windows:
    """``--windows`` as given: a positive whole number, or "all"."""
    if str(value).strip().lower() == ALL:
        return ALL
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        from fslcli.errors import FslError

        raise FslError(f"--windows {value}: give a number of windows (1 or more) or 'all'")
    return n


def onset_sample(wave: np.ndarray, frame: int = ONSET_FRAME, floor_db: float = ONSET_FLOOR_DB) -> int:
    """First sample of the first ``frame``-long block whose RMS is within ``floor_db`` of the
    loudest block's: where the note starts, past any leading silence or noise. 0 for silence."""
    n = len(wave) // frame
    if n == 0:
        return 0
    rms = np.sqrt(np.square(wave[: n * frame].reshape(n, frame), dtype=np.float64).mean(axis=1))
    peak = float(rms.max())
    if peak <= 0.0:
        return 0
    return int(np.argmax(rms >= peak * 10.0 ** (-floor_db / 20.0))) * frame


def window_starts(n_samples: int, excerpt: int, n_windows: int, onset: int = 0) -> list[int]:
    """Start samples of up to ``n_windows`` evenly spaced excerpts covering a clip from ``onset``.

    One window starts at the onset; more spread evenly to the clip's end, no closer than a
    quarter excerpt. An onset too late for a whole excerpt moves back to fit one.
    """
    onset = max(0, min(onset, n_samples - excerpt))
    if n_samples <= excerpt or n_windows <= 1:
        return [onset]
    span = n_samples - excerpt - onset
    n = min(n_windows, 1 + span // max(1, excerpt // 4))
    return sorted({onset + int(round(k * span / (n - 1))) for k in range(n)}) if n > 1 else [onset]


def starts_of(wave: np.ndarray, excerpt: int, windows: Windows, sample_rate: int) -> list[int]:
    """Where a clip's windows start (``wave`` may be a memory-mapped view: only what is needed is read)."""
    n = len(wave)
    if windows == ALL:
        if n <= excerpt:
            return [0]
        starts = list(range(0, n - excerpt + 1, excerpt))
        if starts[-1] != n - excerpt:
            starts.append(n - excerpt)
        if len(starts) > MAX_WINDOWS:
            starts = [starts[int(round(k))] for k in np.linspace(0, len(starts) - 1, MAX_WINDOWS)]
        return starts
    onset = onset_sample(np.asarray(wave[: int(ONSET_SEARCH_SECONDS * sample_rate)])) if n > excerpt else 0
    return window_starts(n, excerpt, int(windows), onset)


def cut(wave: np.ndarray, starts: Sequence[int], excerpt: int) -> np.ndarray:
    """``(len(starts), excerpt)`` float32 excerpts of ``wave``, zero-padded past its end."""
    out = np.zeros((len(starts), excerpt), dtype=np.float32)
    for row, s in enumerate(starts):
        piece = wave[s : s + excerpt]
        out[row, : len(piece)] = piece
    return out


@torch.no_grad()
def embed_windows(
    net: ProtoNet,
    windows: np.ndarray,
    owners: np.ndarray,
    n_items: int,
    *,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Backbone embedding per item ``(n_items, dim)``: the mean over its windows ``(n_windows,
    samples)``, ``owners`` ``(n_windows,)`` giving each window's item."""
    net.eval()
    out = torch.zeros(n_items, net.dim, dtype=torch.float32)
    counts = torch.zeros(n_items, 1, dtype=torch.float32)
    own = torch.as_tensor(owners, dtype=torch.long)
    for s in range(0, len(windows), batch_size):
        batch = torch.as_tensor(np.ascontiguousarray(windows[s : s + batch_size])).to(device)
        emb = net.embed(batch).float().cpu()
        out.index_add_(0, own[s : s + batch_size], emb)
        counts.index_add_(0, own[s : s + batch_size], torch.ones(len(emb), 1))
        if progress is not None:
            progress(min(s + batch_size, len(windows)), len(windows))
    return out / counts.clamp(min=1)


def cached_windows(
    cache: WaveCache, ids: Sequence[int], excerpt: int, windows: Windows = 1
) -> tuple[np.ndarray, np.ndarray]:
    """The windows of cached clips ``ids`` ``(n_windows, excerpt)`` and their owners (positions in ``ids``)."""
    clip_ids, starts, owners = [], [], []
    for pos, i in enumerate(ids):
        for start in starts_of(cache.clip(i), excerpt, windows, cache.sample_rate):
            clip_ids.append(int(i))
            starts.append(start)
            owners.append(pos)
    wins = cache.excerpts(np.asarray(clip_ids, dtype=np.int64), np.asarray(starts, dtype=np.int64), excerpt)
    return wins, np.asarray(owners, dtype=np.int64)


def embed_cached(
    net: ProtoNet,
    cache: WaveCache,
    ids: Sequence[int],
    *,
    windows: Windows = 1,
    device: torch.device | str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Backbone embeddings ``(len(ids), dim)`` of cached clips (see :func:`starts_of`)."""
    wins, owners = cached_windows(cache, ids, net.audio.excerpt_samples, windows)
    return embed_windows(net, wins, owners, len(ids), device=device, progress=progress)


@dataclass(frozen=True)
class Embedded:
    """Backbone embeddings ``(n, dim)`` of the files that decoded, and those skipped with reasons."""

    embeddings: np.ndarray
    paths: list[Path]
    skipped: list[tuple[Path, str]]


def embed_files(
    net: ProtoNet,
    paths: Sequence[Path],
    *,
    windows: Windows = ALL,
    device: torch.device | str = "cpu",
    progress: Callable[[int, int], None] | None = None,
    batch_size: int = 128,
) -> Embedded:
    """Decode each file once and embed it (see :func:`starts_of`), in batches across files."""
    sr, excerpt = net.audio.sample_rate, net.audio.excerpt_samples
    kept: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    chunks: list[torch.Tensor] = []
    pending: list[np.ndarray] = []
    owners: list[int] = []

    def flush() -> None:
        if pending:
            first = owners[0]
            own = np.asarray(owners) - first
            wins = np.concatenate(pending)
            chunks.append(embed_windows(net, wins, own, int(own.max()) + 1, batch_size=batch_size, device=device))
            pending.clear()
            owners.clear()

    for done, path in enumerate(paths, start=1):
        try:
            audio = decode_audio(path, sr)
        except DecodeError as exc:
            skipped.append((Path(path), str(exc)))
        except OSError as exc:
            skipped.append((Path(path), f"cannot read ({exc.strerror or exc})"))
        else:
            wins = cut(audio, starts_of(audio, excerpt, windows, sr), excerpt)
            pending.append(wins)
            owners.extend([len(kept)] * len(wins))
            kept.append(Path(path))
            if len(owners) >= 4 * batch_size:
                flush()
        if progress is not None:
            progress(done, len(paths))
    flush()
    emb = torch.cat(chunks).numpy() if chunks else np.zeros((0, net.dim), dtype=np.float32)
    return Embedded(emb.astype(np.float32), kept, skipped)
