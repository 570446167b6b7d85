"""Long recordings in bounded memory: decode in blocks, resample on the fly, embed every window.

A window is the model's excerpt (``AudioConfig.excerpt_samples``, 1 s by default) and one
starts every ``hop`` samples. Memory holds a few seconds of audio and one span's feature maps,
whatever the recording's length.

Two embedders give a recording's window embeddings ``(n_windows, dim)`` in the backbone's space
(what :func:`fslcli.embedding.embed_windows` gives for each window alone), chunk by chunk:

* :class:`SpanEmbedder`, the fast path (the ``conv`` backbone). The log-mel and the
  conv body run once over spans of about a minute, with margins so that spans join seamlessly;
  the last block's 2x2 max-pool is taken at both time phases, which gives a column every half
  of the body's time stride (8 frames: 0.128 s with the default 256-sample STFT hop, at almost
  no extra cost), and each window pools the columns that its own forward pass would have. It
  equals the per-window forward pass except near each window's edges, where the window alone
  sees STFT reflection and zero padding and the span sees the neighbouring audio
  (``tests/test_detection.py`` bounds the difference).
* :class:`WindowEmbedder`, the fallback: every window cut out and embedded on its own
  (:func:`fslcli.embedding.embed_windows`), for models whose output depends on the whole input
  (the ``tutorial`` backbone's GroupNorm) and for hops the span grid does not have.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fslcli.embedding import embed_windows
from fslcli.features import DecodeError
from fslcli.model import BNBlock, ProtoNet

#: Audio decoded per read, in seconds of the file's own rate.
BLOCK_SECONDS = 8.0
#: Frames of one span of the fast path (about a minute at a 256-sample hop; a multiple of 16).
SPAN_FRAMES = 3840
#: Windows embedded per forward pass on the fallback path.
WINDOW_BATCH = 64


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


# --- the fast path -------------------------------------------------------------------------


@dataclass(frozen=True)
class SpanPlan:
    """How the fast path reads a model: ``stride`` frames per column of the body's output,
    ``width`` output columns per window (its own forward pass), ``lead`` STFT frames of reflection
    padding at either end (``n_fft // 2`` over the hop)."""

    stride: int
    width: int
    lead: int

    @property
    def hop_frames(self) -> int:
        """Frames between consecutive windows: half the stride (the last pool at two phases)."""
        return self.stride // 2


def fast_path_problem(net: ProtoNet) -> str | None:
    """Why ``net``'s windows cannot be embedded over spans (:class:`SpanEmbedder`), or None.

    The span's arithmetic equals the window's own only when every layer but the pools is local
    in time (the band norm, in eval mode, is a fixed per-band affine map): not with GroupNorm
    (the ``tutorial`` backbone normalises over the whole input).
    """
    if net.config.backbone != "conv":
        return f"the {net.config.backbone!r} backbone normalises over its whole input"
    if (net.audio.n_fft // 2) % net.audio.hop_length:
        return f"n_fft // 2 ({net.audio.n_fft // 2}) is not a multiple of the STFT hop ({net.audio.hop_length})"
    if not all(isinstance(block, BNBlock) for block in net.body):
        return "the body is not made of pooling conv blocks"
    return None


#: Plans already worked out, by model (working one out runs the body once).
_PLANS: weakref.WeakKeyDictionary[ProtoNet, SpanPlan] = weakref.WeakKeyDictionary()


def span_plan(net: ProtoNet) -> SpanPlan:
    """The fast path's geometry for ``net`` (see :func:`fast_path_problem` first)."""
    if net in _PLANS:
        return _PLANS[net]
    stride = 2 ** len(net.body)
    excerpt = net.audio.excerpt_samples
    with torch.no_grad():
        x = net.normalize(net.logmel(torch.zeros(1, excerpt, device=_device_of(net))))
        width = int(net.body(x.contiguous(memory_format=torch.channels_last)).shape[-1])
    plan = _PLANS[net] = SpanPlan(stride=stride, width=width, lead=(net.audio.n_fft // 2) // net.audio.hop_length)
    return plan


def _device_of(net: ProtoNet) -> torch.device:
    return next(net.parameters()).device


class _FusedBlock(nn.Module):
    """A :class:`~fslcli.model.BNBlock` in eval mode with its BatchNorm folded into the
    convolution (the same function, one pass over the map fewer): :meth:`before_pool` gives the
    map its 2x2 max-pool takes."""

    def __init__(self, block: BNBlock) -> None:
        super().__init__()
        from torch.nn.utils.fusion import fuse_conv_bn_eval

        conv, norm, pool, _ = block.net
        self.conv = fuse_conv_bn_eval(conv.eval(), norm.eval())
        self.ceil_mode = bool(pool.ceil_mode)
        self.to(memory_format=torch.channels_last)

    def before_pool(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Pool before ReLU, as the blocks do (ReLU is monotone, so the two commute).
        return F.relu(F.max_pool2d(self.conv(x), 2, ceil_mode=self.ceil_mode))


def _window_pool(z: torch.Tensor, width: int) -> torch.Tensor:
    """Mean and max of each window's columns: ``z`` ``(1, C, bands, T)`` after the two-phase
    pool, window ``t`` taking columns ``t, t + 2, ..., t + 2 (width - 1)`` ->
    ``(T - 2 width + 2, 2 * C)``, as :meth:`~fslcli.model.ProtoNet.encode` pools one window."""
    span = 2 * width - 1
    mean = z[0].mean(dim=1).unfold(-1, span, 1)[..., ::2].mean(-1).T  # (n, C)
    high = z[0].amax(dim=1).unfold(-1, span, 1)[..., ::2].amax(-1).T
    return torch.cat([mean, high], dim=1)


class SpanEmbedder:
    """The fast path: feed a recording's samples in order, collect window embeddings.

    Window ``k`` starts at frame ``k * plan.hop_frames`` (sample ``k * hop``, ``hop =
    hop_frames * hop_length``); ``every`` keeps every ``every``-th window (a coarser hop).
    :meth:`feed` and :meth:`close` return lists of ``(n, dim)`` float32 CPU tensors, in order.
    """

    def __init__(self, net: ProtoNet, *, every: int = 1, span_frames: int = SPAN_FRAMES) -> None:
        if why := fast_path_problem(net):
            raise ValueError(f"no fast path for this model: {why}")
        self.net = net
        self.plan = span_plan(net)
        with torch.no_grad():
            self._body = [_FusedBlock(block) for block in net.body]
        self.every = every
        self.hop_length = net.audio.hop_length
        self.excerpt = net.audio.excerpt_samples
        stride = self.plan.stride
        self.span = max(stride, span_frames // stride * stride)
        # Context on either side of a span, in frames (multiples of the stride, so every pooling
        # grid stays aligned): wider than the body's receptive field, and on the right also the
        # columns of the span's last windows.
        self.left = 4 * stride
        self.right = 4 * stride + stride * self.plan.width
        self._buf = np.zeros(0, dtype=np.float32)
        self._buf_start = 0  # sample index of _buf[0]
        self._seen = 0  # samples fed so far
        self._next_span = 0
        self._closed = False

    @property
    def hop(self) -> int:
        """Samples between the windows returned."""
        return self.plan.hop_frames * self.hop_length * self.every

    def feed(self, samples: np.ndarray) -> list[torch.Tensor]:
        self._buf = np.concatenate([self._buf, np.asarray(samples, dtype=np.float32)])
        self._seen += len(samples)
        return self._drain()

    def close(self) -> list[torch.Tensor]:
        self._closed = True
        return self._drain()

    def _drain(self) -> list[torch.Tensor]:
        out = []
        lead = self.plan.lead * self.hop_length
        total_windows = n_windows(self._seen, self.excerpt, self.plan.hop_frames * self.hop_length)
        n_frames = 1 + self._seen // self.hop_length  # as torch.stft(center=True) counts them
        # Frames whose STFT support has been fed (no reflection at the end yet).
        ready = (self._seen - lead) // self.hop_length + 1 if self._seen >= lead else 0
        while True:
            first = self._next_span * self.span  # the span's first window start, in frames
            a, b = max(0, first - self.left), first + self.span + self.right
            k0, k1 = first // self.plan.hop_frames, (first + self.span) // self.plan.hop_frames
            if self._closed:
                if k0 >= total_windows:
                    break
                b, k1 = min(b, n_frames), min(k1, total_windows)
            elif b > ready:
                break
            emb = self._span(a, b, k0, k1)
            if emb is not None:
                out.append(emb)
            self._next_span += 1
            # Audio before the next span's left context is never needed again.
            keep_from = max(0, ((self._next_span * self.span - self.left) * self.hop_length) - lead)
            if keep_from > self._buf_start:
                self._buf = self._buf[keep_from - self._buf_start :]
                self._buf_start = keep_from
        return out

    @torch.no_grad()
    def _span(self, a: int, b: int, k0: int, k1: int) -> torch.Tensor | None:
        """Embeddings of windows ``k0 .. k1 - 1`` from the body run over frames ``a .. b - 1``."""
        keep = [k for k in range(k0, k1) if k % self.every == 0]
        if not keep:
            return None
        hop, lead = self.hop_length, self.plan.lead * self.hop_length
        lo = max(0, a * hop - lead)
        hi = min(self._seen, (b - 1) * hop + lead)
        seg = torch.from_numpy(self._buf[lo - self._buf_start : hi - self._buf_start].copy())
        device = _device_of(self.net)
        # center=True reflects at both ends of the segment; frames that reflection touches lie
        # outside a .. b - 1 except at the recording's own ends, where the window's do too.
        mel = self.net.logmel(seg.to(device)[None])
        skip = (a * hop - lo) // hop
        x = self.net.normalize(mel[..., skip : skip + (b - a)])
        h = x.contiguous(memory_format=torch.channels_last)
        for block in self._body[:-1]:
            h = block(h)
        last = self._body[-1]
        # The last 2x2 pool at every time offset (stride 1 in time): both phases at once.
        z = F.relu(F.max_pool2d(last.before_pool(h), kernel_size=2, stride=(2, 1), ceil_mode=last.ceil_mode))
        # Window k's first column: its start (k * hop_frames frames) in columns of hop_frames.
        first_col = k0 - a // self.plan.hop_frames
        z = z[..., first_col : first_col + (k1 - k0) + 2 * self.plan.width - 2]
        pooled = _window_pool(z, self.plan.width)
        if len(pooled) < k1 - k0:
            raise RuntimeError(f"span of frames {a}..{b} gave {len(pooled)} windows, {k1 - k0} expected")
        emb = self.net.head(pooled[[k - k0 for k in keep]])
        return emb.float().cpu()


# --- the fallback --------------------------------------------------------------------------


class WindowEmbedder:
    """The per-window path: every window of ``excerpt`` samples, one every ``hop`` samples, cut
    out and embedded on its own (:func:`fslcli.embedding.embed_windows`). Same interface as
    :class:`SpanEmbedder`."""

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


def uses_fast_path(net: ProtoNet, hop: int) -> bool:
    """Whether windows ``hop`` samples apart come from the fast path: the model has one and
    ``hop`` is a whole number of its window steps (:func:`span_hop`)."""
    base = span_hop(net)
    return base is not None and hop % base == 0


def window_embedder(net: ProtoNet, hop: int) -> SpanEmbedder | WindowEmbedder:
    """The fast path when :func:`uses_fast_path`, else the per-window path."""
    if uses_fast_path(net, hop):
        return SpanEmbedder(net, every=hop // span_hop(net))
    return WindowEmbedder(net, hop=hop)


def span_hop(net: ProtoNet) -> int | None:
    """Samples between the fast path's windows (half the body's stride), or None without one."""
    if fast_path_problem(net) is not None:
        return None
    return span_plan(net).hop_frames * net.audio.hop_length


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
