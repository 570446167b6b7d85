"""Configuration records: plain-dict round trips that checkpoints and run files rely on."""

from __future__ import annotations

import json

import pytest

from fslcli.config import (
    AudioConfig,
    EpisodeConfig,
    ModelConfig,
    RunConfig,
    SplitConfig,
    TrainConfig,
    from_dict,
    to_dict,
)


def custom_run() -> RunConfig:
    return RunConfig(
        audio=AudioConfig(
            sample_rate=22_050, excerpt_seconds=0.5, f_max=8000.0, compression="power", frequency_scale="log"
        ),
        model=ModelConfig(
            backbone="resnet",
            channels=(8, 16),
            embedding_dim=32,
            distance="cosine",
            input_norm="clip",
            pooling="time",
            dropout=0.25,
        ),
        episode=EpisodeConfig(ways=3, shots=2, queries=4),
        train=TrainConfig(steps=7, seed=3, val_every=2),
        split=SplitConfig(train_classes=("A", "B"), test_classes=("C",), val_classes=("D",), val_fold=1),
        eval_windows=5,
    )


@pytest.mark.parametrize("config", [RunConfig(), custom_run()], ids=["default", "custom"])
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
    assert data["model"]["channels"] == [8, 16]
    assert data["split"]["test_classes"] == ["C"]
    assert data["eval_windows"] == 5
    json.dumps(data)  # no dataclasses or tuples left that JSON would mangle


def test_unknown_keys_are_ignored_and_missing_keys_default() -> None:
    data = custom_run().to_dict()
    data["model"]["from_the_future"] = 1
    data["brand_new_section"] = {"x": 1}
    del data["audio"]["n_mels"]
    del data["train"]
    back = RunConfig.from_dict(data)
    assert back.model == custom_run().model
    assert back.audio.n_mels == AudioConfig().n_mels
    assert back.train == TrainConfig()


@pytest.mark.parametrize(
    ("cls", "obj"),
    [
        (AudioConfig, AudioConfig(f_max=None)),
        (EpisodeConfig, EpisodeConfig(1, 1, 0)),
        (SplitConfig, SplitConfig(val_classes=("Oboe",))),
    ],
)
def test_field_level_round_trip(cls: type, obj: object) -> None:
    assert from_dict(cls, to_dict(obj)) == obj


def test_derived_properties() -> None:
    assert AudioConfig(sample_rate=16_000, excerpt_seconds=0.25).excerpt_samples == 4000
    assert EpisodeConfig(ways=5, shots=5, queries=15).clips_per_class == 20
