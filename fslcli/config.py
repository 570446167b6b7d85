"""Configuration records.

All settings are frozen dataclasses passed explicitly. A checkpoint stores them as
plain dicts (:func:`to_dict`), so ``eval``, ``embed`` and ``predict`` rebuild the exact
model and data pipeline from the file alone (:func:`from_dict`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

#: The tutorial's split of TinySOL's 14 instruments (labels are TinySOL's
#: "Instrument (in full)" names, shared by every TinySOL-shaped source).
DEFAULT_TRAIN_CLASSES: tuple[str, ...] = (
    "French Horn",
    "Violin",
    "Flute",
    "Contrabass",
    "Trombone",
    "Cello",
    "Clarinet in Bb",
    "Oboe",
    "Accordion",
)
DEFAULT_TEST_CLASSES: tuple[str, ...] = (
    "Bassoon",
    "Viola",
    "Trumpet in C",
    "Bass Tuba",
    "Alto Saxophone",
)


@dataclass(frozen=True)
class AudioConfig:
    """How audio is decoded, cut and turned into a log-mel spectrogram."""

    sample_rate: int = 16_000
    excerpt_seconds: float = 1.0
    n_fft: int = 1024
    hop_length: int = 256
    n_mels: int = 64
    f_min: float = 0.0
    f_max: float | None = None
    #: "log" (log-mel with a floor; the default) or "power" (the tutorial's raw power mel).
    compression: str = "log"
    #: Band spacing of the filterbank: "mel" (librosa's mel filterbank) or "log" (geometrically
    #: spaced triangles from ``f_min``, or 50 Hz when ``f_min`` is 0, to ``f_max``: a pitch change
    #: of a resampled sound moves its whole pattern by the same number of bands).
    frequency_scale: str = "mel"

    @property
    def excerpt_samples(self) -> int:
        return int(round(self.excerpt_seconds * self.sample_rate))


@dataclass(frozen=True)
class ModelConfig:
    """Backbone and prototypical head."""

    #: "conv" (fslcli's default: conv-BatchNorm-ReLU-pool blocks, mean+max pooling, linear
    #: projection), "resnet" (residual blocks) or "tutorial" (the ISMIR 2022 tutorial's five
    #: conv blocks with GroupNorm and global average pooling).
    backbone: str = "conv"
    channels: tuple[int, ...] = (32, 64, 128, 256)
    #: Size of one backbone's embedding (conv/resnet; the tutorial backbone's is its last channel count).
    embedding_dim: int = 256
    #: Backbones in the model, each initialised independently and trained on the same episodes
    #: with its own prototypical loss; a clip's embedding is theirs side by side (an ensemble
    #: compared as one model: squared distances add up). Each adds one backbone's
    #: forward and backward pass to a training step.
    members: int = 1
    #: "euclidean" (squared Euclidean distance, Snell et al. 2017) or "cosine"
    #: (cosine similarity times a learned scale).
    distance: str = "euclidean"
    #: Input normalisation: "band" (each mel band standardised by BatchNorm), "clip"
    #: (each spectrogram standardised on its own: gain-invariant) or "none".
    input_norm: str = "band"
    #: How embeddings are compared at validation, evaluation and inference:
    #: "whitened" (the default): "centered-l2", then whitened by the training classes'
    #: within-class covariance (shrunk by ``whiten_shrinkage``) and unit length again, so the
    #: directions in which recordings of one instrument vary (pitch, dynamics) count less than
    #: those that tell instruments apart (within-class covariance normalisation, Hatch et al. 2006);
    #: "centered-l2" (minus the mean embedding of training clips, then unit length: SimpleShot's
    #: CL2N, Wang et al. 2019), "l2" (unit length) or "none" (as the backbone outputs them).
    #: Training episodes always use the backbone's output.
    embedding_norm: str = "whitened"
    #: With "whitened": the weight, from 0 to 1, of a multiple of the identity mixed into the
    #: within-class covariance before it is inverted (1: no whitening).
    whiten_shrinkage: float = 0.2
    #: With "whitened": in an episode whose support set has two or more clips of some class
    #: (5-shot, not 1-shot), the weight, from 0 to 1, of the support set's own within-class
    #: covariance mixed into the training classes' before whitening (0: the training classes'
    #: alone). Only labelled support clips are used, never the queries.
    support_cov_weight: float = 0.1
    #: How the conv/resnet feature map becomes one vector: "global" (mean and max over time and
    #: frequency: shift-invariant in frequency) or "time" (mean and max over time only, each
    #: remaining frequency band kept apart, so where in the spectrum a pattern sits is kept).
    #: The tutorial backbone always averages over both.
    pooling: str = "global"
    #: Dropout on the pooled features before the projection, in training only (conv/resnet).
    dropout: float = 0.0
    #: Test-time averaging outside training (validation, evaluation, embed, predict, plots): a
    #: clip's embedding is the mean of its embeddings with the log-mel shifted by -k..k bands
    #: (k = this; training's band-shift augmentation shifts the same way). 0 embeds each clip once.
    eval_shifts: int = 2
    #: Test-time pitch shifts, in semitones (outside training, as ``eval_shifts``): a clip's
    #: embedding also averages its embeddings with the spectrum warped as if the recording were
    #: played that many semitones higher or lower (partials and formants together). One note
    #: then stands for its neighbours, which matters most when a class has one recording.
    #: Empty: off.
    eval_pitch_shifts: tuple[int, ...] = (-8, -4, 4, 8)


@dataclass(frozen=True)
class EpisodeConfig:
    """Shape of an N-way K-shot episode."""

    ways: int = 5
    shots: int = 5
    queries: int = 15

    @property
    def clips_per_class(self) -> int:
        return self.shots + self.queries


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation, applied to waveform excerpts and spectrograms."""

    random_crop: bool = True
    #: With ``random_crop``: 0 draws a training excerpt's start anywhere in its clip; a positive
    #: value draws it within this many seconds after the clip's onset, where evaluation excerpts start.
    onset_crop_seconds: float = 0.0
    gain_db: float = 6.0
    #: Random equalisation: a smooth curve through 4 random points within +/- this many dB,
    #: added to the log-mel (simulates other microphones, rooms and recording chains).
    eq_db: float = 6.0
    #: Random shift of the mel axis by up to this many bands (a small pitch/formant shift).
    max_shift_bins: int = 2
    #: Probability that an excerpt passes through a simulated recording chain: a room, a
    #: microphone's EQ, compression or saturation, background noise (:mod:`fslcli.augment`).
    chain: float = 0.0
    spec_time_masks: int = 1
    spec_freq_masks: int = 1
    time_mask_frames: int = 10
    freq_mask_bins: int = 12


@dataclass(frozen=True)
class TrainConfig:
    """An episodic training run."""

    steps: int = 1000
    seed: int = 0
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    #: "adamw" (the default) or "adam" (the tutorial's optimiser).
    optimizer: str = "adamw"
    #: "cosine" (linear warm-up, then cosine decay; the default) or "constant" (the tutorial's).
    schedule: str = "cosine"
    #: Ways of training episodes: 0 (the default) uses every training class in every episode,
    #: which generalises better to unseen classes than 5-way training; N > 0 draws N classes.
    train_ways: int = 0
    #: Queries per class in training episodes, at most ``EpisodeConfig.queries`` (0, the
    #: default: exactly that). Fewer queries make a step cheaper.
    train_queries: int = 0
    #: Weight of an auxiliary loss: every clip of a training episode is also classified over
    #: all training classes by a linear head that is used only during training (0: off).
    class_loss_weight: float = 0.0
    #: Decay of an exponential moving average of the weights (0: off). With it, validation,
    #: calibration and ``model.pt`` use the averaged weights; training updates the raw ones.
    ema_decay: float = 0.0
    val_every: int = 100
    val_episodes: int = 300
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    precision: str = "32"


@dataclass(frozen=True)
class SplitConfig:
    """Which classes train, validate and test. Validation never touches test classes.

    With ``val_classes`` empty, validation uses held-out recordings (``val_fold``) of the
    training classes. ``train_classes`` None: every other class of the data, except those that
    share recordings with a test or validation class (read from a render's provenance).
    """

    train_classes: tuple[str, ...] | None = None
    test_classes: tuple[str, ...] = DEFAULT_TEST_CLASSES
    val_classes: tuple[str, ...] = ()
    val_fold: int = 4
    #: What keeps support and query apart within a class, and what validation folds are dealt
    #: by: "source" (clips that share a recording: a TinySOL note, a SoundFont sample, a
    #: folder's groups.csv), "note" (one pitch of one instrument) or "none" (each clip alone,
    #: folds as the data gives them).
    group_by: str = "source"


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as a dict of plain values (tuples become lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Rebuild a config dataclass from :func:`to_dict` output, ignoring unknown keys.

    Unknown keys are dropped so that newer files with extra settings still load; missing
    keys take the dataclass default.
    """
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    # Every sequence-valued setting is a tuple, so lists from JSON or a checkpoint go back to tuples.
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names}
    return cls(**kwargs)  # type: ignore[call-arg]


__all__ = [
    "AudioConfig",
    "ModelConfig",
    "EpisodeConfig",
    "AugmentConfig",
    "TrainConfig",
    "SplitConfig",
    "RunConfig",
    "DEFAULT_TRAIN_CLASSES",
    "DEFAULT_TEST_CLASSES",
    "to_dict",
    "from_dict",
]


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; a checkpoint stores it so a model rebuilds from its file alone."""

    audio: AudioConfig = AudioConfig()
    model: ModelConfig = ModelConfig()
    episode: EpisodeConfig = EpisodeConfig()
    augment: AugmentConfig = AugmentConfig()
    train: TrainConfig = TrainConfig()
    split: SplitConfig = SplitConfig()
    #: Evaluation windows per clip: a clip's embedding is the mean over this many excerpts,
    #: the first at the clip's onset, the others spread evenly to its end (fixed, so each clip
    #: is embedded once per evaluation run). One window (the default) keeps the attack and
    #: early sustain, which held-out classes showed to be the most telling part of a note.
    eval_windows: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "audio": to_dict(self.audio),
            "model": to_dict(self.model),
            "episode": to_dict(self.episode),
            "augment": to_dict(self.augment),
            "train": to_dict(self.train),
            "split": to_dict(self.split),
            "eval_windows": self.eval_windows,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        return cls(
            audio=from_dict(AudioConfig, data.get("audio", {})),
            model=from_dict(ModelConfig, data.get("model", {})),
            episode=from_dict(EpisodeConfig, data.get("episode", {})),
            augment=from_dict(AugmentConfig, data.get("augment", {})),
            train=from_dict(TrainConfig, data.get("train", {})),
            split=from_dict(SplitConfig, data.get("split", {})),
            eval_windows=int(data.get("eval_windows", 1)),
        )
