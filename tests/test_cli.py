"""The ``fsl`` command line, driven through CliRunner and, end to end, as a subprocess."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fslcli import __version__
from fslcli.cli import app

FSL = Path(sys.executable).with_name("fsl")
COMMANDS = [
    ["download"],
    ["train"],
    ["eval"],
    ["embed"],
    ["predict"],
    ["plot-episode"],
    ["plot-embeddings"],
    ["info"],
    ["models"],
    ["cache"],
    ["cache", "info"],
    ["cache", "clear"],
]
SMALL_EPISODES = ["--ways", "3", "--shots", "2", "--queries", "3"]


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def flat(text: str) -> str:
    """Rich wraps lines at 80 columns under CliRunner: compare text with whitespace collapsed."""
    return " ".join(text.split())


@pytest.mark.parametrize("command", [[], *COMMANDS], ids=lambda c: " ".join(c) or "fsl")
def test_help_for_every_command(runner: CliRunner, command: list[str]) -> None:
    res = runner.invoke(app, [*command, "--help"])
    assert res.exit_code == 0, res.output
    assert "Usage" in res.stdout


def test_version(runner: CliRunner) -> None:
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.stdout.strip() == f"fslcli {__version__}"


# --- download ----------------------------------------------------------------------------


@pytest.fixture
def tiny_render(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """Make `fsl download tinysol-gm` render one note of the Violin at 8 kHz (3 files), whatever it
    asks for; records the instruments each call asked for."""
    from fslcli.datasets import tinysol_gm
    from fslcli.datasets.instruments import BY_NAME

    real = tinysol_gm.render_tinysol_gm
    asked: list[tuple[str, ...]] = []

    def tiny(home, soundfont=None, seed=0, *, instruments, **kw):
        asked.append(tuple(i.full for i in instruments))
        tiny_only = {"instruments": (BY_NAME["Violin"],), "max_notes_per_instrument": 1, "sample_rate": 8_000}
        return real(home, soundfont, seed, **{**kw, **tiny_only})

    monkeypatch.setattr(tinysol_gm, "render_tinysol_gm", tiny)
    return asked


def test_download_tinysol_gm_renders_every_gm_sound_or_tinysols_only(
    runner: CliRunner, tmp_path: Path, tiny_render: list[tuple[str, ...]]
) -> None:
    from fslcli.datasets.general_midi import ALL_INSTRUMENTS
    from fslcli.datasets.instruments import INSTRUMENTS

    res = runner.invoke(app, ["download", "tinysol-gm", "--data-home", str(tmp_path / "all")])
    assert res.exit_code == 0, res.output
    assert "Rendered 3 files of 1 instruments and sounds" in flat(res.stdout)
    assert len(list((tmp_path / "all" / "audio").rglob("*.wav"))) == 3
    res = runner.invoke(app, ["download", "tinysol-gm", "--tinysol-only", "--data-home", str(tmp_path / "14")])
    assert res.exit_code == 0, res.output
    assert tiny_render == [tuple(i.full for i in ALL_INSTRUMENTS), tuple(i.full for i in INSTRUMENTS)]
    assert len(INSTRUMENTS) == 14 and len(ALL_INSTRUMENTS) > 100


def test_download_again_reuses_the_render(runner: CliRunner, tmp_path: Path, tiny_render: list) -> None:
    args = ["download", "tinysol-gm", "--tinysol-only", "--data-home", str(tmp_path / "gm")]
    assert runner.invoke(app, args).exit_code == 0
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "Already rendered with the same font and seed" in flat(res.stdout)


def test_download_examples_renders_support_and_queries(runner: CliRunner, tmp_path: Path) -> None:
    from fslcli.config import DEFAULT_TEST_CLASSES

    home = tmp_path / "examples"
    res = runner.invoke(app, ["download", "examples", "--data-home", str(home)])
    assert res.exit_code == 0, res.output
    assert f"Try: fsl predict --support {home / 'support'} {home / 'queries'}" in flat(res.stdout)
    for role in ("support", "queries"):
        assert sorted(p.name for p in (home / role).iterdir()) == sorted(DEFAULT_TEST_CLASSES)
        assert all(len(list((home / role / c).glob("*.wav"))) == 5 for c in DEFAULT_TEST_CLASSES)
    for c in DEFAULT_TEST_CLASSES:
        support = {p.name for p in (home / "support" / c).glob("*.wav")}
        queries = {p.name for p in (home / "queries" / c).glob("*.wav")}
        assert not support & queries and {p.name for p in (home / "all" / c).glob("*.wav")} == support | queries
    res = runner.invoke(app, ["download", "examples", "--data-home", str(home)])
    assert res.exit_code == 1 and "is not empty; pass --force" in flat(res.stderr)


# --- train -------------------------------------------------------------------------------


def test_train_refuses_a_non_empty_out_without_force(runner: CliRunner, gm_home: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("keep me")
    res = runner.invoke(app, ["train", "--data-home", str(gm_home), "--steps", "1", "--out", str(run)])
    assert res.exit_code == 1
    assert "is not empty; pass --force" in flat(res.stderr)
    assert "Traceback" not in res.output
    assert [p.name for p in run.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--backbone", "conv"],
        ["train", "--train-ways", "10"],
        ["train", "--train-queries", "5"],
        ["train", "--input-norm", "band"],
        ["train", "--embedding-norm", "none"],
        ["train", "--members", "2"],
        ["train", "--class-loss-weight", "1"],
        ["eval", "--shifts", "2"],
        ["eval", "--pitch-shifts", "-4,4"],
        ["eval", "--support-cov-weight", "0.5"],
    ],
    ids=lambda a: " ".join(a),
)
def test_retired_options_are_usage_errors(runner: CliRunner, args: list[str]) -> None:
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "No such option" in flat(res.output) and args[1] in res.output


@pytest.fixture
def no_fit(monkeypatch: pytest.MonkeyPatch) -> list:
    """Replace training with a stand-in that records the config it was given."""
    from fslcli import training
    from fslcli.training import FitResult

    seen: list = []

    def fake_fit(config, cache, *, train_pool, val_pool, source, run_dir, **kwargs):
        seen.append(config)
        return FitResult(run_dir, run_dir / "model.pt", 0.5, 1, 0.0, config.train.steps, True)

    monkeypatch.setattr(training, "fit", fake_fit)
    return seen


def test_train_episode_options_shape_training_capped_at_the_classes(
    runner: CliRunner, gm_home: Path, tmp_path: Path, no_fit: list
) -> None:
    from fslcli.config import EpisodeConfig

    res = runner.invoke(app, ["train", "--data-home", str(gm_home), "--steps", "3", "--out", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    # Default 24-way 5-shot 5-query; the render has 7 training classes (2 left out for sharing recordings).
    assert "training on 7 classes in 7-way 5-shot 5-query episodes" in flat(res.stderr)
    assert "left out of training because they share recordings" in flat(res.stderr)
    assert no_fit[-1].episode == EpisodeConfig(24, 5, 5)  # capped when episodes are drawn, not in the settings
    args = ["train", "--data-home", str(gm_home), "--ways", "3", "--shots", "2", "--queries", "4"]
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    assert "in 3-way 2-shot 4-query episodes" in flat(res.stderr)
    assert no_fit[-1].episode == EpisodeConfig(3, 2, 4)
    assert no_fit[-1].split.train_classes is not None and len(no_fit[-1].split.train_classes) == 7


def test_train_preset_tutorial(runner: CliRunner, tmp_path: Path, no_fit: list) -> None:
    from dataclasses import replace

    from conftest import write_folder_dataset

    from fslcli.config import tutorial_preset

    data = write_folder_dataset(tmp_path / "data", per_class=40, seconds=0.1)  # 5 + 20 a class, after validation
    args = ["train", "--data-dir", str(data), "--preset", "tutorial", "--steps", "3", "--seed", "2"]
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    config = no_fit[-1]
    assert config == tutorial_preset(replace(config, train=replace(config.train, optimizer="adamw")))
    assert (config.train.steps, config.train.seed, config.model.backbone) == (3, 2, "tutorial")
    assert config.split.train_classes == ("Bright", "Dark", "Noisy")  # folder data keeps its own split
    saved = json.loads((tmp_path / "run" / "run.json").read_text())
    assert saved["settings"]["model"]["backbone"] == "tutorial"


def test_train_preset_keeps_the_episode_options_given(
    runner: CliRunner, folder_data: Path, tmp_path: Path, no_fit: list
) -> None:
    from fslcli.config import EpisodeConfig

    args = ["train", "--data-dir", str(folder_data), "--preset", "tutorial", "--ways", "3", "--shots", "2"]
    res = runner.invoke(app, [*args, "--queries", "3", "--steps", "1", "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    assert no_fit[-1].episode == EpisodeConfig(3, 2, 3)


def test_train_on_two_libraries_records_both(runner: CliRunner, gm_home: Path, tmp_path: Path) -> None:
    """``--data-home`` twice: one model from both libraries, which its file, info and eval know."""
    import shutil

    from conftest import tiny_train_args

    other = tmp_path / "other-library"
    shutil.copytree(gm_home, other)
    run = tmp_path / "run"
    res = runner.invoke(app, [*tiny_train_args(gm_home, run), "--data-home", str(other)])
    assert res.exit_code == 0, res.output
    assert f"tinysol-gm at {gm_home} + tinysol-gm at {other}: 420 clips" in flat(res.stderr)
    saved = json.loads((run / "run.json").read_text())
    assert [s["path"] for s in saved["sources"]] == [str(gm_home), str(other)]
    from fslcli.workflows import model_info

    assert dict(model_info(run / "model.pt"))["data"] == f"tinysol-gm at {gm_home} + tinysol-gm at {other}"
    # Either library is one the model was trained on; without --data-home eval reads the first.
    res = runner.invoke(app, ["eval", str(run / "model.pt"), "--json", "--episodes", "2", *SMALL_EPISODES])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["settings"]["dataset"]["path"] == str(gm_home)
    res = runner.invoke(app, [*tiny_train_args(gm_home, tmp_path / "again"), "--data-home", str(gm_home)])
    assert res.exit_code == 1 and "is given twice; give each data home once" in flat(res.stderr)


# --- eval --------------------------------------------------------------------------------


def eval_json(runner: CliRunner, model: Path | None, *extra: str) -> dict:
    args = ["eval", *([str(model)] if model else []), "--json", "--episodes", "20", *SMALL_EPISODES, *extra]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert res.stdout.count("\n") == 1 and res.stdout.endswith("\n")  # one line: one JSON object
    return json.loads(res.stdout)


def test_eval_json(runner: CliRunner, trained_model: Path) -> None:
    r = eval_json(runner, trained_model)
    for key in ("mean_accuracy", "ci95_half_width", "episodes", "settings", "checkpoint", "per_class", "confusion"):
        assert key in r, key
    assert r["episodes"] == 20
    settings = r["settings"]
    assert set(settings) == {"ways", "shots", "queries", "seed", "group_by", "windows", "dataset", "test_classes"}
    assert (settings["ways"], settings["shots"], settings["queries"], settings["seed"]) == (3, 2, 3, 0)
    assert (settings["group_by"], settings["windows"]) == ("source", 2)  # one excerpt at its onset, one at its end
    assert settings["dataset"]["kind"] == "tinysol-gm"
    assert r["checkpoint"]["path"] == str(trained_model)
    assert r["checkpoint"]["sha256"] == hashlib.sha256(trained_model.read_bytes()).hexdigest()
    classes = r["confusion"]["classes"]
    assert set(classes) == set(r["per_class"]) == {"Bassoon", "Viola", "Trumpet in C", "Bass Tuba", "Alto Saxophone"}
    matrix = np.array(r["confusion"]["matrix"])
    assert matrix.shape == (5, 5) and matrix.sum() == 20 * 3 * 3
    assert 0.0 <= r["mean_accuracy"] <= 1.0 and r["ci95_half_width"] >= 0
    again = eval_json(runner, trained_model)
    r.pop("seconds", None), again.pop("seconds", None)
    assert again == r  # the same seed gives the same numbers


def test_eval_groups_by_source_and_says_so(runner: CliRunner, trained_model: Path) -> None:
    grouped = eval_json(runner, trained_model)
    free = eval_json(runner, trained_model, "--group-by", "none")
    assert grouped["settings"]["group_by"] == "source" and free["settings"]["group_by"] == "none"
    res = runner.invoke(app, ["eval", str(trained_model), "--episodes", "5", *SMALL_EPISODES])
    assert res.exit_code == 0, res.output
    assert "support and query from different recordings" in flat(res.stdout)
    # This render's Viola (test) plays the Violin's samples, but training left the Violin out.
    assert "optimistic" not in res.stderr


def test_eval_warns_when_a_test_class_shares_a_training_classes_recordings(
    runner: CliRunner, trained_model: Path, tmp_path: Path
) -> None:
    import torch

    payload = torch.load(trained_model, map_location="cpu", weights_only=True)
    payload["settings"]["split"]["train_classes"].append("Violin")  # trained with --train-classes ...,Violin
    model = tmp_path / "model.pt"
    torch.save(payload, model)
    res = runner.invoke(app, ["eval", str(model), "--episodes", "2", *SMALL_EPISODES])
    assert res.exit_code == 0, res.output
    assert "Violin (train) and Viola (test) share" in flat(res.stderr) and "optimistic" in res.stderr


@pytest.mark.parametrize(("given", "recorded"), [("3", 3), ("ALL", "all")])
def test_eval_windows_are_recorded(runner: CliRunner, trained_model: Path, given: str, recorded: object) -> None:
    r = eval_json(runner, trained_model, "--episodes", "3", "--windows", given)
    assert r["settings"]["windows"] == recorded


def test_eval_bad_windows_is_one_line(runner: CliRunner, trained_model: Path) -> None:
    res = runner.invoke(app, ["eval", str(trained_model), "--windows", "0"])
    assert res.exit_code == 1
    assert res.stderr.strip() == "error: --windows 0: give a number of windows (1 or more) or 'all'"


@pytest.fixture
def shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty folder of bundled models (what this installation ships is not under test)."""
    from fslcli import models

    folder = tmp_path / "shipped"
    folder.mkdir()
    monkeypatch.setattr(models, "FOLDER", folder)
    return folder


def test_eval_default_model_is_the_newest_run(
    runner: CliRunner, trained_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shipped: Path
) -> None:
    shutil.copy(trained_model, shipped / "default.pt")  # a run of the user's own comes first
    for name, age in (("old", 1000), ("new", 0), ("older", 2000)):
        (tmp_path / "runs" / name).mkdir(parents=True)
        dst = tmp_path / "runs" / name / "model.pt"
        shutil.copy(trained_model, dst)
        os.utime(dst, (time.time() - age, time.time() - age))
    monkeypatch.chdir(tmp_path)
    r = eval_json(runner, None, "--episodes", "3")
    assert Path(r["checkpoint"]["path"]) == Path("runs/new/model.pt")


def test_eval_without_a_run_uses_the_bundled_model_and_says_so(
    runner: CliRunner, trained_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shipped: Path
) -> None:
    shutil.copy(trained_model, shipped / "default.pt")
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["eval", "--json", "--episodes", "3", *SMALL_EPISODES])
    assert res.exit_code == 0, res.output
    assert Path(json.loads(res.stdout)["checkpoint"]["path"]) == shipped / "default.pt"
    assert "using the model that ships with fslcli (default.pt)" in flat(res.stderr)


def test_eval_without_any_model_says_how_to_get_one(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shipped: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["eval"])
    assert res.exit_code == 1
    assert "fsl train" in res.stderr and "ships none" in flat(res.stderr) and "Traceback" not in res.output


def test_eval_table(runner: CliRunner, trained_model: Path) -> None:
    res = runner.invoke(app, ["eval", str(trained_model), "--episodes", "5", *SMALL_EPISODES])
    assert res.exit_code == 0, res.output
    text = flat(res.stdout)
    assert "3-way 2-shot, 5 episodes" in text and "Mean accuracy" in text and "95% CI" in text
    assert "Per-class accuracy" in text and "Bass Tuba" in text


# --- embed / predict ---------------------------------------------------------------------


def test_embed_writes_comparison_space_embeddings(
    runner: CliRunner, trained_model: Path, folder_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "emb.npz"
    inputs = [str(folder_data / "Dark"), str(folder_data / "Odd" / "odd_00.wav")]
    res = runner.invoke(app, ["embed", str(trained_model), *inputs, "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "Wrote 11 embeddings of dimension 256" in flat(res.stdout)
    with np.load(out, allow_pickle=False) as z:
        emb, paths, labels = z["embeddings"], z["paths"], z["labels"]
    assert emb.shape == (11, 256) and emb.dtype == np.float32
    # in the space the model compares in: whitened to unit length
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert labels.tolist() == ["Dark"] * 10 + ["Odd"]
    assert paths[-1] == str(folder_data / "Odd" / "odd_00.wav")


def test_embed_model_is_a_file_a_run_folder_or_the_newest_run(
    runner: CliRunner, trained_model: Path, folder_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "runs" / "a").mkdir(parents=True)
    shutil.copy(trained_model, tmp_path / "runs" / "a" / "model.pt")
    monkeypatch.chdir(tmp_path)
    written = {}
    for name, model in (("file", [str(trained_model)]), ("folder", ["runs/a"]), ("newest", [])):
        res = runner.invoke(app, ["embed", *model, str(folder_data / "Dark"), "--windows", "1", "--out", f"{name}.npz"])
        assert res.exit_code == 0, res.output
        written[name] = np.load(f"{name}.npz")["embeddings"]
    np.testing.assert_array_equal(written["file"], written["folder"])
    np.testing.assert_array_equal(written["file"], written["newest"])
    res = runner.invoke(app, ["embed", str(trained_model), "--out", "x.npz"])
    assert res.exit_code == 1 and "give audio files or folders after MODEL" in flat(res.stderr)


def test_embed_refuses_unknown_suffix(
    runner: CliRunner, trained_model: Path, folder_data: Path, tmp_path: Path
) -> None:
    res = runner.invoke(app, ["embed", str(trained_model), str(folder_data), "--out", str(tmp_path / "x.txt")])
    assert res.exit_code == 1 and "unknown format .txt; use .npz, .csv, .parquet" in flat(res.stderr)
    assert not (tmp_path / "x.txt").exists()


@pytest.fixture
def support_and_queries(folder_data: Path, tmp_path: Path) -> tuple[Path, Path]:
    """Support: Bright x3, Dark x1, Odd x2; queries: two of each in class-named subfolders."""
    support, queries = tmp_path / "support", tmp_path / "queries"
    for name, n in (("Bright", 3), ("Dark", 1), ("Odd", 2)):
        files = sorted((folder_data / name).glob("*.wav"))
        (support / name).mkdir(parents=True)
        (queries / name).mkdir(parents=True)
        for f in files[:n]:
            shutil.copy(f, support / name / f.name)
        for f in files[-2:]:
            shutil.copy(f, queries / name / f.name)
    return support, queries


def test_predict_json(runner: CliRunner, trained_model: Path, support_and_queries: tuple[Path, Path]) -> None:
    support, queries = support_and_queries
    res = runner.invoke(
        app, ["predict", str(trained_model), str(queries), "--support", str(support), "--json", "--top-k", "3"]
    )
    assert res.exit_code == 0, res.output
    records = json.loads(res.stdout)
    assert len(records) == 6
    for rec in records:
        assert rec["true_class"] == Path(rec["path"]).parent.name
        assert rec["predicted"] in {"Bright", "Dark", "Odd"}
        assert [t["class"] for t in rec["top_k"]][0] == rec["predicted"] and len(rec["top_k"]) == 3
        assert sum(t["probability"] for t in rec["top_k"]) == pytest.approx(1.0, abs=1e-4)
        assert rec["probability"] >= rec["runner_up_probability"]


def test_predict_and_embed_take_onset_windows(
    runner: CliRunner, trained_model: Path, support_and_queries: tuple[Path, Path], tmp_path: Path
) -> None:
    support, queries = support_and_queries
    args = ["predict", str(trained_model), str(queries), "--support", str(support), "--json"]
    res = runner.invoke(app, [*args, "--windows", "1"])
    assert res.exit_code == 0, res.output
    assert len(json.loads(res.stdout)) == 6
    out = tmp_path / "emb.npz"
    res = runner.invoke(app, ["embed", str(trained_model), str(queries), "--windows", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert np.load(out)["embeddings"].shape[0] == 6
    res = runner.invoke(app, [*args, "--windows", "0"])
    assert res.exit_code == 1 and "--windows 0: give a number of windows" in flat(res.stderr)


def test_predict_table_and_reject(
    runner: CliRunner, trained_model: Path, support_and_queries: tuple[Path, Path]
) -> None:
    support, queries = support_and_queries
    res = runner.invoke(app, ["predict", str(trained_model), str(queries), "--support", str(support)])
    assert res.exit_code == 0, res.output
    text = flat(res.stdout)
    assert "predicted" in text and "runner-up" in text
    assert "Accuracy:" in text and "/6 =" in text
    assert "Confusion" in text
    res = runner.invoke(app, ["predict", str(trained_model), str(queries), "--support", str(support), "--reject"])
    assert res.exit_code == 0, res.output
    assert "unknown" in flat(res.stdout)  # the confusion table gains an 'unknown' column


# --- plots ---------------------------------------------------------------------------------


@pytest.mark.parametrize("options", [[], ["--method", "pca", "--dims", "3"]], ids=["tsne-2d", "pca-3d"])
def test_plot_episode(runner: CliRunner, trained_model: Path, tmp_path: Path, options: list[str]) -> None:
    out = tmp_path / "episode.html"
    res = runner.invoke(app, ["plot-episode", str(trained_model), "--out", str(out), *SMALL_EPISODES, *options])
    assert res.exit_code == 0, res.output
    assert "Episode 0: accuracy" in flat(res.stdout)
    html = out.read_text(encoding="utf-8")
    assert html.lower().startswith("<!doctype html>") and "plotly" in html.lower()
    figure = html[html.rindex("Plotly.newPlot(") :]  # the figure, after the inlined plotly.js,
    figure = figure[: figure.index('"template"')]  # its traces, before the layout's template
    traces = re.findall(r'"type":\s*"(scatter3d|scatter)"', figure)
    assert traces and set(traces) == ({"scatter3d"} if "--dims" in options else {"scatter"})


def test_plot_embeddings(runner: CliRunner, trained_model: Path, tmp_path: Path) -> None:
    from fslcli.checkpoint import load_model
    from fslcli.datasets import load_clips

    loaded = load_model(trained_model)
    n_test = sum(c.label in loaded.config.split.test_classes for c in load_clips(loaded.source).clips)
    out = tmp_path / "emb.html"
    res = runner.invoke(app, ["plot-embeddings", str(trained_model), "--out", str(out), "--method", "pca"])
    assert res.exit_code == 0, res.output
    assert f"({n_test + 5} points)" in flat(res.stdout)  # every test clip and 5 prototypes
    assert out.stat().st_size > 10_000


# --- info / cache --------------------------------------------------------------------------


def test_info(
    runner: CliRunner, trained_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shipped: Path
) -> None:
    res = runner.invoke(app, ["info", str(trained_model)])
    assert res.exit_code == 0, res.output
    text = flat(res.stdout)
    assert hashlib.sha256(trained_model.read_bytes()).hexdigest()[:16] in text.replace(" ", "")
    # one row per field (values wrap in an 80-column table; model_info's rows: tests/test_workflows.py)
    for field, value in (
        ("trained on", "7 classes: Accordion"),
        ("tested on", "Bassoon, Viola"),
        ("training episodes", "up to 3-way, 2-shot, 3-query"),
        ("model", "conv [32, 64, 128, 256] -> 256, input norm band"),
        ("compared by", "squared Euclidean distance, embeddings whitened"),
        ("training", "2 steps, seed 0, adamw lr 0.001"),
    ):
        assert re.search(rf"│ {re.escape(field)} +│ {re.escape(value)}", text), field
    (tmp_path / "runs" / "a").mkdir(parents=True)
    shutil.copy(trained_model, tmp_path / "runs" / "a" / "model.pt")
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["info"])
    assert res.exit_code == 0 and "runs/a/model.pt" in res.stdout


def test_models_lists_the_bundled_models_then_the_runs(
    runner: CliRunner, trained_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shipped: Path
) -> None:
    shutil.copy(trained_model, shipped / "default.pt")
    for name, age in (("mine", 0), ("broken", 100)):
        path = tmp_path / "runs" / name / "model.pt"
        path.parent.mkdir(parents=True)
        path.write_bytes(trained_model.read_bytes() if name == "mine" else b"")
        os.utime(path, (time.time() - age, time.time() - age))
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["models"])
    assert res.exit_code == 0, res.output
    rows = [line.split("│")[1:3] for line in res.stdout.splitlines() if line.startswith("│")]
    named = [(name.strip(), kind.strip()) for name, kind in rows if name.strip()]
    assert named == [("default", "bundled"), ("mine", "run"), ("broken", "run")]  # runs newest first
    assert "unreadable" in res.stdout


@pytest.mark.parametrize("content", [b"", b"not a model", b"PK\x03\x04broken zip"])
def test_info_on_a_damaged_file_is_one_line(runner: CliRunner, tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "model.pt"
    bad.write_bytes(content)
    res = runner.invoke(app, ["info", str(bad)])
    assert res.exit_code == 1
    assert res.stderr.startswith("error:") and res.stderr.count("\n") == 1
    assert "Traceback" not in res.output


@pytest.mark.parametrize(
    "args",
    [
        ["info", "{missing}"],
        ["eval", "{missing}"],
        ["embed", "{missing}", "{folder}"],
        ["predict", "{missing}", "{folder}", "--support", "{folder}"],
        ["plot-episode", "{missing}"],
    ],
    ids=lambda a: a[0],
)
def test_a_failed_command_prints_one_line(runner: CliRunner, tmp_path: Path, args: list[str]) -> None:
    missing = tmp_path / "missing.pt"
    res = runner.invoke(app, [a.format(missing=missing, folder=tmp_path) for a in args])
    assert res.exit_code == 1 and res.stdout == ""
    assert (
        res.stderr
        == f"error: model file {missing} does not exist; train one with `fsl train` or give the path to a model.pt\n"
    )


def test_cache_info_and_clear(runner: CliRunner, folder_data: Path, tmp_path: Path) -> None:
    from fslcli.datasets.folder import read_folder
    from fslcli.features import open_cache

    cache_dir = tmp_path / "cache"
    open_cache(read_folder(folder_data).clips[:4], 16_000, cache_dir)
    res = runner.invoke(app, ["cache", "info", "--cache-dir", str(cache_dir)])
    assert res.exit_code == 0, res.output
    assert "1 cache(s)" in res.stdout and "16000" in res.stdout
    res = runner.invoke(app, ["cache", "clear", "--cache-dir", str(cache_dir)])
    assert res.exit_code == 0 and "Freed" in res.stdout
    assert not any(cache_dir.iterdir())
    res = runner.invoke(app, ["cache", "info", "--cache-dir", str(cache_dir)])
    assert "0 cache(s)" in res.stdout


def test_cache_commands_follow_fsl_cache_dir(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FSL_CACHE_DIR", str(tmp_path / "envcache"))
    res = runner.invoke(app, ["cache", "info"])
    assert res.exit_code == 0 and "envcache" in flat(res.stdout)


# --- end to end, as a subprocess ------------------------------------------------------------


def run_fsl(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    exe = [str(FSL)] if FSL.exists() else [sys.executable, "-m", "fslcli"]
    return subprocess.run([*exe, *args], capture_output=True, text=True, timeout=timeout)


def test_e2e_help_and_version() -> None:
    res = run_fsl("--help")
    assert res.returncode == 0
    for command in (
        "download",
        "train",
        "eval",
        "embed",
        "predict",
        "plot-episode",
        "plot-embeddings",
        "info",
        "cache",
    ):
        assert command in res.stdout
    res = run_fsl("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"fslcli {__version__}"


def test_e2e_cli_import_stays_light() -> None:
    code = "import sys, fslcli.cli; print(sorted(m for m in ('torch', 'pytorch_lightning', 'librosa', 'plotly', 'sklearn') if m in sys.modules))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_e2e_eval_json_and_error(trained_model: Path, tmp_path: Path) -> None:
    res = run_fsl("eval", str(trained_model), "--json", "--episodes", "5", *SMALL_EPISODES)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["episodes"] == 5
    res = run_fsl("eval", str(tmp_path / "missing.pt"))
    assert res.returncode == 1
    assert res.stdout == "" and res.stderr.strip().startswith("error:") and "does not exist" in res.stderr
    assert "Traceback" not in res.stderr  # (the error's one line: test_a_failed_command_prints_one_line)
