"""The model file: written and read back whole, and files of other versions refused in one line."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_net

from fslcli.checkpoint import default_model, load_model, newest_run, save_model, settings_config
from fslcli.config import AudioConfig, ModelConfig, RunConfig, SplitConfig
from fslcli.datasets import DataSource
from fslcli.errors import CheckpointError

CONFIG = RunConfig(
    audio=AudioConfig(excerpt_seconds=0.25, n_mels=32),
    model=ModelConfig(channels=(4, 8), embedding_dim=16),
    split=SplitConfig(train_classes=("A", "B"), test_classes=("C",)),
)


def settings() -> dict:
    """The settings of a model file this version writes."""
    return CONFIG.to_dict()


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    net = make_tiny_net()
    net.calibrate(torch.randn(12, net.dim), torch.arange(12) % 3)  # buffers away from their defaults
    path = tmp_path / "model.pt"
    save_model(path, net, CONFIG, DataSource("folder", tmp_path / "data"), {"steps": 3, "note": "ok"})
    return path


def test_a_model_file_rebuilds_the_model_alone(model_file: Path) -> None:
    saved = torch.load(model_file, map_location="cpu", weights_only=True)  # plain values and tensors only
    loaded = load_model(model_file)
    assert loaded.config == CONFIG
    assert loaded.source == DataSource("folder", model_file.parent / "data")
    assert loaded.meta == {"steps": 3, "note": "ok"}
    assert loaded.sha256 == hashlib.sha256(model_file.read_bytes()).hexdigest()
    assert saved["splits"] == {"train": ["A", "B"], "val": [], "test": ["C"], "val_fold": 4}
    state = loaded.net.state_dict()
    assert state.keys() == saved["state_dict"].keys()
    assert all(torch.equal(state[k], saved["state_dict"][k]) for k in state)
    assert not loaded.net.training  # ready to embed
    assert load_model(model_file.parent).path == model_file  # a run folder names its model.pt


def test_settings_of_this_version_load_as_they_are() -> None:
    assert settings_config(settings()) == CONFIG


@pytest.mark.parametrize(
    ("part", "key", "value"),
    [
        ("model", "members", 1),  # settings of the previous version, even at their off values
        ("model", "eval_pitch_shifts", [-4, 4]),
        ("audio", "frequency_scale", "mel"),
        ("train", "schedule", "cosine"),
        ("augment", "random_crop", True),
        ("model", "from_the_future", 1),
    ],
)
def test_a_setting_this_version_does_not_have_is_refused_naming_it(part: str, key: str, value: object) -> None:
    data = settings()
    data[part][key] = value
    with pytest.raises(ValueError, match=f"unknown {type(getattr(CONFIG, part)).__name__} settings: {key}"):
        settings_config(data)


def test_an_unknown_part_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown settings eval_windows"):
        settings_config({**settings(), "eval_windows": 1})


@pytest.mark.parametrize(("part", "key"), [("model", "whiten_shrinkage"), ("audio", "n_mels")])
def test_a_missing_audio_or_model_setting_is_refused(part: str, key: str) -> None:
    data = settings()
    del data[part][key]
    with pytest.raises(ValueError, match=rf"no {part} setting {key}"):
        settings_config(data)


def test_missing_training_parts_take_their_defaults() -> None:
    data = settings()
    del data["train"], data["augment"]
    config = settings_config(data)
    assert config.train == RunConfig().train and config.augment == RunConfig().augment
    assert config.model == CONFIG.model


def test_a_part_that_is_not_a_table_is_refused() -> None:
    with pytest.raises(ValueError, match="its 'model' settings are not a table"):
        settings_config({**settings(), "model": [1, 2]})


@pytest.mark.parametrize(
    "change",
    ["retired setting", "missing setting", "missing weights"],
)
def test_a_file_from_another_version_is_refused_in_one_line(model_file: Path, tmp_path: Path, change: str) -> None:
    payload = torch.load(model_file, map_location="cpu", weights_only=True)
    if change == "retired setting":
        payload["settings"]["model"]["members"] = 2
    elif change == "missing setting":
        del payload["settings"]["model"]["support_cov_weight"]
    else:
        del payload["state_dict"]["whitener"]
    old = tmp_path / "old.pt"
    torch.save(payload, old)
    with pytest.raises(CheckpointError) as err:
        load_model(old)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{old} was written by another version of fslcli (")
    assert message.endswith("retrain it with `fsl train`")


def test_newest_run_is_the_most_recent_model(tmp_path: Path, model_file: Path) -> None:
    assert newest_run(tmp_path / "runs") is None
    for name, age in (("old", 1000), ("new", 0), ("older", 2000)):
        (tmp_path / "runs" / name).mkdir(parents=True)
        dst = tmp_path / "runs" / name / "model.pt"
        dst.write_bytes(model_file.read_bytes())
        os.utime(dst, (time.time() - age, time.time() - age))
    assert newest_run(tmp_path / "runs") == tmp_path / "runs" / "new" / "model.pt"


def test_default_model_is_the_newest_run_else_the_bundled_one(
    tmp_path: Path, model_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fslcli import models

    shipped = tmp_path / "shipped"
    shipped.mkdir()
    monkeypatch.setattr(models, "FOLDER", shipped)
    runs = tmp_path / "runs"
    with pytest.raises(
        CheckpointError, match=r"none found under .*runs/\*/model.pt \(and this installation ships none\)"
    ):
        default_model(runs)
    (shipped / "default.pt").write_bytes(model_file.read_bytes())
    path, note = default_model(runs)
    assert path == shipped / "default.pt"
    assert note is not None and "using the model that ships with fslcli (default.pt)" in note
    (runs / "mine").mkdir(parents=True)
    (runs / "mine" / "model.pt").write_bytes(model_file.read_bytes())
    assert default_model(runs) == (runs / "mine" / "model.pt", None)  # the user's own run comes first
