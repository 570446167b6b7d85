"""Training-time augmentation, all drawn from the episode's seeded generator.

On the log-mel: a random gain (on the waveform), a smooth random EQ curve, a shift of the mel
axis by a few bands, and SpecAugment time and frequency masks (Park et al., 2019).

The recording chain, on the waveform: the rooms, microphones and processing a sound may pass
through before it reaches a user, so that an embedding learns the instrument rather than one
sample library's recording. Each excerpt, with probability ``AugmentConfig.chain``, passes
through a chain drawn from the generator:

- a room: convolution with an impulse response from a bank of shoebox rooms computed once by
  pyroomacoustics' image-source method (RT60 0.15-1.0 s, random source and microphone
  positions), mixed with the dry sound (wet 30-100%);
- a microphone and channel (pedalboard): a high-pass at 20-250 Hz, half the time a low-pass at
  3.5-7.5 kHz, and two peaking bands of +/-8 dB at 200 Hz-5 kHz;
- processing: compression (threshold -30 to -10 dB, ratio 1.5-6) and, a quarter of the time,
  saturation (drive 3-15 dB);
- background noise: white noise tilted towards low frequencies, at 15-45 dB SNR.

The output keeps the excerpt's RMS level (level is the gain augmentation's job).
"""

from __future__ import annotations

import numpy as np
import torch

from fslcli.config import AugmentConfig

#: Rooms in the impulse-response bank.
N_ROOMS = 32
#: Longest impulse response kept, in seconds (longer tails are cut with a short fade).
MAX_RIR_SECONDS = 0.6


def room_bank(sample_rate: int, seed: int, n_rooms: int = N_ROOMS) -> list[np.ndarray]:
    """``n_rooms`` impulse responses ``(n_taps,)`` float32 from seeded shoebox rooms, each starting
    at its direct sound, at unit gain."""
    import pyroomacoustics as pra

    rng = np.random.default_rng([seed, 7001])
    bank = []
    for _ in range(n_rooms):
        dims = rng.uniform([3.0, 3.0, 2.4], [15.0, 12.0, 6.0])
        rt60 = rng.uniform(0.15, 1.0)
        absorption, max_order = pra.inverse_sabine(rt60, dims)
        room = pra.ShoeBox(dims, fs=sample_rate, materials=pra.Material(absorption), max_order=min(max_order, 40))
        room.add_source(rng.uniform(0.5, dims - 0.5))
        room.add_microphone(rng.uniform(0.5, dims - 0.5))
        room.compute_rir()
        rir = np.asarray(room.rir[0][0], dtype=np.float64)
        rir = rir[int(np.argmax(np.abs(rir))) :][: int(MAX_RIR_SECONDS * sample_rate)]  # from the direct path
        fade = min(len(rir), sample_rate // 50)
        rir[len(rir) - fade :] *= np.linspace(1.0, 0.0, fade)
        bank.append((rir / rir[0]).astype(np.float32))  # the direct sound at unit gain
    return bank


class RecordingChain:
    """Draws and applies recording chains (see the module's description) to batches of excerpts."""

    def __init__(self, sample_rate: int, seed: int, n_rooms: int = N_ROOMS) -> None:
        self.sample_rate = sample_rate
        self.rooms = room_bank(sample_rate, seed, n_rooms)
        self._spectra: dict[tuple[int, int], np.ndarray] = {}

    def __call__(self, waves: np.ndarray, rng: np.random.Generator, probability: float) -> np.ndarray:
        """``waves`` ``(n, samples)`` float32 -> a new array, each row passed through a chain with
        ``probability``."""
        out = np.array(waves, dtype=np.float32, copy=True)
        rows = np.flatnonzero(rng.random(len(out)) < probability)
        if len(rows) == 0:
            return out
        rms = np.sqrt(np.mean(np.square(out[rows], dtype=np.float64), axis=1))
        rooms = rng.integers(len(self.rooms), size=len(rows))
        wet = rng.uniform(0.3, 1.0, size=(len(rows), 1))
        x = (1.0 - wet) * out[rows] + wet * self._reverberate(out[rows], rooms)
        x = np.stack([self._channel(row, rng) for row in x.astype(np.float32)])
        noise = rng.standard_normal(x.shape, dtype=np.float32)
        noise = np.cumsum(noise, axis=1) * np.float32(0.02) + noise  # tilted towards low frequencies
        noise -= noise.mean(axis=1, keepdims=True)
        snr = 10.0 ** (-rng.uniform(15, 45, size=(len(rows), 1)) / 20)
        x = x + noise * snr * _rms(x)[:, None] / (_rms(noise)[:, None] + 1e-12)
        level = np.where(_rms(x) > 0, rms / np.maximum(_rms(x), 1e-12), 1.0)
        out[rows] = np.where(rms[:, None] > 0, x * level[:, None], out[rows])
        return out

    def _reverberate(self, x: np.ndarray, rooms: np.ndarray) -> np.ndarray:
        """Each row of ``x`` ``(k, n)`` convolved with its room's response, its first n samples."""
        from scipy import fft

        size = fft.next_fast_len(x.shape[1] + max(len(r) for r in self.rooms) - 1, real=True)
        spectra = np.stack([self._spectrum(int(r), size) for r in rooms])
        return fft.irfft(fft.rfft(x, size, axis=1) * spectra, size, axis=1)[:, : x.shape[1]]

    def _spectrum(self, room: int, size: int) -> np.ndarray:
        key = (room, size)
        if key not in self._spectra:
            from scipy import fft

            self._spectra[key] = fft.rfft(self.rooms[room], size)
        return self._spectra[key]

    def _channel(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One excerpt through a drawn microphone, EQ and processing (pedalboard)."""
        from pedalboard import Compressor, Distortion, HighpassFilter, LowpassFilter, PeakFilter, Pedalboard

        effects = [HighpassFilter(cutoff_frequency_hz=float(rng.uniform(20, 250)))]
        low_pass, use_low_pass = float(rng.uniform(3500, 7500)), rng.random() < 0.5
        if use_low_pass:
            effects.append(LowpassFilter(cutoff_frequency_hz=low_pass))
        for _ in range(2):
            effects.append(
                PeakFilter(
                    cutoff_frequency_hz=float(np.exp(rng.uniform(np.log(200), np.log(5000)))),
                    gain_db=float(rng.uniform(-8, 8)),
                    q=float(rng.uniform(0.5, 2.0)),
                )
            )
        effects.append(Compressor(threshold_db=float(rng.uniform(-30, -10)), ratio=float(rng.uniform(1.5, 6.0))))
        drive, saturate = float(rng.uniform(3, 15)), rng.random() < 0.25
        if saturate:
            effects.append(Distortion(drive_db=drive))
        return Pedalboard(effects)(x, self.sample_rate)


def _rms(x: np.ndarray) -> np.ndarray:
    return np.sqrt(np.mean(np.square(x), axis=-1, dtype=np.float64))


# --- on the log-mel ----------------------------------------------------------------------


def spec_mask_params(
    rng: np.random.Generator, n: int, n_mels: int, n_frames: int, aug: AugmentConfig
) -> tuple[np.ndarray, np.ndarray]:
    """SpecAugment masks drawn from ``rng``: ``(n, time_masks, 2)`` and ``(n, freq_masks, 2)`` (start, width)."""
    tm = np.zeros((n, aug.spec_time_masks, 2), dtype=np.int64)
    fm = np.zeros((n, aug.spec_freq_masks, 2), dtype=np.int64)
    for k in range(aug.spec_time_masks):
        w = rng.integers(0, aug.time_mask_frames + 1, size=n)
        tm[:, k, 0] = rng.integers(0, np.maximum(1, n_frames - w + 1))
        tm[:, k, 1] = w
    for k in range(aug.spec_freq_masks):
        w = rng.integers(0, aug.freq_mask_bins + 1, size=n)
        fm[:, k, 0] = rng.integers(0, np.maximum(1, n_mels - w + 1))
        fm[:, k, 1] = w
    return tm, fm


def apply_spec_masks(x: torch.Tensor, time_masks: torch.Tensor, freq_masks: torch.Tensor) -> torch.Tensor:
    """Zero the masked frames and bands of ``x`` ``(batch, 1, n_mels, frames)``; returns a new tensor."""
    _, _, n_mels, n_frames = x.shape
    t = torch.arange(n_frames, device=x.device)
    f = torch.arange(n_mels, device=x.device)
    keep = torch.ones(x.shape[0], n_mels, n_frames, dtype=torch.bool, device=x.device)
    for k in range(time_masks.shape[1]):
        s, w = time_masks[:, k, 0:1], time_masks[:, k, 1:2]
        keep &= ~((t[None] >= s) & (t[None] < s + w))[:, None, :]
    for k in range(freq_masks.shape[1]):
        s, w = freq_masks[:, k, 0:1], freq_masks[:, k, 1:2]
        keep &= ~((f[None] >= s) & (f[None] < s + w))[:, :, None]
    return x * keep.unsqueeze(1).to(x.dtype)


def random_eq(rng: np.random.Generator, n: int, n_mels: int, max_db: float) -> np.ndarray:
    """Smooth random EQ curves in natural-log power units, ``(n, n_mels)``: each passes through 4
    evenly spaced points drawn within +/- ``max_db`` dB."""
    if max_db <= 0:
        return np.zeros((n, n_mels), dtype=np.float32)
    knots = rng.uniform(-max_db, max_db, size=(n, 4))
    # Linear interpolation through the 4 knots as one matrix product: weights (4, n_mels).
    grid = np.linspace(0.0, 3.0, n_mels)
    weights = np.maximum(0.0, 1.0 - np.abs(grid[None, :] - np.arange(4)[:, None]))
    return (knots @ weights * (np.log(10.0) / 10.0)).astype(np.float32)


def shift_bands(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Shift each spectrogram of ``x`` ``(batch, bands, frames)`` along its band axis by
    ``shift[b]`` bands (positive: upwards; the edge band repeats into the gap)."""
    n_bands = x.shape[1]
    idx = (torch.arange(n_bands, device=x.device)[None, :] - shift.to(x.device)[:, None]).clamp(0, n_bands - 1)
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[2]))


def augment_logmel(x: torch.Tensor, eq: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Add EQ curves ``(batch, n_mels)`` to log-mel ``x`` ``(batch, n_mels, frames)`` and shift
    each clip's mel axis by ``shift[b]`` bands (edge bands repeat); returns a new tensor."""
    return shift_bands(x + eq.to(x.dtype).unsqueeze(-1), shift)
