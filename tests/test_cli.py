"""The ``fsl`` command line, driven through CliRunner and, end to end, as a subprocess."""

from __future__ import annotations

import csv
import functools
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


def test_download_tinysol_gm_renders_then_reuses(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fslcli.datasets import tinysol_gm
    from fslcli.datasets.instruments import BY_NAME

    # The full render takes a while: the command's wiring is what is under test, on one tiny instrument.
    tiny = functools.partial(
        tinysol_gm.render_tinysol_gm, instruments=(BY_NAME["Violin"],), max_notes_per_instrument=1, sample_rate=8000
    )
    monkeypatch.setattr(tinysol_gm, "render_tinysol_gm", tiny)
    home = tmp_path / "gm"
    res = runner.invoke(app, ["download", "tinysol-gm", "--data-home", str(home)])
    assert res.exit_code == 0, res.output
    assert "Rendered 3 files for 1 instruments" in flat(res.stdout)
    assert len(list((home / "audio").rglob("*.wav"))) == 3
    res = runner.invoke(app, ["download", "tinysol-gm", "--data-home", str(home)])
    assert res.exit_code == 0, res.output
    assert "Already rendered with the same font and seed" in flat(res.stdout)


def test_download_reuses_the_shared_render(runner: CliRunner, gm_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fslcli.datasets import tinysol_gm

    monkeypatch.setattr(
        tinysol_gm, "render_tinysol_gm", functools.partial(tinysol_gm.render_tinysol_gm, max_notes_per_instrument=5)
    )
    res = runner.invoke(app, ["download", "tinysol-gm", "--data-home", str(gm_home)])
    assert res.exit_code == 0, res.output
    assert "Already rendered" in res.stdout


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


def test_train_rejects_unknown_backbone(runner: CliRunner, tmp_path: Path) -> None:
    res = runner.invoke(app, ["train", "--backbone", "vgg", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "vgg" in res.output


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
    assert r["settings"]["ways"] == 3 and r["settings"]["shots"] == 2 and r["settings"]["queries"] == 3
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
    # The model was trained on this render, whose Viola (test) plays the Violin's (train) samples.
    assert "Violin (train) and Viola (test) share" in flat(res.stderr) and "optimistic" in res.stderr


def test_eval_shifts_changes_the_embeddings_and_is_reported(runner: CliRunner, trained_model: Path) -> None:
    shifted = eval_json(runner, trained_model)  # new models average over band shifts -2..2
    plain = eval_json(runner, trained_model, "--shifts", "0")
    assert plain["settings"]["eval_shifts"] == 0 and shifted["settings"]["eval_shifts"] == 2
    assert shifted["episodes"] == plain["episodes"]
    assert shifted["per_class"] != plain["per_class"] or shifted["confusion"] != plain["confusion"]
    res = runner.invoke(app, ["eval", str(trained_model), "--shifts", "99"])
    assert res.exit_code == 1 and "--shifts 99" in res.stderr and "bands" in res.stderr


def test_eval_pitch_shifts_change_the_embeddings_and_are_reported(runner: CliRunner, trained_model: Path) -> None:
    pitched = eval_json(runner, trained_model)  # new models also average over pitch shifts -8, -4, 4, 8
    plain = eval_json(runner, trained_model, "--pitch-shifts", "none")
    assert pitched["settings"]["eval_pitch_shifts"] == [-8, -4, 4, 8] and plain["settings"]["eval_pitch_shifts"] == []
    assert pitched["per_class"] != plain["per_class"] or pitched["confusion"] != plain["confusion"]
    again = eval_json(runner, trained_model, "--pitch-shifts", "-8,-4,4,8")  # the model's own setting, given
    again.pop("seconds", None), pitched.pop("seconds", None)
    assert again == pitched
    for bad, why in (("-4,x", "whole semitones"), ("0,5", "nonzero"), ("24", "-12 to 12")):
        res = runner.invoke(app, ["eval", str(trained_model), "--pitch-shifts", bad])
        assert res.exit_code == 1 and f"--pitch-shifts {bad}" in res.stderr and why in res.stderr, res.stderr


def test_eval_support_cov_weight_changes_the_scores_and_is_reported(runner: CliRunner, trained_model: Path) -> None:
    plain = eval_json(runner, trained_model, "--support-cov-weight", "0")
    adapted = eval_json(runner, trained_model, "--support-cov-weight", "0.5")
    assert plain["settings"]["support_cov_weight"] == 0.0 and adapted["settings"]["support_cov_weight"] == 0.5
    assert adapted["per_class"] != plain["per_class"] or adapted["confusion"] != plain["confusion"]
    # 1-shot episodes have no support covariance to mix in: the same scores either way
    one_plain = eval_json(runner, trained_model, "--support-cov-weight", "0", "--shots", "1")
    one_adapted = eval_json(runner, trained_model, "--support-cov-weight", "0.5", "--shots", "1")
    assert one_plain["per_class"] == one_adapted["per_class"] and one_plain["confusion"] == one_adapted["confusion"]
    res = runner.invoke(app, ["eval", str(trained_model), "--support-cov-weight", "1"])
    assert res.exit_code == 1 and "--support-cov-weight 1.0" in res.stderr and "below 1" in res.stderr


def test_eval_default_model_is_the_newest_run(
    runner: CliRunner, trained_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, age in (("old", 1000), ("new", 0), ("older", 2000)):
        (tmp_path / "runs" / name).mkdir(parents=True)
        dst = tmp_path / "runs" / name / "model.pt"
        shutil.copy(trained_model, dst)
        os.utime(dst, (time.time() - age, time.time() - age))
    monkeypatch.chdir(tmp_path)
    r = eval_json(runner, None, "--episodes", "3")
    assert Path(r["checkpoint"]["path"]) == Path("runs/new/model.pt")


def test_eval_without_any_model_says_how_to_get_one(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["eval"])
    assert res.exit_code == 1
    assert "fsl train" in res.stderr and "Traceback" not in res.output


def test_eval_table(runner: CliRunner, trained_model: Path) -> None:
    res = runner.invoke(app, ["eval", str(trained_model), "--episodes", "5", *SMALL_EPISODES])
    assert res.exit_code == 0, res.output
    text = flat(res.stdout)
    assert "3-way 2-shot, 5 episodes" in text and "Mean accuracy" in text and "95% CI" in text
    assert "Per-class accuracy" in text and "Bass Tuba" in text


# --- embed / predict ---------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".npz", ".csv", ".parquet"])
def test_embed_writes_and_reads_back(
    runner: CliRunner, trained_model: Path, folder_data: Path, tmp_path: Path, suffix: str
) -> None:
    out = tmp_path / f"emb{suffix}"
    res = runner.invoke(
        app,
        [
            "embed",
            str(trained_model),
            str(folder_data / "Dark"),
            str(folder_data / "Odd" / "odd_00.wav"),
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "Wrote 11 embeddings" in flat(res.stdout)
    if suffix == ".npz":
        with np.load(out, allow_pickle=False) as z:
            emb, paths, labels = z["embeddings"], z["paths"], z["labels"]
        assert emb.dtype == np.float32 and paths.dtype.kind == labels.dtype.kind == "U"
    elif suffix == ".csv":
        with open(out, newline="") as f:
            rows = list(csv.reader(f))
        assert rows[0][:3] == ["path", "label", "e0"]
        paths = np.array([r[0] for r in rows[1:]])
        labels = np.array([r[1] for r in rows[1:]])
        emb = np.array([[float(v) for v in r[2:]] for r in rows[1:]])
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(out).to_pydict()
        paths, labels = np.array(table.pop("path")), np.array(table.pop("label"))
        emb = np.stack([np.asarray(table[f"e{k}"]) for k in range(len(table))], axis=1)
    assert emb.shape == (11, 256) and np.isfinite(emb).all()
    assert labels.tolist() == ["Dark"] * 10 + ["Odd"]
    assert paths[-1] == str(folder_data / "Odd" / "odd_00.wav")


def test_embed_refuses_unknown_suffix(
    runner: CliRunner, trained_model: Path, folder_data: Path, tmp_path: Path
) -> None:
    res = runner.invoke(app, ["embed", str(trained_model), str(folder_data), "--out", str(tmp_path / "x.txt")])
    assert res.exit_code == 1 and "use .npz, .csv or .parquet" in flat(res.stderr)
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
    assert res.exit_code == 2 and "--windows" in res.output


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


def test_info(runner: CliRunner, trained_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    res = runner.invoke(app, ["info", str(trained_model)])
    assert res.exit_code == 0, res.output
    text = flat(res.stdout)
    assert "fslcli-protonet v1" in text
    assert hashlib.sha256(trained_model.read_bytes()).hexdigest()[:16] in text.replace(" ", "")
    assert "3-way 2-shot 3 queries" in text and "2 steps" in text
    # (the cell wraps in an 80-column table)
    assert "euclidean distance, whitened (shrinkage 0.2, support" in text and "covariance 0.1)" in text
    assert "1 window(s) per clip" in text
    assert "pooling global" in text and "mel bands" in text
    (tmp_path / "runs" / "a").mkdir(parents=True)
    shutil.copy(trained_model, tmp_path / "runs" / "a" / "model.pt")
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["info"])
    assert res.exit_code == 0 and "runs/a/model.pt" in res.stdout


@pytest.mark.parametrize("content", [b"", b"not a model", b"PK\x03\x04broken zip"])
def test_info_on_a_damaged_file_is_one_line(runner: CliRunner, tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "model.pt"
    bad.write_bytes(content)
    res = runner.invoke(app, ["info", str(bad)])
    assert res.exit_code == 1
    assert res.stderr.startswith("error:") and res.stderr.count("\n") == 1
    assert "Traceback" not in res.output


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
    assert res.stdout == "" and res.stderr.startswith("error:") and "does not exist" in res.stderr
    assert "Traceback" not in res.stderr
