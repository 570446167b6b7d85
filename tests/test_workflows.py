"""The operations behind the commands that need no training: run folders, model descriptions and
the list of models (the commands themselves: tests/test_cli.py)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import make_tiny_net

from fslcli.checkpoint import save_model
from fslcli.config import AudioConfig, ModelConfig, RunConfig, SplitConfig
from fslcli.datasets import DataSource
from fslcli.errors import DataError, FslError
from fslcli.workflows import SourceChoice, check_run_dir, list_models, load_run_file, model_info

CONFIG = RunConfig(
    audio=AudioConfig(excerpt_seconds=0.25, n_mels=32),
    model=ModelConfig(channels=(4, 8), embedding_dim=16),
    split=SplitConfig(train_classes=("A", "B", "C"), test_classes=("D",)),
)
HELD_OUT = {"FluidR3_GM": {"5-shot": 0.91, "1-shot": 0.72}}
#: A shipped model's figures also name the training library's own (in-font) ones, which are not held out.
FIGURES = {"TimGM6mb (in-font)": {"5-shot": 0.97, "1-shot": 0.74}, **HELD_OUT}
RECIPE = {"command": "fsl train", "data": "tinysol-gm, every GM sound", "seed": 0, "steps": 3000}
RECIPE |= {"fslcli_version": "0.2.0", "commit": "abc1234"}


def write_model(path: Path, **meta: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(path, make_tiny_net(), CONFIG, DataSource("folder", path.parent), {"steps": 3, **meta})
    return path


def test_model_info_rows(tmp_path: Path) -> None:
    rows = dict(model_info(write_model(tmp_path / "m.pt", best_val_acc=0.5, best_step=2)))
    assert rows["trained on"] == "3 classes: A, B, C" and rows["tested on"] == "D"
    assert rows["training episodes"] == "up to 24-way, 5-shot, 5-query"
    assert rows["model"] == "conv [4, 8] -> 16, input norm band"
    assert rows["compared by"] == (
        "squared Euclidean distance, embeddings whitened (shrinkage 0.2, support covariance 0.1)"
    )
    assert rows["augmentation"] == "gain ±6 dB, EQ ±6 dB, band shifts ±2, SpecAugment masks, pitch warps ±8 semitones"
    assert rows["validation accuracy"] == "0.5000 (step 2)"
    assert "recipe" not in rows and not any(field.startswith("on ") for field in rows)


def test_model_info_of_a_shipped_model_gives_its_recipe_and_figures(tmp_path: Path) -> None:
    rows = dict(model_info(write_model(tmp_path / "m.pt", held_out=HELD_OUT, recipe=RECIPE)))
    assert rows["on FluidR3_GM"] == "5-way 5-shot 0.910, 1-shot 0.720 (grouped, 1,000 episodes)"
    assert rows["recipe"] == "fsl train: tinysol-gm, every GM sound, seed 0, 3000 steps"
    assert rows["built from"] == "fslcli 0.2.0 at commit abc1234"


def test_list_models_bundled_first_then_runs_newest_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fslcli import models

    monkeypatch.setattr(models, "FOLDER", tmp_path / "shipped")
    write_model(tmp_path / "shipped" / "default.pt", held_out=FIGURES, recipe=RECIPE)
    for name, age in (("old", 100), ("new", 0), ("bad", 50)):
        path = write_model(tmp_path / "runs" / name / "model.pt")
        if name == "bad":
            path.write_bytes(b"not a model")
        os.utime(path, (time.time() - age, time.time() - age))
    entries = list_models(tmp_path / "runs")
    assert [(e.name, e.kind) for e in entries] == [
        ("default", "bundled"),
        ("new", "run"),
        ("bad", "run"),
        ("old", "run"),
    ]
    default = entries[0]
    assert default.trained_on == "tinysol-gm, every GM sound" and default.held_out == "FluidR3_GM 0.910/0.720"
    assert entries[2].trained_on.startswith("unreadable:") and "damaged or not a model file" in entries[2].trained_on
    assert entries[1].held_out == "-"


def test_list_models_says_how_many_classes_a_run_trained_on(tmp_path: Path) -> None:
    write_model(tmp_path / "runs" / "mine" / "model.pt")
    (entry,) = [e for e in list_models(tmp_path / "runs") if e.kind == "run"]
    assert entry.trained_on == "folder: 3 classes"  # its data source kind and its training classes


def test_model_info_names_a_dozen_training_classes_and_counts_the_rest(tmp_path: Path) -> None:
    many = replace(CONFIG, split=replace(CONFIG.split, train_classes=tuple(f"c{i:02d}" for i in range(20))))
    path = tmp_path / "m.pt"
    save_model(path, make_tiny_net(), many, DataSource("folder", tmp_path), {"steps": 3})
    rows = dict(model_info(path))
    assert rows["trained on"] == f"20 classes: {', '.join(f'c{i:02d}' for i in range(12))}, and 8 more"


def test_check_run_dir(tmp_path: Path) -> None:
    check_run_dir(tmp_path / "new", force=False)  # not there yet: fine
    (tmp_path / "empty").mkdir()
    check_run_dir(tmp_path / "empty", force=False)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(FslError, match=r"is not empty; pass --force to write into it, or --resume .*full"):
        check_run_dir(tmp_path / "full", force=False)
    check_run_dir(tmp_path / "full", force=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(FslError, match="is a file; give a folder"):
        check_run_dir(tmp_path / "file", force=True)
    with pytest.raises(FslError, match=r"file is a file, so no folder can be made there"):
        check_run_dir(tmp_path / "file" / "run", force=True)


def test_load_run_file(tmp_path: Path) -> None:
    with pytest.raises(FslError, match="no run.json there"):
        load_run_file(tmp_path)
    source = DataSource("folder", tmp_path / "data")
    (tmp_path / "run.json").write_text(json.dumps({"settings": CONFIG.to_dict(), "source": source.to_dict()}))
    with pytest.raises(FslError, match="no checkpoints/last.ckpt yet"):
        load_run_file(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert load_run_file(tmp_path) == (CONFIG, (source,))
    # A run on several data homes lists them all.
    other = DataSource("folder", tmp_path / "more")
    payload = {"settings": CONFIG.to_dict(), "source": source.to_dict(), "sources": [source.to_dict(), other.to_dict()]}
    (tmp_path / "run.json").write_text(json.dumps(payload))
    assert load_run_file(tmp_path) == (CONFIG, (source, other))


def test_source_choice_falls_back_to_the_models_own_data(tmp_path: Path) -> None:
    own = DataSource("tinysol-gm", tmp_path / "gm")
    assert SourceChoice().resolve(own) == own
    assert SourceChoice(data_dir=tmp_path / "mine").resolve(own) == DataSource("folder", tmp_path / "mine")
    assert SourceChoice(data_home=tmp_path / "other").resolve(own) == DataSource("tinysol-gm", tmp_path / "other")
    with pytest.raises(DataError, match="give it alone"):
        SourceChoice(dataset="tinysol", data_dir=tmp_path).resolve(own)
