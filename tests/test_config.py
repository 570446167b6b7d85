"""Configuration records: plain-dict round trips that checkpoints and run files rely on, and presets."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from fslcli.config import (
    DEFAULT_TRAIN_CLASSES,
    PRESETS,
    TRAIN_EPISODE,
    AudioConfig,
    AugmentConfig,
    EpisodeConfig,
    ModelConfig,
    RunConfig,
    SplitConfig,
    TrainConfig,
    from_dict,
    to_dict,
    tutorial_preset,
)


def custom_run() -> RunConfig:
    return RunConfig(
        audio=AudioConfig(sample_rate=22_050, excerpt_seconds=0.5, compression="power"),
        model=ModelConfig(
            backbone="tutorial", channels=(8, 16), embedding_dim=32, input_norm="none", embedding_norm="none"
        ),
        episode=EpisodeConfig(ways=3, shots=2, queries=4),
        augment=AugmentConfig(gain_db=0.0, pitch_semitones=2.0),
        train=TrainConfig(steps=7, seed=3, val_every=2, optimizer="adam"),
        split=SplitConfig(train_classes=("A", "B"), test_classes=("C",), val_classes=("D",), val_fold=1),
    )


@pytest.mark.parametrize(
    "config", [RunConfig(), custom_run(), tutorial_preset()], ids=["default", "custom", "tutorial"]
)
def test_run_config_round_trip_through_json(config: RunConfig) -> None:
    data = json.loads(json.dumps(config.to_dict()))  # what a run file / checkpoint stores
    back = RunConfig.from_dict(data)
    assert back == config
    assert isinstance(back.model.channels, tuple)
    # None (every class but the held-out ones) survives the round trip; given lists come back as tuples.
    assert back.split.train_classes is None or isinstance(back.split.train_classes, tuple)
    assert isinstance(back.split.val_classes, tuple)


def test_to_dict_holds_only_plain_values() -> None:
    data = custom_run().to_dict()
    assert set(data) == {"audio", "model", "episode", "augment", "train", "split"}
    assert data["model"]["channels"] == [8, 16]
    assert data["split"]["test_classes"] == ["C"]
    json.dumps(data)  # no dataclasses or tuples left that JSON would mangle


@pytest.mark.parametrize(
    ("part", "key"), [("model", "members"), ("audio", "f_max"), ("train", "ema_decay"), ("augment", "random_crop")]
)
def test_unknown_keys_are_refused_by_name(part: str, key: str) -> None:
    data = custom_run().to_dict()
    data[part][key] = 1
    with pytest.raises(ValueError, match=rf"unknown \w+Config settings: {key}$"):
        RunConfig.from_dict(data)


def test_missing_keys_and_parts_take_their_defaults() -> None:
    data = custom_run().to_dict()
    del data["audio"]["n_mels"]
    del data["train"]
    back = RunConfig.from_dict(data)
    assert back.model == custom_run().model
    assert back.audio.n_mels == AudioConfig().n_mels and back.audio.sample_rate == 22_050
    assert back.train == TrainConfig()


def test_an_empty_dict_is_the_default_run() -> None:
    assert RunConfig.from_dict({}) == RunConfig()


@pytest.mark.parametrize(
    ("cls", "obj"),
    [
        (AudioConfig, AudioConfig(compression="power")),
        (EpisodeConfig, EpisodeConfig(1, 1, 0)),
        (SplitConfig, SplitConfig(val_classes=("Oboe",))),
    ],
)
def test_field_level_round_trip(cls: type, obj: object) -> None:
    assert from_dict(cls, to_dict(obj)) == obj


def test_derived_properties() -> None:
    assert AudioConfig(sample_rate=16_000, excerpt_seconds=0.25).excerpt_samples == 4000
    assert EpisodeConfig(ways=5, shots=5, queries=15).clips_per_class == 20


def test_training_episodes_default_to_24_way_5_shot_5_query() -> None:
    assert RunConfig().episode == TRAIN_EPISODE == EpisodeConfig(ways=24, shots=5, queries=5)


def test_pitch_warps_are_on_by_default_and_off_in_the_tutorial_preset() -> None:
    assert AugmentConfig().pitch_semitones == 8.0
    assert tutorial_preset().augment.pitch_semitones == 0.0


def test_tutorial_preset_is_the_tutorial_and_keeps_the_runs_own_settings() -> None:
    base = RunConfig(
        train=TrainConfig(steps=77, seed=5, accelerator="cpu", devices=2, val_every=7, learning_rate=5e-4),
        split=SplitConfig(train_classes=("A", "B"), test_classes=("C",)),
    )
    tut = tutorial_preset(base)
    assert tut.model == ModelConfig(
        backbone="tutorial", channels=(32, 64, 128, 256, 512), input_norm="none", embedding_norm="none"
    )
    assert (tut.audio.n_fft, tut.audio.hop_length, tut.audio.n_mels, tut.audio.compression) == (400, 200, 64, "power")
    assert tut.episode == EpisodeConfig(5, 5, 20)
    aug = tut.augment
    assert (aug.gain_db, aug.eq_db, aug.max_shift_bins, aug.spec_time_masks, aug.spec_freq_masks) == (0, 0, 0, 0, 0)
    assert (tut.train.optimizer, tut.train.learning_rate) == ("adam", 1e-3)  # a constant 1e-3
    assert tut.split == base.split
    assert tut.train == replace(base.train, optimizer="adam", learning_rate=1e-3)  # length, seed, devices kept


def test_the_tutorial_preset_trains_on_tinysols_instruments_unless_told_otherwise() -> None:
    assert tutorial_preset().split.train_classes == DEFAULT_TRAIN_CLASSES  # as the tutorial; drums have too few clips
    assert tutorial_preset().split.test_classes == SplitConfig().test_classes


def test_presets_by_name() -> None:
    base = RunConfig(train=TrainConfig(steps=3))
    assert PRESETS["default"](base) is base
    assert PRESETS["tutorial"](base) == tutorial_preset(base)
    assert set(PRESETS) == {"default", "tutorial"}
