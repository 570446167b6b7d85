"""Prototypical Network over a CNN on log-mel spectrograms.

Snell, Swersky & Zemel, "Prototypical Networks for Few-shot Learning", NeurIPS 2017: a class
prototype is the mean embedding of its support clips, and a query's logits are its negative
squared Euclidean distances to the prototypes. The mel front end runs on ``torch.stft`` with
librosa's mel filterbank, inside the model, so the same module turns raw waveforms into
embeddings on any device.

Embeddings are compared in a space fitted to the training clips (``embedding_norm``
"whitened"): centred, unit length, whitened by the training classes' within-class covariance,
unit length again; an episode with several support clips per class also mixes in its own
support set's covariance. The pure maths of that space are the functions below the network.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fslcli.config import AudioConfig, ModelConfig

BACKBONES: tuple[str, ...] = ("conv", "tutorial")
INPUT_NORMS: tuple[str, ...] = ("band", "none")
EMBEDDING_NORMS: tuple[str, ...] = ("whitened", "none")

#: Added to mel power before the log, so silence gives a finite floor rather than -inf.
LOG_FLOOR = 1e-6


# --- pure maths ------------------------------------------------------------------------


def prototypes(support: torch.Tensor, labels: torch.Tensor, ways: int) -> torch.Tensor:
    """Class prototypes: ``(..., n_support, dim)`` with class indices ``labels`` ``(n_support,)``
    (any order, any number per class) -> ``(..., ways, dim)`` class means."""
    labels = labels.to(support.device)
    shots = len(labels) // max(1, ways)
    if shots * ways == len(labels) and torch.equal(
        labels, torch.arange(ways, device=labels.device).repeat_interleave(shots)
    ):
        # Class-major blocks of equal size (every episode): a reshape and a mean.
        return support.reshape(*support.shape[:-2], ways, shots, support.shape[-1]).mean(dim=-2)
    onehot = F.one_hot(labels, ways).to(support.dtype)  # (n_support, ways)
    return (onehot.T @ support) / onehot.sum(dim=0).clamp(min=1).unsqueeze(-1)


def squared_euclidean(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pairwise squared distances: ``(..., n, d)``, ``(..., m, d)`` -> ``(..., n, m)``.

    Expanded as ``|x|^2 - 2 x.y + |y|^2`` so memory is ``n * m``, not ``n * m * d``.
    """
    xx = x.pow(2).sum(-1, keepdim=True)
    yy = y.pow(2).sum(-1, keepdim=True).transpose(-1, -2)
    return (xx - 2.0 * (x @ y.transpose(-1, -2)) + yy).clamp_min(0.0)


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


# --- front end -------------------------------------------------------------------------


def warped_filterbanks(fb: torch.Tensor, semitones: torch.Tensor) -> torch.Tensor:
    """The filterbank ``fb`` ``(bands, bins)`` as it would read a power spectrum played
    ``semitones[b]`` higher, one per clip: ``(batch, bands, bins)``. Band ``m`` takes from bin
    ``k`` what ``fb``'s band ``m`` takes from bin ``k * 2 ** (s / 12)`` (linearly interpolated;
    nothing past the last bin), so partials and formants move together, as when a sampler
    transposes a note, and frames keep their duration."""
    bins = fb.shape[1]
    pos = torch.arange(bins, device=fb.device, dtype=fb.dtype)[None, :] * torch.pow(2.0, semitones.to(fb) / 12)[:, None]
    lo = pos.floor().long()
    frac = (pos - lo).unsqueeze(1)  # (batch, 1, bins)
    inside = (lo < bins - 1).unsqueeze(1)
    lo = lo.clamp(max=bins - 2)
    take = lambda idx: fb[:, idx].permute(1, 0, 2)  # noqa: E731  (bands, batch, bins) -> (batch, bands, bins)
    return torch.where(
        inside, take(lo) * (1 - frac) + take(lo + 1) * frac, torch.zeros((), dtype=fb.dtype, device=fb.device)
    )


def mel_filterbank(audio: AudioConfig) -> np.ndarray:
    """librosa's mel filterbank for ``audio``, ``(n_mels, n_fft // 2 + 1)`` float32.

    Importing ``librosa.filters`` (and scipy.signal under it) takes about 3 s, paid at every start
    of every command that loads a model; so the filterbank is kept in the cache folder after its
    first use, named by its parameters and librosa's version.
    """
    from importlib.metadata import version

    from fslcli.atomic import atomic_write
    from fslcli.errors import OutputError
    from fslcli.features import default_cache_dir

    shape = (audio.n_mels, audio.n_fft // 2 + 1)
    path = (
        default_cache_dir() / f"melfb-{audio.sample_rate}-{audio.n_fft}-{audio.n_mels}-librosa{version('librosa')}.npy"
    )
    try:
        kept = np.load(path, allow_pickle=False)
        if kept.shape == shape and kept.dtype == np.float32:
            return kept
    except (OSError, ValueError):
        pass  # not there yet, or unreadable: computed again below
    import librosa

    fb = librosa.filters.mel(sr=audio.sample_rate, n_fft=audio.n_fft, n_mels=audio.n_mels).astype(np.float32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: np.save(f, fb, allow_pickle=False))
    except (OSError, OutputError):
        pass  # an unwritable cache folder only costs start-up time
    return fb


def mel_band_centres(audio: AudioConfig) -> np.ndarray:
    """Centre frequency in Hz of each band of :class:`LogMel`'s filterbank, ``(n_mels,)``."""
    import librosa

    return librosa.mel_frequencies(audio.n_mels + 2, fmin=0.0, fmax=audio.sample_rate / 2)[1:-1]


class LogMel(nn.Module):
    """Waveforms ``(batch, samples)`` -> log-mel ``(batch, n_mels, frames)``; with
    ``compression="power"``, the raw power mel (the tutorial's input)."""

    def __init__(self, audio: AudioConfig) -> None:
        super().__init__()
        self.n_fft, self.hop, self.compression = audio.n_fft, audio.hop_length, audio.compression
        fb = mel_filterbank(audio)
        self.register_buffer("mel_basis", torch.from_numpy(fb).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(audio.n_fft), persistent=False)

    def forward(self, waves: torch.Tensor, semitones: torch.Tensor | None = None) -> torch.Tensor:
        """``semitones`` ``(batch,)``: read each clip as if played that much higher
        (:func:`warped_filterbanks`; training's pitch augmentation)."""
        # STFT in float32 even under mixed precision: power spectra overflow float16.
        with torch.autocast(device_type=waves.device.type, enabled=False):
            spec = torch.stft(waves.float(), self.n_fft, self.hop, window=self.window, center=True, return_complex=True)
            power = spec.real.pow(2) + spec.imag.pow(2)
            basis = self.mel_basis if semitones is None else warped_filterbanks(self.mel_basis, semitones)
            mel = basis @ power
            return torch.log(mel + LOG_FLOOR) if self.compression == "log" else mel


# --- backbones -------------------------------------------------------------------------


class BNBlock(nn.Module):
    """3x3 convolution, BatchNorm, 2x2 max-pool, ReLU (the max-pool runs before the ReLU: the
    same function, since ReLU is monotone, with the ReLU on a quarter of the values)."""

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
    """The tutorial's block: 3x3 convolution, GroupNorm, 2x2 max-pool, ReLU."""

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


def check_model(audio: AudioConfig, model: ModelConfig) -> None:
    """Refuse settings the network cannot be built with, naming the value and the choices."""
    for name, value, choices in (
        ("backbone", model.backbone, BACKBONES),
        ("input_norm", model.input_norm, INPUT_NORMS),
        ("embedding_norm", model.embedding_norm, EMBEDDING_NORMS),
        ("compression", audio.compression, ("log", "power")),
    ):
        if value not in choices:
            raise ValueError(f"{name} {value!r}: choose one of {', '.join(choices)}")
    if not 0.0 <= model.whiten_shrinkage <= 1.0:
        raise ValueError(f"whiten_shrinkage {model.whiten_shrinkage}: use a value from 0 to 1")
    if not 0.0 <= model.support_cov_weight < 1.0:
        raise ValueError(f"support_cov_weight {model.support_cov_weight}: use a value from 0 up to (not including) 1")


class ProtoNet(nn.Module):
    """Waveforms -> embeddings -> the comparison space, and the prototypical head."""

    def __init__(self, audio: AudioConfig, model: ModelConfig) -> None:
        super().__init__()
        check_model(audio, model)
        self.audio, self.config = audio, model
        self.logmel = LogMel(audio)
        self.band_norm = nn.BatchNorm1d(audio.n_mels) if model.input_norm == "band" else None
        chans = (1, *model.channels)
        block = ConvBlock if model.backbone == "tutorial" else BNBlock
        self.body = nn.Sequential(*[block(a, b) for a, b in zip(chans[:-1], chans[1:], strict=True)])
        # Channels-last convolutions and pooling run about 1.5x faster on CPUs (oneDNN) and suit GPUs.
        self.body.to(memory_format=torch.channels_last)
        if model.backbone == "tutorial":
            self.head: nn.Module = nn.Identity()
            self.dim = model.channels[-1]
        else:
            # Mean and max over the remaining map, projected to the embedding.
            self.head = nn.Linear(2 * model.channels[-1], model.embedding_dim)
            self.dim = model.embedding_dim
        # Fitted to training clips (``calibrate``) and saved with the model.
        whitened = model.embedding_norm == "whitened"
        self.register_buffer("center", torch.zeros(self.dim) if whitened else None)
        self.register_buffer("whitener", torch.eye(self.dim) if whitened else None)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Log-mel ``(batch, n_mels, frames)`` -> network input ``(batch, 1, n_mels, frames)``."""
        return (self.band_norm(x) if self.band_norm is not None else x).unsqueeze(1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Network input ``(batch, 1, n_mels, frames)`` -> backbone embeddings ``(batch, dim)``."""
        body = self.body if self.training or self.config.backbone != "conv" else self._folded_body()
        h = body(x.contiguous(memory_format=torch.channels_last))
        if self.config.backbone == "tutorial":
            return h.mean(dim=(2, 3))
        return self.head(torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1))

    def _folded_body(self) -> nn.Module:
        """The body with each BatchNorm folded into its convolution: in eval mode the same function
        (to float rounding), about a third cheaper on CPUs. Rebuilt when the weights have changed
        since (their in-place version counters say so)."""
        from torch.nn.utils.fusion import fuse_conv_bn_eval

        key = tuple(p._version for p in self.body.parameters()) + tuple(b._version for b in self.body.buffers())
        cached = self.__dict__.get("_folded")
        if (
            cached is None
            or cached[0] != key
            or next(cached[1].parameters()).device != next(self.body.parameters()).device
        ):
            blocks = [
                nn.Sequential(fuse_conv_bn_eval(b.net[0], b.net[1]), b.net[2], b.net[3])
                for b in self.body  # type: ignore[index]
            ]
            folded = nn.Sequential(*blocks).to(memory_format=torch.channels_last).eval()
            self.__dict__["_folded"] = cached = (key, folded)
        return cached[1]

    def embed(self, waves: torch.Tensor) -> torch.Tensor:
        """``(batch, samples)`` -> backbone embeddings ``(batch, dim)`` (before :meth:`finish`)."""
        return self.encode(self.normalize(self.logmel(waves)))

    def finish(self, emb: torch.Tensor) -> torch.Tensor:
        """The comparison space: ``(..., dim)`` backbone embeddings (one per clip) -> ``(..., dim)``."""
        if self.whitener is None:
            return emb
        return F.normalize(self._unit(emb) @ self.whitener.to(emb), dim=-1)

    def finish_episode(
        self, support: torch.Tensor, query: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Backbone embeddings of one episode (or a batch of episodes) -> its comparison space:
        support ``(..., n_support, dim)`` with class indices ``labels`` ``(n_support,)``, queries
        ``(..., n_query, dim)``.

        With ``support_cov_weight`` w > 0, when some class has two or more support clips, each
        episode is whitened by ``(1 - w)`` times the training classes' covariance plus ``w`` times
        its own support set's within-class covariance. Otherwise this is :meth:`finish`.
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

    def train_covariance(self) -> torch.Tensor:
        """The shrunk within-class covariance of the training clips that ``whitener`` inverts,
        ``(dim, dim)`` float64 on the CPU: W = Sigma^-1/2 is symmetric, so Sigma = (W W)^-1."""
        w = self.whitener.detach().double().cpu()
        return torch.linalg.inv(w @ w)

    def _unit(self, emb: torch.Tensor) -> torch.Tensor:
        """Centred on the training clips' mean and set to unit length (before whitening)."""
        return F.normalize(emb - self.center.to(emb), dim=-1)

    @torch.no_grad()
    def calibrate(self, emb: torch.Tensor, labels: torch.Tensor) -> None:
        """Fit what :meth:`finish` subtracts and whitens with to training clips: ``emb``
        ``(n, dim)`` their backbone embeddings, ``labels`` ``(n,)`` their class indices."""
        if self.whitener is None:
            return
        # A small eigenproblem: on the CPU, in float64 for a well-conditioned inverse square root.
        emb, labels = emb.detach().double().cpu(), labels.cpu()
        center = emb.mean(dim=0)
        self.center.copy_(center.to(self.center))
        unit = F.normalize(emb - center, dim=-1)
        self.whitener.copy_(within_class_whitener(unit, labels, self.config.whiten_shrinkage).to(self.whitener))

    @staticmethod
    def logits(query: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
        """``(..., n_query, dim)``, ``(..., ways, dim)`` -> ``(..., n_query, ways)``: negative
        squared Euclidean distances (Snell et al., 2017)."""
        return -squared_euclidean(query, protos)
