"""Configuration records.

All settings are frozen dataclasses passed explicitly. A model file stores them as plain dicts
(:meth:`RunConfig.to_dict`), so every command rebuilds the exact model and data pipeline from
the file alone. Only settings that are on by default or that a user has a reason to change
live here; the ISMIR 2022 tutorial's configuration is one named preset (:func:`tutorial_preset`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, replace
from typing import Any, ClassVar, TypeVar

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
    #: "log" (log-mel with a floor) or "power" (the tutorial's raw power mel).
    compression: str = "log"

    @property
    def excerpt_samples(self) -> int:
        return int(round(self.excerpt_seconds * self.sample_rate))


@dataclass(frozen=True)
class ModelConfig:
    """Backbone and prototypical head."""

    #: "conv" (conv-BatchNorm-pool-ReLU blocks, mean+max pooling, linear projection) or
    #: "tutorial" (the ISMIR 2022 tutorial's blocks with GroupNorm and global average pooling).
    backbone: str = "conv"
    channels: tuple[int, ...] = (32, 64, 128, 256)
    #: Size of the embedding ("conv"; the tutorial backbone's is its last channel count).
    embedding_dim: int = 256
    #: "band" (each mel band standardised by BatchNorm) or "none" (the tutorial's raw input).
    input_norm: str = "band"
    #: How embeddings are compared: "whitened" (minus the training clips' mean, unit length,
    #: whitened by the training classes' within-class covariance, unit length again: directions
    #: in which one class's recordings vary count less; Hatch et al. 2006) or "none" (as the
    #: backbone outputs them, as in the tutorial).
    embedding_norm: str = "whitened"
    #: The weight, 0 to 1, of a multiple of the identity mixed into the within-class covariance
    #: before it is inverted (a 256-d covariance from about a thousand clips is noisy).
    whiten_shrinkage: float = 0.2
    #: In episodes with two or more support clips of a class, the weight (0 to <1) of the support
    #: set's own within-class covariance mixed into the training classes' (Bateni et al. 2020).
    support_cov_weight: float = 0.1


@dataclass(frozen=True)
class EpisodeConfig:
    """Shape of an N-way K-shot episode."""

    ways: int = 5
    shots: int = 5
    queries: int = 15

    @property
    def clips_per_class(self) -> int:
        return self.shots + self.queries


#: Excerpts a dataset clip is embedded with to be compared (``fsl eval``, the plots): one at its
#: onset and one at its end, their embeddings averaged. Chosen on held-out training instruments and
#: GM families in FluidR3_GM, where it beat one excerpt by 3-4 points at 5-shot and 6-12 at
#: 1-shot, and every excerpt by up to 4 at 1-shot; on the test instruments the change was within
#: a point or so (benchmarks/results/README.md). ``fsl predict`` and ``fsl embed`` take every
#: excerpt of a file, which may be long.
EVAL_WINDOWS: int = 2

#: Training episodes: up to 24 classes each (fewer when the data has fewer), 5 support and 5
#: query clips per class.
TRAIN_EPISODE = EpisodeConfig(ways=24, shots=5, queries=5)


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation of the randomly cropped excerpts."""

    gain_db: float = 6.0
    #: Random equalisation: a smooth curve through 4 random points within +/- this many dB,
    #: added to the log-mel.
    eq_db: float = 6.0
    #: Random shift of the mel axis by up to this many bands (a small pitch/formant shift).
    max_shift_bins: int = 2
    spec_time_masks: int = 1
    spec_freq_masks: int = 1
    time_mask_frames: int = 10
    freq_mask_bins: int = 12
    #: Each excerpt read as if played up to this many semitones higher or lower (uniformly drawn;
    #: partials and formants move together, as when a sampler transposes a note). 0: off.
    pitch_semitones: float = 8.0


@dataclass(frozen=True)
class TrainConfig:
    """An episodic training run."""

    steps: int = 1000
    seed: int = 0
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    #: "adamw" (warm-up then cosine decay) or "adam" (constant rate, the tutorial's).
    optimizer: str = "adamw"
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


@dataclass(frozen=True)
class DetectConfig:
    """How ``fsl detect`` turns a recording's windows into events (:mod:`fslcli.detection`).
    Times in seconds. The first four are ``fsl detect``'s options; the rest are the method's
    settings, tuned on the detection benchmark's TimGM6mb recordings (``benchmarks/detection.py``).
    Not stored in model files."""

    #: Windows are this share of the model's excerpt apart by default, and at most ``MAX_HOP_SHARE``.
    DEFAULT_HOP_SHARE: ClassVar[float] = 0.25
    MAX_HOP_SHARE: ClassVar[float] = 0.5

    #: Smoothed class probability at or above which a window belongs to an event.
    threshold: float = 0.5
    #: Events shorter than this are dropped.
    min_duration: float = 0.5
    #: Seconds between windows; None: a quarter of the model's excerpt (0.25 s). At most half of it.
    hop: float | None = None
    #: Length of the median filter over each class's probabilities (0: none).
    smooth: float = 1.5
    #: Windows of each support example averaged into its embedding: N from its onset (1: the
    #: window at its onset alone), or "all", every window across it (``--windows all`` of
    #: ``fsl predict``; :func:`fslcli.embedding.starts_of`).
    support_windows: int | str = "all"
    #: Share of a recording's windows, the least like every class, that make its background: the
    #: class logits are standardised by their mean and spread over those windows.
    background_share: float = 0.9
    #: Softmax temperature of the classes' standardised evidence (:func:`fslcli.detection.window_probabilities`).
    temperature: float = 0.25
    #: The constant score of "none of the classes" in that softmax, in standard deviations.
    margin: float = 1.0
    #: An event's onset moves to the strongest rise in energy within this many seconds of where
    #: its windows put it (0: off): windows are as long as the model's excerpt, energy frames 16 ms.
    onset_snap: float = 0.75

    def problem(self, excerpt_seconds: float) -> str | None:
        """Why these settings cannot run, as ``--option value: the way out``; None when they can."""
        if not 0.0 < self.threshold < 1.0:
            return f"--threshold {self.threshold:g}: use a probability between 0 and 1, such as 0.5"
        if self.min_duration < 0 or not math.isfinite(self.min_duration):
            return f"--min-duration {self.min_duration:g}: use 0 or more seconds"
        if self.hop is not None and not 0.0 < self.hop <= self.MAX_HOP_SHARE * excerpt_seconds + 1e-9:
            return (
                f"--hop {self.hop:g}: use more than 0 and at most half of the model's {excerpt_seconds:g} s "
                f"excerpt ({self.MAX_HOP_SHARE * excerpt_seconds:g} s), so that every instant is seen by two windows"
            )
        if self.smooth < 0:
            return f"--smooth {self.smooth:g}: use 0 (no smoothing) or more seconds"
        if self.support_windows != "all" and not (isinstance(self.support_windows, int) and self.support_windows >= 1):
            return f"support_windows {self.support_windows!r}: use a number of windows (1 or more) or 'all'"
        if not 0.0 < self.background_share < 1.0:
            return f"background_share {self.background_share:g}: use a share between 0 and 1"
        if self.temperature <= 0:
            return f"temperature {self.temperature:g}: use a positive value"
        if self.onset_snap < 0:
            return f"onset_snap {self.onset_snap:g}: use 0 (off) or more seconds"
        return None


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; a model file stores it so a model rebuilds from its file alone.
    ``episode`` is the shape of training episodes."""

    audio: AudioConfig = AudioConfig()
    model: ModelConfig = ModelConfig()
    episode: EpisodeConfig = TRAIN_EPISODE
    augment: AugmentConfig = AugmentConfig()
    train: TrainConfig = TrainConfig()
    split: SplitConfig = SplitConfig()

    def to_dict(self) -> dict[str, Any]:
        return {f.name: to_dict(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Rebuild from :meth:`to_dict` output; a missing part takes ``RunConfig()``'s."""
        defaults = cls()
        return cls(
            **{
                name: from_dict(kind, data[name]) if name in data else getattr(defaults, name)
                for name, kind in PARTS.items()
            }
        )


def tutorial_preset(base: RunConfig = RunConfig()) -> RunConfig:
    """The ISMIR 2022 tutorial's configuration on fslcli's settings: five conv blocks 32-512 with
    GroupNorm over a raw power 64-band mel (n_fft 400, hop 200: torchaudio's MelSpectrogram
    defaults), embeddings compared as they come, 5-way 5-shot 20-query episodes, Adam at a
    constant 1e-3, every augmentation off but the random 1 s crop, trained on TinySOL's nine
    training instruments as the tutorial was (unless ``base`` names its training classes: its
    split is kept, and so are its training length, seed and device). Its 25-clip episodes do not
    fit every sound of a full General MIDI render (a drum sound has 24 clips)."""
    split = (
        base.split if base.split.train_classes is not None else replace(base.split, train_classes=DEFAULT_TRAIN_CLASSES)
    )
    return replace(
        base,
        split=split,
        audio=AudioConfig(n_fft=400, hop_length=200, n_mels=64, compression="power"),
        model=ModelConfig(
            backbone="tutorial", channels=(32, 64, 128, 256, 512), input_norm="none", embedding_norm="none"
        ),
        episode=EpisodeConfig(ways=5, shots=5, queries=20),
        augment=AugmentConfig(
            gain_db=0.0, eq_db=0.0, max_shift_bins=0, spec_time_masks=0, spec_freq_masks=0, pitch_semitones=0.0
        ),
        train=replace(base.train, optimizer="adam", learning_rate=1e-3),
    )


PRESETS = {"default": lambda base: base, "tutorial": tutorial_preset}


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as a dict of plain values (tuples become lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        return v

    return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Rebuild a config dataclass from :func:`to_dict` output.

    Raises:
        ValueError: ``data`` holds a setting this version does not know (a model file from
            another version of fslcli).
    """
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} settings: {', '.join(unknown)}")
    # Every sequence-valued setting is a tuple, so lists from JSON or a model file go back to tuples.
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})  # type: ignore[call-arg]


PARTS: dict[str, type] = {
    "audio": AudioConfig,
    "model": ModelConfig,
    "episode": EpisodeConfig,
    "augment": AugmentConfig,
    "train": TrainConfig,
    "split": SplitConfig,
}
