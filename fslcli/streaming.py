"""Long recordings in bounded memory: decode in blocks, resample on the fly, embed every window.

A window is the model's excerpt (``AudioConfig.excerpt_samples``, 1 s by default) and one
starts every ``hop`` samples. :class:`WindowEmbedder` cuts each window out and embeds it on its
own with :func:`fslcli.embedding.embed_windows`, exactly as ``eval`` and ``predict`` embed an
excerpt; memory holds a few seconds of audio and one batch of windows, whatever the recording's
length.

(An earlier version ran the convolutional body once over long spans and pooled each window's
columns, about twice as fast; near a window's edges that sees the neighbouring audio where the
window alone sees padding, and on the detection benchmark it classified the windows at note
onsets right 0.65 of the time against 0.82 for each window on its own.)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fslcli.embedding import embed_windows
from fslcli.features import DecodeError
from fslcli.model import ProtoNet

#: Audio decoded per read, in seconds of the file's own rate.
BLOCK_SECONDS = 8.0
#: Windows embedded per forward pass (larger batches run faster on CPUs, up to a point).
WINDOW_BATCH = 256


# --- decoding ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says: its native rate, length in frames and channels."""

    path: Path
    sample_rate: int
    frames: int
    channels: int

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def audio_info(path: Path) -> AudioInfo:
    """The header of a file libsndfile can stream (WAV, FLAC, OGG, MP3, ...); raises
    :class:`~fslcli.features.DecodeError` with the reason otherwise."""
    import soundfile as sf

    from fslcli.features import _wav_shortfall

    try:
        info = sf.info(str(path))
    except Exception as exc:
        detail = str(exc).replace(f"Error opening {str(path)!r}: ", "").strip()[:120]
        raise DecodeError(f"not readable as an audio stream ({detail or type(exc).__name__})") from None
    if info.frames <= 0:
        raise DecodeError("no audio samples (empty file)")
    short = _wav_shortfall(Path(path))
    if short is not None:
        raise DecodeError(f"truncated: its header promises {short[0]} bytes of audio, the file holds {short[1]}")
    return AudioInfo(Path(path), int(info.samplerate), int(info.frames), int(info.channels))


def read_blocks(
    path: Path, sample_rate: int, *, start: float = 0.0, stop: float | None = None, block_seconds: float = BLOCK_SECONDS
) -> Iterator[np.ndarray]:
    """Mono float32 blocks ``(n,)`` at ``sample_rate`` of ``path`` from ``start`` to ``stop``
    seconds (the end when None), decoded ``block_seconds`` at a time with
    ``soundfile.SoundFile.read`` and resampled by a ``soxr.ResampleStream``, so memory does not
    grow with the file. Non-finite samples become 0. Raises
    :class:`~fslcli.features.DecodeError` when the file cannot be read to the end."""
    import soundfile as sf
    import soxr

    try:
        with sf.SoundFile(str(path)) as f:
            sr = int(f.samplerate)
            first = int(round(start * sr))
            last = f.frames if stop is None else min(f.frames, int(round(stop * sr)))
            if first > 0:
                f.seek(first)
            stream = None if sr == sample_rate else soxr.ResampleStream(sr, sample_rate, 1, dtype="float32")
            block = max(1, int(block_seconds * sr))
            left = max(0, last - first)
            while True:
                data = f.read(min(block, left), dtype="float32", always_2d=True) if left > 0 else np.zeros((0, 1))
                left -= len(data)
                done = left <= 0 or len(data) == 0
                mono = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1)
                mono = np.nan_to_num(mono, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32, copy=False)
                if stream is not None:
                    mono = stream.resample_chunk(mono, last=done)
                if len(mono):
                    yield mono
                if done:
                    return
    except DecodeError:
        raise
    except Exception as exc:  # libsndfile errors mid-file (a damaged frame, a vanished file)
        raise DecodeError(f"could not be read to the end ({str(exc).strip()[:120] or type(exc).__name__})") from None


def read_segment(path: Path, sample_rate: int, start: float, stop: float) -> np.ndarray:
    """``(n,)`` mono float32 samples of ``path`` from ``start`` to ``stop`` seconds at ``sample_rate``."""
    parts = list(read_blocks(path, sample_rate, start=start, stop=stop))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def n_windows(n_samples: int, excerpt: int, hop: int) -> int:
    """How many whole windows of ``excerpt`` samples, one every ``hop``, fit in ``n_samples``."""
    return 0 if n_samples < excerpt else 1 + (n_samples - excerpt) // hop


def release_memory() -> None:
    """Hand the heap's freed memory back to the system (glibc's ``malloc_trim``; a no-op
    elsewhere). Spans of feature maps of varying sizes otherwise leave the heap fragmented, and
    resident memory would creep up with the recording's length (about 1 MB a minute of audio)."""
    global _TRIM
    if _TRIM is None:
        try:
            import ctypes

            _TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _TRIM = False
    if _TRIM:
        _TRIM(0)


_TRIM = None


# --- windows -------------------------------------------------------------------------------


def _device_of(net: ProtoNet) -> torch.device:
    return next(net.parameters()).device


class WindowEmbedder:
    """Every window of ``excerpt`` samples, one every ``hop`` samples, cut out and embedded on its
    own (:func:`fslcli.embedding.embed_windows`): feed a recording's samples in order;
    :meth:`feed` and :meth:`close` return lists of ``(n, dim)`` float32 CPU backbone embeddings,
    in order."""

    def __init__(self, net: ProtoNet, *, hop: int, batch: int = WINDOW_BATCH) -> None:
        self.net = net
        self.hop = hop
        self.excerpt = net.audio.excerpt_samples
        self.batch = batch
        self._device = _device_of(net)
        self._buf = np.zeros(0, dtype=np.float32)
        self._buf_start = 0
        self._next = 0  # next window index

    def feed(self, samples: np.ndarray) -> list[torch.Tensor]:
        self._buf = np.concatenate([self._buf, np.asarray(samples, dtype=np.float32)])
        return self._drain(final=False)

    def close(self) -> list[torch.Tensor]:
        return self._drain(final=True)

    def _drain(self, final: bool) -> list[torch.Tensor]:
        out = []
        end = self._buf_start + len(self._buf)
        while True:
            ready = n_windows(end, self.excerpt, self.hop) - self._next
            if ready <= 0 or (ready < self.batch and not final):
                break
            ks = range(self._next, self._next + min(ready, self.batch))
            wins = np.stack([self._buf[k * self.hop - self._buf_start :][: self.excerpt] for k in ks])
            out.append(
                embed_windows(
                    self.net, wins, np.arange(len(wins)), len(wins), batch_size=len(wins), device=self._device
                )
            )
            self._next += len(ks)
            drop = self._next * self.hop - self._buf_start
            self._buf = self._buf[drop:]
            self._buf_start += drop
        return out


# --- a spectrogram for the timeline ----------------------------------------------------------


class CoarseSpectrogram:
    """The log-mel of a whole recording averaged down to at most ``columns`` columns: fed blocks
    of samples in order, holding ``(n_mels, columns)`` whatever the recording's length."""

    def __init__(self, net: ProtoNet, expected_samples: int, columns: int = 1500) -> None:
        self.net = net
        self.hop = net.audio.hop_length
        frames = max(1, expected_samples // self.hop)
        self.per_column = max(1, -(-frames // columns))
        self.sums = np.zeros((net.audio.n_mels, columns), dtype=np.float64)
        self.counts = np.zeros(columns, dtype=np.int64)
        self._buf = np.zeros(0, dtype=np.float32)
        self._frame = 0
        self.n_fft = net.audio.n_fft

    def feed(self, samples: np.ndarray) -> None:
        self._buf = np.concatenate([self._buf, samples])
        n = (len(self._buf) - self.n_fft) // self.hop + 1 if len(self._buf) >= self.n_fft else 0
        if n <= 0:
            return
        with torch.no_grad():
            seg = torch.from_numpy(self._buf[: (n - 1) * self.hop + self.n_fft].copy())
            mel = self.net.logmel(seg[None].to(_device_of(self.net)))[0].cpu().numpy()
        mel = mel[:, self.n_fft // 2 // self.hop :][:, :n]  # frames clear of the reflection
        cols = np.minimum((self._frame + np.arange(mel.shape[1])) // self.per_column, self.sums.shape[1] - 1)
        np.add.at(self.sums.T, cols, mel.T)
        np.add.at(self.counts, cols, 1)
        self._frame += mel.shape[1]
        self._buf = self._buf[mel.shape[1] * self.hop :]

    def result(self) -> tuple[np.ndarray, float]:
        """``(n_mels, used_columns)`` mean log-mel and the seconds per column."""
        used = int(np.count_nonzero(self.counts))
        spec = (self.sums[:, :used] / np.maximum(self.counts[:used], 1)).astype(np.float32)
        return spec, self.per_column * self.hop / self.net.audio.sample_rate


class FrameEnergy:
    """Frame energies in dB (mean square of each ``frame``-sample frame, from the samples) of a
    recording fed in order: one float32 per frame (16 ms at 16 kHz, 256-sample frames)."""

    def __init__(self, frame: int) -> None:
        self.frame = frame
        self._parts: list[np.ndarray] = []
        self._tail = np.zeros(0, dtype=np.float32)

    def feed(self, samples: np.ndarray) -> None:
        x = np.concatenate([self._tail, samples])
        n = len(x) // self.frame
        if n:
            power = np.square(x[: n * self.frame].reshape(n, self.frame), dtype=np.float64).mean(axis=1)
            self._parts.append((10.0 * np.log10(power + 1e-10)).astype(np.float32))
        self._tail = x[n * self.frame :]

    def result(self) -> np.ndarray:
        return np.concatenate(self._parts) if self._parts else np.zeros(0, dtype=np.float32)
