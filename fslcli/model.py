"""Prototypical Network over a CNN on log-mel spectrograms.

Snell, Swersky & Zemel, "Prototypical Networks for Few-shot Learning", NeurIPS 2017:
a class prototype is the mean embedding of its support clips, and a query's logits are
its negative squared Euclidean distances to the prototypes. The mel front end runs on
``torch.stft`` with librosa's mel filterbank, inside the model, so the same module turns
raw waveforms into embeddings on any device.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fslcli.config import AudioConfig, ModelConfig

BACKBONES: tuple[str, ...] = ("conv", "resnet", "tutorial")
POOLINGS: tuple[str, ...] = ("global", "time")
DISTANCES: tuple[str, ...] = ("euclidean", "cosine")
INPUT_NORMS: tuple[str, ...] = ("band", "clip", "none")
EMBEDDING_NORMS: tuple[str, ...] = ("whitened", "centered-l2", "l2", "none")

#: Added to mel power before the log, so silence gives a finite floor rather than -inf.
LOG_FLOOR = 1e-6


class ProtoOutput(NamedTuple):
    """A forward pass over one episode.

    ``logits``: ``(n_query, ways)``; ``prototypes``: ``(ways, dim)``;
    ``support``: ``(ways * shots, dim)``; ``query``: ``(n_query, dim)``.
    """

    logits: torch.Tensor
    prototypes: torch.Tensor
    support: torch.Tensor
    query: torch.Tensor


# --- pure maths ------------------------------------------------------------------------


def prototypes(support: torch.Tensor, ways: int) -> torch.Tensor:
    """Class prototypes: ``(..., ways * shots, dim)`` class-major -> ``(..., ways, dim)`` means."""
    return support.reshape(*support.shape[:-2], ways, -1, support.shape[-1]).mean(dim=-2)


def squared_euclidean(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pairwise squared distances: ``(..., n, d)``, ``(..., m, d)`` -> ``(..., n, m)``.

    Expanded as ``|x|^2 - 2 x.y + |y|^2`` so memory is ``n * m``, not ``n * m * d``.
    """
    xx = x.pow(2).sum(-1, keepdim=True)
    yy = y.pow(2).sum(-1, keepdim=True).transpose(-1, -2)
    return (xx - 2.0 * (x @ y.transpose(-1, -2)) + yy).clamp_min(0.0)


def cosine_similarity(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pairwise cosine similarity: ``(..., n, d)``, ``(..., m, d)`` -> ``(..., n, m)``."""
    return F.normalize(x, dim=-1) @ F.normalize(y, dim=-1).transpose(-1, -2)


# --- front end -------------------------------------------------------------------------


def shift_bands(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Shift each spectrogram of ``x`` ``(batch, bands, frames)`` along its band axis by
    ``shift[b]`` bands (positive: upwards; the edge band repeats into the gap)."""
    n_bands = x.shape[1]
    idx = (torch.arange(n_bands, device=x.device)[None, :] - shift.to(x.device)[:, None]).clamp(0, n_bands - 1)
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[2]))


def eval_shifts_problem(k: int, n_bands: int) -> str | None:
    """Why ``k`` band shifts cannot be averaged over spectrograms of ``n_bands`` bands, or None."""
    if 0 <= k < n_bands:
        return None
    return f"the spectrograms have {n_bands} bands; choose 0 (off) to {n_bands - 1}"


#: Largest test-time pitch shift, in semitones (an octave: beyond it most of a note's
#: spectrum leaves the filterbank).
MAX_PITCH_SHIFT = 12


def pitch_shifts_problem(semitones: tuple[int, ...]) -> str | None:
    """Why ``semitones`` cannot be test-time pitch shifts, or None."""
    bad = [s for s in semitones if s == 0 or abs(s) > MAX_PITCH_SHIFT]
    if bad:
        return f"use nonzero whole semitones from -{MAX_PITCH_SHIFT} to {MAX_PITCH_SHIFT} (got {bad[0]})"
    if len(set(semitones)) != len(semitones):
        return "each shift may appear once"
    return None


def warp_filterbank(fb: np.ndarray, sample_rate: int, n_fft: int, semitones: float) -> np.ndarray:
    """The filterbank ``fb`` ``(bands, n_fft // 2 + 1)`` as it would read a power spectrum
    resampled to sound ``semitones`` higher: band ``b`` takes from frequency ``f`` what ``fb``'s
    band ``b`` takes from ``f * 2 ** (semitones / 12)`` (partials and formants move together, as
    when a recording is played faster; the frames keep their duration)."""
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    ratio = 2.0 ** (semitones / 12)
    return np.stack([np.interp(freqs * ratio, freqs, band, right=0.0) for band in fb]).astype(np.float32)


FREQUENCY_SCALES: tuple[str, ...] = ("mel", "log")
#: Lowest band edge of the "log" filterbank when ``f_min`` is 0 (Hz; below the lowest TinySOL note's
#: second harmonic, about 73 Hz).
LOG_SCALE_F_MIN = 50.0


def log_filterbank(sr: int, n_fft: int, n_bands: int, f_min: float, f_max: float) -> np.ndarray:
    """Triangular filters with geometrically spaced centres, ``(n_bands, n_fft // 2 + 1)``.

    Band ``i`` rises from centre ``i - 1`` to centre ``i`` and falls to centre ``i + 1`` (edges at
    ``f_min`` and ``f_max``), but is never narrower than one FFT bin on either side, so low bands
    narrower than the FFT's resolution are not empty. Each filter sums to 1.
    """
    if not 0 < f_min < f_max <= sr / 2:
        raise ValueError(f"log filterbank needs 0 < f_min < f_max <= {sr / 2:g} Hz; got {f_min:g} and {f_max:g}")
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    bin_hz = sr / n_fft
    edges = np.geomspace(f_min, f_max, n_bands + 2)
    fb = np.zeros((n_bands, freqs.size), dtype=np.float64)
    for i in range(n_bands):
        lo, mid, hi = edges[i], edges[i + 1], edges[i + 2]
        lo, hi = min(lo, mid - bin_hz), max(hi, mid + bin_hz)
        rise = (freqs - lo) / (mid - lo)
        fall = (hi - freqs) / (hi - mid)
        fb[i] = np.clip(np.minimum(rise, fall), 0.0, None)
    return (fb / fb.sum(axis=1, keepdims=True)).astype(np.float32)


class LogMel(nn.Module):
    """Waveforms ``(batch, samples)`` -> log-mel ``(batch, n_mels, frames)``.

    ``compression="power"`` returns the raw power mel (the tutorial's input).
    """

    def __init__(self, audio: AudioConfig) -> None:
        super().__init__()
        import librosa

        self.n_fft = audio.n_fft
        self.hop = audio.hop_length
        self.compression = audio.compression
        if audio.frequency_scale == "log":
            f_min = audio.f_min if audio.f_min > 0 else LOG_SCALE_F_MIN
            f_max = audio.f_max if audio.f_max is not None else audio.sample_rate / 2
            fb = log_filterbank(audio.sample_rate, audio.n_fft, audio.n_mels, f_min, f_max)
        elif audio.frequency_scale == "mel":
            fb = librosa.filters.mel(
                sr=audio.sample_rate, n_fft=audio.n_fft, n_mels=audio.n_mels, fmin=audio.f_min, fmax=audio.f_max
            )
        else:
            raise ValueError(f"frequency_scale {audio.frequency_scale!r}: choose one of {FREQUENCY_SCALES}")
        self.register_buffer("mel_basis", torch.from_numpy(fb).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(audio.n_fft), persistent=False)
        self.sample_rate = audio.sample_rate
        # Filterbanks warped for test-time pitch shifts, by semitones (built when first asked for).
        self._warped: dict[int, torch.Tensor] = {}

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        return self.views(waves, ())[0]

    def views(self, waves: torch.Tensor, semitones: tuple[int, ...]) -> list[torch.Tensor]:
        """``(batch, samples)`` -> the log-mel, then the log-mel of the same sound pitch-shifted by
        each of ``semitones`` (:func:`warp_filterbank`): ``1 + len(semitones)`` tensors
        ``(batch, n_mels, frames)`` from one STFT."""
        # STFT in float32 even under mixed precision: power spectra overflow float16.
        with torch.autocast(device_type=waves.device.type, enabled=False):
            spec = torch.stft(waves.float(), self.n_fft, self.hop, window=self.window, center=True, return_complex=True)
            power = spec.real.pow(2) + spec.imag.pow(2)
            return [self._compress(basis @ power) for basis in [self.mel_basis, *map(self._warped_basis, semitones)]]

    def _compress(self, mel: torch.Tensor) -> torch.Tensor:
        if self.compression == "log":
            return torch.log(mel + LOG_FLOOR)
        return mel

    def _warped_basis(self, semitones: int) -> torch.Tensor:
        basis = self._warped.get(semitones)
        if basis is None or basis.device != self.mel_basis.device:
            fb = warp_filterbank(self.mel_basis.cpu().numpy(), self.sample_rate, self.n_fft, semitones)
            basis = self._warped[semitones] = torch.from_numpy(fb).to(self.mel_basis.device)
        return basis


# --- backbones -------------------------------------------------------------------------


class ResBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm and a projected shortcut, then 2x2 max-pool."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        # Pooling before the ReLU gives the same result (ReLU is monotone) on a quarter of the values.
        return F.relu(self.pool(y + self.short(x)))


class BNBlock(nn.Module):
    """3x3 convolution, BatchNorm, ReLU, 2x2 max-pool.

    The max-pool runs before the ReLU: the same result (ReLU is monotone, so it commutes with
    max), with the ReLU and its gradient on a quarter of the values.
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvBlock(nn.Module):
    """The tutorial's block: 3x3 convolution, GroupNorm, ReLU, 2x2 max-pool (computed, as in
    :class:`BNBlock`, with the pool before the ReLU: the same function, cheaper)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1),
            nn.GroupNorm(min(8, cout), cout),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def pooled_scatter(x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Pooled within-class covariance of labelled vectors: ``(..., n, dim)`` and their ``(n,)``
    class indices -> ``(..., dim, dim)``, and its degrees of freedom (n minus the number of
    classes; the covariance is the scatter divided by them, or zero without any)."""
    classes, idx = torch.unique(labels, return_inverse=True)
    onehot = F.one_hot(idx, len(classes)).to(x.dtype)  # (n, classes)
    means = (onehot.T @ x) / onehot.sum(dim=0).unsqueeze(-1)  # (..., classes, dim)
    resid = x - onehot @ means
    dof = len(labels) - len(classes)
    scatter = resid.transpose(-1, -2) @ resid
    return (scatter / dof if dof > 0 else torch.zeros_like(scatter)), dof


def within_class_whitener(emb: torch.Tensor, labels: torch.Tensor, shrinkage: float) -> torch.Tensor:
    """``(n, dim)`` embeddings and their ``(n,)`` class indices -> ``(dim, dim)`` symmetric W
    such that ``emb @ W`` has an identity within-class covariance (within-class covariance
    normalisation: directions in which recordings of one class vary weigh less than the
    directions between classes).

    The covariance is first shrunk toward a multiple of the identity with the same trace:
    ``(1 - shrinkage) * S + shrinkage * trace(S) / dim * I``; 1 leaves embeddings unchanged
    (up to scale). Without any within-class spread, W is the identity.
    """
    x = emb.double()
    pooled, dof = pooled_scatter(x, labels)
    cov = pooled * dof / len(x)  # the scatter over n, not over its degrees of freedom
    scale = float(torch.trace(cov)) / x.shape[1]
    eye = torch.eye(x.shape[1], dtype=x.dtype)
    if scale <= 0.0:
        return eye.to(emb.dtype)
    cov = (1.0 - shrinkage) * cov + shrinkage * scale * eye
    evals, evecs = torch.linalg.eigh(cov)
    evals = evals.clamp(min=1e-6 * scale)
    return (evecs @ torch.diag(evals.rsqrt()) @ evecs.T).to(emb.dtype)


def support_adapted_factor(
    train_cov: torch.Tensor, support: torch.Tensor, labels: torch.Tensor, weight: float
) -> torch.Tensor | None:
    """Lower Cholesky factors ``(..., dim, dim)`` of ``(1 - weight) * train_cov + weight * S``,
    S the pooled within-class covariance of an episode's support set, ``(..., n_support, dim)``
    with ``(n_support,)`` class indices; None when no class has two support clips.

    Comparing ``L^-1 x`` rather than ``Sigma^-1/2 x`` gives the same inner products (both square
    roots of ``Sigma^-1``), at the price of a Cholesky factorisation instead of an eigenproblem.
    """
    scatter, dof = pooled_scatter(support.double(), labels)
    if dof <= 0:
        return None
    cov = (1.0 - weight) * train_cov.double() + weight * scatter
    return torch.linalg.cholesky(cov)


def _backbone(model: ModelConfig, per_channel: int) -> tuple[nn.Module, nn.Module, int]:
    """A freshly initialised CNN body, its projection head and its embedding size; the body
    maps ``(batch, 1, n_mels, frames)`` to a feature map, ``per_channel`` pooled values per channel."""
    chans = (1, *model.channels)
    if model.backbone == "tutorial":
        body = nn.Sequential(*[ConvBlock(a, b) for a, b in zip(chans[:-1], chans[1:], strict=True)])
        return body, nn.Identity(), chans[-1]
    if model.backbone == "conv":
        body = nn.Sequential(*[BNBlock(a, b) for a, b in zip(chans[:-1], chans[1:], strict=True)])
    else:
        stem = model.channels[0]
        blocks: list[nn.Module] = [nn.Conv2d(1, stem, 3, padding=1, bias=False), nn.BatchNorm2d(stem), nn.ReLU()]
        blocks += [ResBlock(a, b) for a, b in zip((stem, *model.channels[:-1]), model.channels, strict=True)]
        body = nn.Sequential(*blocks)
    # Mean and max over the remaining map (see ``pooling``), projected to the embedding.
    return body, nn.Linear(per_channel * model.channels[-1], model.embedding_dim), model.embedding_dim


class ProtoNet(nn.Module):
    """Waveforms -> embeddings, and the prototypical head over episodes."""

    def __init__(self, audio: AudioConfig, model: ModelConfig) -> None:
        super().__init__()
        if model.backbone not in BACKBONES:
            raise ValueError(f"backbone {model.backbone!r}: choose one of {BACKBONES}")
        if model.distance not in DISTANCES:
            raise ValueError(f"distance {model.distance!r}: choose one of {DISTANCES}")
        if model.input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm {model.input_norm!r}: choose one of {INPUT_NORMS}")
        if model.embedding_norm not in EMBEDDING_NORMS:
            raise ValueError(f"embedding_norm {model.embedding_norm!r}: choose one of {EMBEDDING_NORMS}")
        if model.pooling not in POOLINGS:
            raise ValueError(f"pooling {model.pooling!r}: choose one of {POOLINGS}")
        if not 0.0 <= model.whiten_shrinkage <= 1.0:
            raise ValueError(f"whiten_shrinkage {model.whiten_shrinkage}: use a value from 0 to 1")
        if not 0.0 <= model.support_cov_weight < 1.0:
            raise ValueError(
                f"support_cov_weight {model.support_cov_weight}: use a value from 0 up to (not including) 1"
            )
        # Frequency bands left after the body's 2x2 max-pools (one per block), for "time" pooling.
        bands = audio.n_mels
        for _ in model.channels:
            bands //= 2
        if model.pooling == "time" and bands < 1:
            raise ValueError(
                f"pooling 'time' with {audio.n_mels} mel bands and {len(model.channels)} blocks leaves no band; "
                "use more mel bands or pooling 'global'"
            )
        per_channel = 2 * (bands if model.pooling == "time" else 1)
        if why := eval_shifts_problem(model.eval_shifts, audio.n_mels):
            raise ValueError(f"eval_shifts {model.eval_shifts}: {why}")
        if why := pitch_shifts_problem(model.eval_pitch_shifts):
            raise ValueError(f"eval_pitch_shifts {model.eval_pitch_shifts}: {why}")
        if not 0.0 <= model.dropout < 1.0:
            raise ValueError(f"dropout {model.dropout}: choose a value in [0, 1)")
        self.drop = nn.Dropout(model.dropout) if model.dropout > 0 else nn.Identity()
        self.audio = audio
        self.config = model
        self.logmel = LogMel(audio)
        self.band_norm = nn.BatchNorm1d(audio.n_mels) if model.input_norm == "band" else None
        if model.members < 1:
            raise ValueError(f"members {model.members}: use 1 or more backbones")
        # The first backbone keeps the attribute names of single-backbone models (their files load
        # unchanged); the others, in an ensemble, are independently initialised copies.
        self.body, self.head, self.member_dim = _backbone(model, per_channel)
        more = [_backbone(model, per_channel) for _ in range(model.members - 1)]
        self.more_bodies = nn.ModuleList([body for body, _, _ in more])
        self.more_heads = nn.ModuleList([head for _, head, _ in more])
        #: Embedding size: the members' embeddings side by side.
        self.dim = model.members * self.member_dim
        self.log_scale = nn.Parameter(torch.tensor(2.3)) if model.distance == "cosine" else None
        # Channels-last convolutions and pooling run about 1.5x faster on CPUs (oneDNN) and suit GPUs.
        self.body.to(memory_format=torch.channels_last)
        self.more_bodies.to(memory_format=torch.channels_last)
        # Set by training (``calibrate``) from training clips' embeddings; saved with the model.
        if model.embedding_norm in ("whitened", "centered-l2"):
            self.register_buffer("center", torch.zeros(self.dim))
        else:
            self.center = None
        if model.embedding_norm == "whitened":
            self.register_buffer("whitener", torch.eye(self.dim))
        else:
            self.whitener = None

    def features(self, waves: torch.Tensor) -> torch.Tensor:
        """``(batch, samples)`` -> normalised input ``(batch, 1, n_mels, frames)``."""
        return self.normalize(self.logmel(waves))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Log-mel ``(batch, n_mels, frames)`` -> normalised input ``(batch, 1, n_mels, frames)``."""
        if self.config.input_norm == "clip":
            x = x - x.mean(dim=(1, 2), keepdim=True)
            x = x / (x.std(dim=(1, 2), keepdim=True) + 1e-5)
        elif self.band_norm is not None:
            x = self.band_norm(x)
        return x.unsqueeze(1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, 1, n_mels, frames)`` -> embeddings ``(batch, dim)``: with ``members`` > 1,
        each backbone's ``(batch, member_dim)`` side by side."""
        x = x.contiguous(memory_format=torch.channels_last)
        parts = [
            self._pool_project(body(x), head)
            for body, head in zip([self.body, *self.more_bodies], [self.head, *self.more_heads], strict=True)
        ]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def _pool_project(self, h: torch.Tensor, head: nn.Module) -> torch.Tensor:
        """One backbone's feature map ``(batch, channels, bands, frames)`` -> ``(batch, member_dim)``."""
        if self.config.backbone == "tutorial":
            return h.mean(dim=(2, 3))
        if self.config.pooling == "time":
            # (batch, channels, bands, frames) -> (batch, 2 * channels * bands)
            pooled = torch.cat([h.mean(dim=3).flatten(1), h.amax(dim=3).flatten(1)], dim=1)
        else:
            pooled = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)
        return head(self.drop(pooled))

    def embed(self, waves: torch.Tensor, semitones: tuple[int, ...] | None = None) -> torch.Tensor:
        """``(batch, samples)`` -> backbone embeddings ``(batch, dim)`` (before :meth:`finish`).

        Outside training, the mean over test-time views of each clip: the clip as it is and
        pitch-shifted by each of ``semitones`` (default ``eval_pitch_shifts``), each of those
        with its log-mel shifted by -k..k bands (k = ``eval_shifts``).
        """
        k = self.config.eval_shifts
        semitones = self.config.eval_pitch_shifts if semitones is None else semitones
        if self.training or (k == 0 and not semitones):
            return self.encode(self.features(waves))
        views = self.logmel.views(waves, semitones)
        n = waves.shape[0]
        shifts = torch.arange(-k, k + 1, device=waves.device).repeat_interleave(n)
        total = sum(
            self.encode(self.normalize(shift_bands(x.repeat(2 * k + 1, 1, 1), shifts))).reshape(2 * k + 1, n, -1).sum(0)
            for x in views
        )
        return total / (len(views) * (2 * k + 1))

    def finish(self, emb: torch.Tensor) -> torch.Tensor:
        """The comparison space: ``(..., dim)`` backbone embeddings (one per clip, after averaging
        its windows) -> ``(..., dim)`` as ``embedding_norm`` says."""
        if self.config.embedding_norm == "none":
            return emb
        if self.center is not None:
            emb = emb - self.center.to(emb)
        emb = F.normalize(emb, dim=-1)
        if self.whitener is not None:
            emb = F.normalize(emb @ self.whitener.to(emb), dim=-1)
        return emb

    def train_covariance(self) -> torch.Tensor:
        """The shrunk within-class covariance of the training clips that ``whitener`` inverts,
        ``(dim, dim)`` float64 on the CPU: W = Sigma^-1/2 is symmetric, so Sigma = (W W)^-1."""
        if self.whitener is None:
            raise ValueError(f"embedding_norm {self.config.embedding_norm!r} has no within-class covariance")
        w = self.whitener.detach().double().cpu()
        return torch.linalg.inv(w @ w)

    def finish_episode(
        self, support: torch.Tensor, query: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One episode's (or a batch of episodes') backbone embeddings -> its comparison space:
        support ``(..., n_support, dim)`` with class indices ``labels`` ``(n_support,)``, queries
        ``(..., n_query, dim)``.

        With "whitened" embeddings and ``support_cov_weight`` w > 0, when some class has two or
        more support clips, each episode is whitened by ``(1 - w)`` times the training classes'
        covariance plus ``w`` times its own support set's within-class covariance, so that how
        the episode's own classes vary counts less too. Otherwise this is :meth:`finish`.
        """
        weight = self.config.support_cov_weight
        if self.whitener is None or weight <= 0:
            return self.finish(support), self.finish(query)
        device, dtype = support.device, support.dtype
        # Float64 on the CPU: small factorisations, and MPS has no float64.
        s = self._unit(support.detach().cpu().double())
        q = self._unit(query.detach().cpu().double())
        factor = support_adapted_factor(self.train_covariance(), s, labels.cpu(), weight)
        if factor is None:
            return self.finish(support), self.finish(query)

        def solve(x: torch.Tensor) -> torch.Tensor:
            y = torch.linalg.solve_triangular(factor, x.transpose(-1, -2), upper=False).transpose(-1, -2)
            return F.normalize(y, dim=-1).to(device=device, dtype=dtype)

        return solve(s), solve(q)

    def _unit(self, emb: torch.Tensor) -> torch.Tensor:
        """Centred on the training clips' mean and set to unit length (before whitening)."""
        return F.normalize(emb - self.center.to(emb), dim=-1)

    @torch.no_grad()
    def calibrate(self, emb: torch.Tensor, labels: torch.Tensor) -> None:
        """Fit what :meth:`finish` subtracts and whitens with to training clips: ``emb``
        ``(n, dim)`` their backbone embeddings, ``labels`` ``(n,)`` their class indices."""
        if self.center is None:
            return
        # A small eigenproblem: on the CPU, in float64 for a well-conditioned inverse square root.
        emb, labels = emb.detach().double().cpu(), labels.cpu()
        center = emb.mean(dim=0)
        self.center.copy_(center.to(self.center))
        if self.whitener is not None:
            unit = F.normalize(emb - center, dim=-1)
            self.whitener.copy_(within_class_whitener(unit, labels, self.config.whiten_shrinkage).to(self.whitener))

    def logits(self, query: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
        """``(..., n_query, dim)``, ``(..., ways, dim)`` -> ``(..., n_query, ways)``."""
        if self.log_scale is not None:
            return self.log_scale.exp() * cosine_similarity(query, protos)
        return -squared_euclidean(query, protos)

    def head_forward(self, support: torch.Tensor, query: torch.Tensor, ways: int) -> ProtoOutput:
        """Prototypical head on embeddings: support ``(ways * shots, dim)`` class-major."""
        protos = prototypes(support, ways)
        return ProtoOutput(self.logits(query, protos), protos, support, query)

    def forward(self, support: torch.Tensor, query: torch.Tensor, ways: int) -> ProtoOutput:
        """Support waves ``(ways * shots, samples)`` class-major, query waves ``(n_query, samples)``."""
        emb = self.embed(torch.cat([support, query], dim=0))
        n = support.shape[0]
        s, q = self.finish_episode(emb[:n], emb[n:], torch.arange(ways).repeat_interleave(n // ways))
        return self.head_forward(s, q, ways)
