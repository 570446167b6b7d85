"""Bad input, faults and untrusted files: clear errors, nothing lost.

Every case drives the real CLI (``typer.testing.CliRunner``) and checks the exit code, the
one-line message and that no traceback reached the user.

=====  =========================================================================
case   tests
=====  =========================================================================
1      test_missing_or_empty_data_home_names_the_download_command
2      test_bad_files_in_a_folder_are_skipped_and_counted (train, eval, embed),
       test_bad_and_missing_files_in_a_tinysol_home_are_skipped
3      test_short_and_silent_clips_embed_to_finite_vectors,
       test_training_on_short_and_silent_clips_has_finite_loss
4      test_formats_and_names_embed, test_formats_and_names_predict,
       test_formats_and_names_train
5      test_impossible_training_is_refused_before_work,
       test_impossible_eval_episodes_are_refused_before_embedding
6      test_out_of_range_options_are_usage_errors
7      test_unusable_checkpoints_say_which
8      (resume: tests/test_training.py)
9      test_interrupted_download_is_completed_by_the_next_download,
       test_leftover_partial_render_is_ignored_and_replaced,
       test_partial_cache_is_ignored_and_rebuilt
10     test_unwritable_output_leaves_no_file (embed, plot-episode),
       test_train_out_that_cannot_be_a_folder
11     test_code_running_pickle_is_refused_without_running_it
12     test_metadata_paths_outside_the_data_home_are_skipped (train; CSV),
       test_index_paths_outside_the_data_home_are_skipped (eval; index)
^C     test_ctrl_c_during_training_prints_how_to_go_on
=====  =========================================================================
"""

from __future__ import annotations

import errno
import json
import math
import os
import pickle
import signal
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import SR, synth_tone
from tinysol_fixture import Mirror, make_tinysol, md5_bytes, pack_tinysol, write_csv
from typer.testing import CliRunner

from fslcli.checkpoint import FORMAT, FORMAT_VERSION, save_model
from fslcli.cli import app
from fslcli.config import ModelConfig, RunConfig, SplitConfig
from fslcli.datasets import DataSource
from fslcli.datasets.instruments import BY_NAME, pitch_name
from fslcli.datasets.mirdata_index import index_path
from fslcli.model import ProtoNet
from fslcli.training.module import build_net

TIMBRES = ("Bright", "Dark", "Odd", "Noisy")
#: The files every "bad data" set carries, by reason.
BAD_FILES = ("corrupt.wav", "empty.wav", "no frames.wav", "truncated.wav", "notes [draft].wav")
TINY_EPISODES = ["--ways", "2", "--shots", "1", "--queries", "1"]
#: One-step training on tiny episodes: the fastest real run.
TINY_TRAIN = ["--steps", "1", "--val-every", "1", "--val-episodes", "2", *TINY_EPISODES]


# --- helpers ---------------------------------------------------------------------------


def run(args: list[str], code: int) -> str:
    """Invoke ``fsl`` and return its output (stdout and stderr); no traceback, no stray exception."""
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exit_code == code, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output
    return res.output


def split(train: str | tuple[str, ...], val: str | tuple[str, ...], test: str | tuple[str, ...]) -> list[str]:
    """``--train-classes/--val-classes/--test-classes`` options (whole classes held out for validation)."""
    names = [c if isinstance(c, str) else ",".join(c) for c in (train, val, test)]
    return ["--train-classes", names[0], "--val-classes", names[1], "--test-classes", names[2]]


def error_line(output: str) -> str:
    """The single ``error:`` line of a failed command."""
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, output
    return lines[0]


def flat(output: str) -> str:
    """Output with rich's line wrapping undone."""
    return " ".join(output.split())


def write_bad_files(folder: Path, rng: np.random.Generator) -> None:
    """The five kinds of broken audio, named as in :data:`BAD_FILES`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corrupt.wav").write_bytes(rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    (folder / "empty.wav").write_bytes(b"")
    sf.write(folder / "no frames.wav", np.zeros(0, np.float32), SR)
    sf.write(folder / "whole.wav", synth_tone(rng, "Dark"), SR, subtype="PCM_16")
    whole = (folder / "whole.wav").read_bytes()
    (folder / "whole.wav").unlink()
    (folder / "truncated.wav").write_bytes(whole[: len(whole) // 3])
    (folder / "notes [draft].wav").write_text("These are my notes, not audio.\n" * 20, encoding="utf-8")


def write_class(folder: Path, rng: np.random.Generator, timbre: str, n: int, seconds: float = 0.3) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        sf.write(folder / f"{k:02d}.wav", synth_tone(rng, timbre, seconds), SR, subtype="PCM_16")


def tiny_model(path: Path, source: Path) -> Path:
    """An untrained small model written exactly as ``fsl train`` writes one."""
    config = RunConfig(
        model=ModelConfig(channels=(8, 16), embedding_dim=16),
        split=SplitConfig(train_classes=("A", "B"), test_classes=("C", "D"), val_classes=()),
    )
    save_model(path, build_net(config, seed=0), config, DataSource("folder", source), {"steps": 0})
    return path


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five classes of 4 short clips (A, B, C, D, E) plus broken files in A."""
    rng = np.random.default_rng(7)
    root = tmp_path_factory.mktemp("bad-folder")
    for name, timbre in zip("ABCDE", (*TIMBRES, "Bright"), strict=True):
        write_class(root / name, rng, timbre, 4)
    write_bad_files(root / "A", rng)
    return root


@pytest.fixture(scope="module")
def model_pt(tmp_path_factory: pytest.TempPathFactory, bad_folder: Path) -> Path:
    return tiny_model(tmp_path_factory.mktemp("model") / "model.pt", bad_folder)


def tinysol_row(name: str, rel: str, midi: int, fold: int) -> list[object]:
    """A row of TinySOL's metadata CSV (14 columns) for a mezzo-forte note."""
    inst = BY_NAME[name]
    string_id = "1.0" if inst.family == "Strings" else ""
    row = [rel, fold, inst.family, inst.abbr, inst.full, "ord", "ordinario", pitch_name(midi), midi, "mf", 2, 0]
    return [*row, string_id, "FALSE"]


#: Instruments of the TinySOL-layout fixture and the role each plays in training.
TS_TRAIN, TS_VAL, TS_TEST = ("Bass Tuba", "French Horn"), ("Violin", "Cello"), ("Flute",)


@pytest.fixture
def tinysol_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A TinySOL-layout home (5 instruments x 3 clips) whose CSV also lists broken, missing
    and escaping files; the index is built from the CSV on first read (so: one per test).

    Returns the home and a valid WAV outside it that two rows point at.
    """
    rng = np.random.default_rng(11)
    base = tmp_path_factory.mktemp("tinysol")
    home = base / "home"
    outside = base / "outside" / "secret.wav"
    outside.parent.mkdir(parents=True)
    sf.write(outside, synth_tone(rng, "Odd"), SR)
    rows = []
    for name in (*TS_TRAIN, *TS_VAL, *TS_TEST):
        inst = BY_NAME[name]
        folder = f"{inst.family}/{inst.folder}/ordinario"
        for k, midi in enumerate((inst.low, inst.low + 2, inst.low + 4)):
            rel = f"{folder}/{inst.abbr}-ord-{pitch_name(midi)}-mf-N-N.wav"
            (home / "audio" / rel).parent.mkdir(parents=True, exist_ok=True)
            sf.write(home / "audio" / rel, synth_tone(rng, TIMBRES[k % 4], 0.3), SR, subtype="PCM_16")
            rows.append(tinysol_row(name, rel, midi, k))
    tuba = BY_NAME["Bass Tuba"]
    folder = f"{tuba.family}/{tuba.folder}/ordinario"
    write_bad_files(home / "audio" / folder, rng)
    for k, bad in enumerate((*BAD_FILES, "gone.wav")):
        rows.append(tinysol_row("Bass Tuba", f"{folder}/{bad}", 60 + k, 0))
    rows.append(tinysol_row("Bass Tuba", "../../outside/secret.wav", 80, 0))
    rows.append(tinysol_row("Bass Tuba", str(outside), 81, 0))
    write_csv(home, rows)
    return home, outside


# --- 1. missing or empty data homes ------------------------------------------------------


@pytest.mark.parametrize("command", ["train", "eval"])
@pytest.mark.parametrize("state", ["missing", "empty"])
@pytest.mark.parametrize("dataset", ["tinysol", "tinysol-gm"])
def test_missing_or_empty_data_home_names_the_download_command(tmp_path, model_pt, command, state, dataset):
    home = tmp_path / "home"
    if state == "empty":
        home.mkdir()
    args = [command] + ([model_pt] if command == "eval" else ["--out", tmp_path / "run"])
    out = run([*args, "--dataset", dataset, "--data-home", home], 1)
    line = error_line(out)
    assert f"fsl download {dataset} --data-home {home}" in line
    assert str(home) in line
    assert not (tmp_path / "run").exists()


# --- 2 and 3. broken, short and silent files ---------------------------------------------


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory: pytest.TempPathFactory, bad_folder: Path) -> tuple[str, Path]:
    """One real training run on the folder with broken files (shared by cases 2 and 3)."""
    run_dir = tmp_path_factory.mktemp("folder-run") / "run"
    out = run(["train", "--data-dir", bad_folder, *split("A,B", "C,D", "E"), *TINY_TRAIN, "--out", run_dir], 0)
    return out, run_dir


def assert_bad_files_reported(output: str) -> None:
    lines = output.splitlines()
    for name in BAD_FILES:
        assert any(line.startswith("skipped") and name in line for line in lines), (name, output)
    last_report = [line for line in lines if "file(s) skipped" in line]
    assert last_report and last_report[-1].startswith(f"{len(BAD_FILES)} file(s) skipped"), output


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(
            "train",
        ),
        "eval",
        "embed",
    ],
)
def test_bad_files_in_a_folder_are_skipped_and_counted(tmp_path, bad_folder, model_pt, folder_run, command):
    if command == "train":
        out, run_dir = folder_run
        assert (run_dir / "model.pt").is_file()
    elif command == "eval":
        args = ["--data-dir", bad_folder, "--test-classes", "A,B", "--episodes", "2", *TINY_EPISODES]
        out = run(["eval", model_pt, *args], 0)
        assert "Mean accuracy" in out
    else:
        out = run(["embed", model_pt, bad_folder, "--out", tmp_path / "e.npz"], 0)
        assert len(np.load(tmp_path / "e.npz")["paths"]) == 20
    assert_bad_files_reported(out)
    reasons = ("empty file (0 bytes)", "no audio samples", "truncated: its header promises", "not decodable as audio")
    for reason in reasons:
        assert reason in flat(out), reason


def test_bad_and_missing_files_in_a_tinysol_home_are_skipped(tinysol_home, model_pt):
    home, _ = tinysol_home
    args = ["--dataset", "tinysol", "--data-home", home, "--test-classes", ",".join(TS_TRAIN), "--episodes", "2"]
    out = run(["eval", model_pt, *args, *TINY_EPISODES], 0)
    assert_bad_files_reported_tinysol(out)


def assert_bad_files_reported_tinysol(output: str) -> None:
    lines = output.splitlines()
    for name in (*BAD_FILES, "gone.wav"):
        assert any(line.startswith("skipped") and name in line for line in lines), (name, output)
    assert any("gone.wav" in line and "missing" in line for line in lines), output
    # 5 broken + 1 missing + 2 escaping the data home
    assert [line for line in lines if "file(s) skipped" in line][-1].startswith("8 file(s) skipped"), output


def silent_short_folder(root: Path, rng: np.random.Generator) -> Path:
    """Classes of very short clips (50 ms, padded to the excerpt) and of pure silence."""
    for name, timbre in (("Short", "Bright"), ("Tiny", "Dark")):
        (root / name).mkdir(parents=True)
        for k in range(3):
            sf.write(root / name / f"{k}.wav", synth_tone(rng, timbre, 0.05), SR, subtype="PCM_16")
    for name in ("Silence", "Hush"):
        (root / name).mkdir(parents=True)
        for k in range(3):
            sf.write(root / name / f"{k}.wav", np.zeros(int(0.4 * SR), np.float32), SR, subtype="PCM_16")
    sf.write(root / "Hush" / "one sample.wav", np.zeros(1, np.float32), SR, subtype="PCM_16")
    return root


def test_short_and_silent_clips_embed_to_finite_vectors(tmp_path, rng, model_pt):
    data = silent_short_folder(tmp_path / "data", rng)
    out = run(["embed", model_pt, data, "--out", tmp_path / "e.npz"], 0)
    assert "skipped" not in out
    emb = np.load(tmp_path / "e.npz")["embeddings"]
    assert emb.shape[0] == 13
    assert np.isfinite(emb).all()


def test_training_on_short_and_silent_clips_has_finite_loss(tmp_path, rng):
    data = silent_short_folder(tmp_path / "data", rng)
    write_class(data / "Odd", rng, "Odd", 3, seconds=0.05)
    run_dir = tmp_path / "run"
    run(["train", "--data-dir", data, *split("Short,Silence", "Tiny,Hush", "Odd"), *TINY_TRAIN, "--out", run_dir], 0)
    rows = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    assert rows and all(math.isfinite(r["train_loss"]) for r in rows)
    weights = torch.load(run_dir / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


# --- 4. formats and names ----------------------------------------------------------------

#: (class, file name, subtype, sample rate, channels, format)
FORMATS = (
    ("Violín", "arco suave.wav", "PCM_16", 44_100, 2, "WAV"),
    ("Violín", "pizz 8 bit.wav", "PCM_U8", 8_000, 1, "WAV"),
    ("Violín", "tremolo.flac", "PCM_24", 96_000, 1, "FLAC"),
    ("Скрипка", "смычок.wav", "PCM_24", 22_050, 2, "WAV"),
    ("Скрипка", "float 32.wav", "FLOAT", 16_000, 1, "WAV"),
    ("Скрипка", "ноты.ogg", "VORBIS", 44_100, 2, "OGG"),
    ("小提琴 2", "弓 1.wav", "PCM_16", 48_000, 1, "WAV"),
    ("小提琴 2", "double 64.wav", "DOUBLE", 32_000, 2, "WAV"),
    ("小提琴 2", "Ünïcödé.flac", "PCM_16", 11_025, 1, "FLAC"),
    ("Flûte à bec", "take [1].wav", "PCM_16", 16_000, 1, "WAV"),
    ("Flûte à bec", "è.ogg", "VORBIS", 22_050, 1, "OGG"),
    ("Flûte à bec", "b.flac", "PCM_16", 88_200, 2, "FLAC"),
    ("Trompete", "a.wav", "PCM_16", 16_000, 1, "WAV"),
    ("Trompete", "b.wav", "PCM_32", 24_000, 1, "WAV"),
    ("Trompete", "c.ogg", "VORBIS", 16_000, 2, "OGG"),
)


@pytest.fixture(scope="module")
def formats_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(3)
    root = tmp_path_factory.mktemp("formats")
    for k, (cls, name, subtype, sr, channels, fmt) in enumerate(FORMATS):
        tone = synth_tone(rng, TIMBRES[k % 4], 0.4, sr)
        data = np.stack([tone, 0.5 * tone], axis=1) if channels == 2 else tone
        (root / cls).mkdir(exist_ok=True)
        sf.write(root / cls / name, data, sr, subtype=subtype, format=fmt)
    return root


def test_formats_and_names_embed(tmp_path, model_pt, formats_folder):
    out = run(["embed", model_pt, formats_folder, "--out", tmp_path / "e.npz"], 0)
    assert "skipped" not in out
    saved = np.load(tmp_path / "e.npz")
    assert len(saved["paths"]) == len(FORMATS)
    assert np.isfinite(saved["embeddings"]).all()
    assert set(saved["labels"]) == {cls for cls, *_ in FORMATS}
    assert {Path(p).name for p in saved["paths"]} == {name for _, name, *_ in FORMATS}


def test_formats_and_names_predict(model_pt, formats_folder):
    queries = [formats_folder / "Скрипка" / "ноты.ogg", formats_folder / "Flûte à bec" / "take [1].wav"]
    args = ["predict", model_pt, *queries, "--support", formats_folder, "--json"]
    out = CliRunner().invoke(app, [str(a) for a in args])
    assert out.exit_code == 0, out.output
    records = json.loads(out.stdout)
    assert [r["path"] for r in records] == [str(q) for q in queries]
    assert all(r["predicted"] in {cls for cls, *_ in FORMATS} for r in records)
    run(["predict", model_pt, formats_folder / "小提琴 2", "--support", formats_folder], 0)  # the table


def test_formats_and_names_train(tmp_path, formats_folder):
    run_dir = tmp_path / "run"
    classes = split("Violín,Скрипка", "小提琴 2,Flûte à bec", "Trompete")
    out = run(["train", "--data-dir", formats_folder, *classes, *TINY_TRAIN, "--out", run_dir], 0)
    assert "skipped" not in out
    assert f"{len(FORMATS)} clips" in flat(out)
    assert (run_dir / "model.pt").is_file()


# --- 5. impossible episodes ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ([*split("A", "C,D", "E"), *TINY_EPISODES], ["training needs at least 2 classes; found 1 (A)"]),
        (
            [*split("A,B", "C,D", "E"), "--shots", "3", "--queries", "2"],
            ["--shots 3 + --queries 2 needs 5 clips per class for training episodes", "'A' has 4"],
        ),
        (
            [*split("A,B", "C", "E"), *TINY_EPISODES],
            ["validation needs at least 2 held-out classes with 2 clips each", "C: 4 clips"],
        ),
    ],
    ids=["one class", "too few clips", "one validation class"],
)
def test_impossible_training_is_refused_before_work(tmp_path, monkeypatch, bad_folder, options, expected):
    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr("fslcli.training.fit", no_training)
    run_dir = tmp_path / "run"
    out = run(["train", "--data-dir", bad_folder, *options, "--out", run_dir], 1)
    line = error_line(out)
    for text in expected:
        assert text in line, line
    assert not run_dir.exists()  # refused before the run folder was made: the same command works once fixed


def test_validation_on_held_out_classes_fits_its_episodes_to_their_groups(tmp_path, gm_home):
    # The small render has few source groups per class: validation episodes shrink until each
    # held-out class's support and queries come from different groups, and the run goes through.
    run_dir = tmp_path / "run"
    classes = ["--val-classes", "Cello,Oboe", "--test-classes", "Bassoon,Viola,Trumpet in C"]
    run(["train", "--data-home", gm_home, *classes, *TINY_TRAIN, "--out", run_dir], 0)
    assert (run_dir / "model.pt").is_file()


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--ways", "3", "--shots", "1", "--queries", "1"], ["--ways 3", "only 2", "(B, C)"]),
        (["--ways", "2", "--shots", "4", "--queries", "2"], ["--shots 4 + --queries 2", "needs 6", "'B' has 4"]),
    ],
)
def test_impossible_eval_episodes_are_refused_before_embedding(monkeypatch, bad_folder, model_pt, options, expected):
    def no_embedding(*args, **kwargs):
        raise AssertionError("embedding started")

    monkeypatch.setattr(ProtoNet, "embed", no_embedding)
    out = run(["eval", model_pt, "--data-dir", bad_folder, "--test-classes", "B,C", "--episodes", "2", *options], 1)
    line = error_line(out)
    for text in expected:
        assert text in line, line


# --- 6. out-of-range options ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["train", "--steps", "-5"], "--steps"),
        (["train", "--ways", "0"], "--ways"),
        (["eval", "--shots", "0"], "--shots"),
        (["eval", "--episodes", "-1"], "--episodes"),
        (["plot-episode", "--method", "magic"], "--method"),
        (["plot-embeddings", "--dims", "4"], "--dims"),
        (["train", "--preset", "huge"], "--preset"),
        (["train", "--precision", "64"], "--precision"),
        (["train", "--accelerator", "tpu"], "--accelerator"),
        (["train", "--accelerator", "gpu"], "--accelerator"),  # one spelling per device: cuda
    ],
)
def test_out_of_range_options_are_usage_errors(args, option):
    out = run(args, 2)
    assert option in out
    assert "Usage" in out or "Invalid value" in out


# --- 7. unusable checkpoints ---------------------------------------------------------------


def checkpoint_file(kind: str, folder: Path, good: Path, rng: np.random.Generator) -> Path:
    path = folder / "model.pt"
    if kind == "missing":
        return path
    if kind == "truncated":
        data = good.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "random bytes":
        path.write_bytes(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    elif kind == "text":
        path.write_text("this is not a model\n", encoding="utf-8")
    elif kind == "other torch file":
        torch.save({"weights": torch.zeros(3)}, path)
    elif kind == "version 99":
        payload = torch.load(good, weights_only=True)
        payload["format_version"] = 99
        torch.save(payload, path)
    return path


CHECKPOINT_MESSAGES = {
    "missing": "does not exist",
    "truncated": "damaged or not a model file",
    "empty": "damaged or not a model file (empty file)",
    "random bytes": "damaged or not a model file",
    "text": "damaged or not a model file",
    "other torch file": f"not an fslcli model file (no '{FORMAT}' header)",
    "version 99": f"model format version 99, this fslcli reads version {FORMAT_VERSION}",
}


#: Every kind through `fsl info`, and one kind through each other command that loads a model
#: (they share the loader: repeating every kind for every command would test it five times over).
CHECKPOINT_CASES = [("info", kind) for kind in CHECKPOINT_MESSAGES] + [
    (command, "truncated") for command in ("eval", "embed", "predict", "plot-episode")
]


@pytest.mark.parametrize(("command", "kind"), CHECKPOINT_CASES)
def test_unusable_checkpoints_say_which(tmp_path, rng, model_pt, bad_folder, kind, command):
    path = checkpoint_file(kind, tmp_path, model_pt, rng)
    args = {
        "eval": ["eval", path, "--data-dir", bad_folder],
        "embed": ["embed", path, bad_folder / "B", "--out", tmp_path / "e.npz"],
        "predict": ["predict", path, bad_folder / "B", "--support", bad_folder],
        "info": ["info", path],
        "plot-episode": ["plot-episode", path, "--data-dir", bad_folder, "--out", tmp_path / "p.html"],
    }[command]
    line = error_line(run(args, 1))
    assert str(path) in line and CHECKPOINT_MESSAGES[kind] in line
    assert not (tmp_path / "e.npz").exists() and not (tmp_path / "p.html").exists()


# --- 9. interrupted downloads, renders and cache builds -------------------------------------


def test_interrupted_download_is_completed_by_the_next_download(tmp_path, monkeypatch):
    from mirdata import core, download_utils
    from mirdata.datasets import tinysol as md_tinysol

    make_tinysol(tmp_path / "src")
    files = pack_tinysol(tmp_path / "src")
    # mirdata's remotes, with the fixture's checksums (the mirror replaces Zenodo's URLs)
    remotes = {"audio": ("TinySOL.tar.gz", "audio"), "annotations": ("TinySOL_metadata.csv", "annotation")}
    for key, (name, folder) in remotes.items():
        remote = download_utils.RemoteFileMetadata(name, f"https://zenodo.org/{name}", md5_bytes(files[name]), folder)
        monkeypatch.setitem(md_tinysol.REMOTES, key, remote)
    index = "tinysol_index_6.0.json"
    remote_index = core.Index(index, url=f"https://zenodo.org/{index}", checksum=md5_bytes(files[index]))
    monkeypatch.setitem(md_tinysol.INDEXES, "6.0", remote_index)
    home = tmp_path / "home"
    cut = len(files["TinySOL.tar.gz"]) // 2
    with Mirror(files, cut={"TinySOL.tar.gz": cut}) as mirror:
        monkeypatch.setenv("FSL_TINYSOL_URL", mirror.url)
        line = error_line(run(["download", "tinysol", "--data-home", home], 1))
        assert "TinySOL.tar.gz" in line and "run the same command again to resume" in line
        assert not (home / "audio").exists()
        out = run(["download", "tinysol", "--data-home", home], 0)
        assert "TinySOL ready" in out
        assert ("TinySOL.tar.gz", f"bytes={cut}-") in mirror.requests
    assert not list(home.rglob("*.part")) and not (home / "TinySOL.tar.gz").exists()
    assert len(list((home / "audio").rglob("*.wav"))) == 9


def test_leftover_partial_render_is_ignored_and_replaced(tmp_path, monkeypatch):
    from fslcli.datasets import tinysol_gm
    from fslcli.datasets.instruments import INSTRUMENTS

    home = tmp_path / "gm"
    leftover = tmp_path / "gm.partial-dead01"
    (leftover / "annotation").mkdir(parents=True)
    (leftover / "annotation" / "TinySOL_metadata.csv").write_text("Path\nnothing.wav\n", encoding="utf-8")
    # A render cut short never becomes the data home: it is not read...
    line = error_line(run(["train", "--dataset", "tinysol-gm", "--data-home", home, "--out", tmp_path / "run"], 1))
    assert f"fsl download tinysol-gm --data-home {home}" in line
    # ...and the next render removes it.
    real = tinysol_gm.render_tinysol_gm
    violin = INSTRUMENTS[6:7]

    def tiny(home, soundfont=None, seed=0, *, instruments, **kw):  # one note of the violin, whatever is asked
        return real(
            home, soundfont, seed, **{**kw, "instruments": violin, "max_notes_per_instrument": 1, "sample_rate": 8_000}
        )

    monkeypatch.setattr(tinysol_gm, "render_tinysol_gm", tiny)
    out = run(["download", "tinysol-gm", "--data-home", home], 0)
    assert "Rendered 3 files" in flat(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gm"]


def test_partial_cache_is_ignored_and_rebuilt(tmp_path, model_pt, bad_folder):
    cache = tmp_path / "cache"
    args = ["eval", model_pt, "--data-dir", bad_folder, "--test-classes", "B,C", "--episodes", "2", *TINY_EPISODES]
    args += ["--cache-dir", cache, "--json"]
    first = json.loads(CliRunner().invoke(app, [str(a) for a in args]).stdout)
    (built,) = cache.glob("waves-*")
    # Interrupted builds: a temporary folder, and a cache folder without its manifest.
    (cache / f".{built.name}.tmp-x").mkdir()
    (cache / f".{built.name}.tmp-x" / "waves.f32").write_bytes(b"\0" * 64)
    (built / "manifest.json").unlink()
    waves = built / "waves.f32"
    waves.write_bytes(waves.read_bytes()[:100])
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["mean_accuracy"] == first["mean_accuracy"]
    assert (built / "manifest.json").is_file() and waves.stat().st_size > 100
    # A manifest whose waves were cut short is not trusted either.
    waves.write_bytes(waves.read_bytes()[:100])
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["mean_accuracy"] == first["mean_accuracy"]


# --- 10. outputs that cannot be written ----------------------------------------------------


def no_space_for(monkeypatch: pytest.MonkeyPatch, target: Path) -> None:
    """Make the final rename onto ``target`` fail as on a full disk."""
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        if Path(dst) == target:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize("command", ["embed-npz", "embed-csv", "plot-episode"])
@pytest.mark.parametrize("fault", ["parent is a file", "disk full"])
def test_unwritable_output_leaves_no_file(tmp_path, monkeypatch, model_pt, bad_folder, command, fault):
    suffix = {"embed-npz": ".npz", "embed-csv": ".csv", "plot-episode": ".html"}[command]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    if fault == "parent is a file":
        (out_dir / "file").write_text("x")
        target = out_dir / "file" / f"result{suffix}"
    else:
        target = out_dir / f"result{suffix}"
        no_space_for(monkeypatch, target)
    if command == "plot-episode":
        args = ["plot-episode", model_pt, "--data-dir", bad_folder, "--method", "pca", *TINY_EPISODES, "--out", target]
    else:
        args = ["embed", model_pt, bad_folder / "B", "--out", target]
    line = error_line(run(args, 1))
    assert str(target) in line
    if fault == "disk full":
        assert os.strerror(errno.ENOSPC) in line
    assert sorted(p.name for p in out_dir.iterdir()) == (["file"] if fault == "parent is a file" else [])


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_train_out_that_cannot_be_a_folder(tmp_path, monkeypatch, bad_folder, where):
    monkeypatch.setattr("fslcli.data.prepare", lambda *a, **k: pytest.fail("data read before --out was checked"))
    blocker = tmp_path / "blocker"
    blocker.write_text("keep me")
    out_dir = blocker if where == "a file" else blocker / "run"
    line = error_line(run(["train", "--data-dir", bad_folder, "--out", out_dir], 1))
    assert str(out_dir) in line and "--out" in line
    assert blocker.read_text() == "keep me"


# --- 11. model files that would run code ----------------------------------------------------


class _Touch:
    """Unpickling this calls ``Path.touch(marker)``: any code at all could run instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize(
    ("command", "writer"),
    [("info", "pickle.dump"), ("info", "torch.save"), ("eval", "torch.save"), ("predict", "torch.save")]
    + [("embed", "torch.save")],
)
def test_code_running_pickle_is_refused_without_running_it(tmp_path, model_pt, bad_folder, command, writer):
    marker = tmp_path / "pwned"
    payload = torch.load(model_pt, weights_only=True)
    payload["meta"] = {"note": _Touch(marker)}  # a genuine model file, header and all, plus the trap
    path = tmp_path / "model.pt"
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(_Touch(marker), protocol=4))
    args = {
        "eval": ["eval", path, "--data-dir", bad_folder],
        "predict": ["predict", path, bad_folder / "B", "--support", bad_folder],
        "embed": ["embed", path, bad_folder / "B", "--out", tmp_path / "e.npz"],
        "info": ["info", path],
    }[command]
    line = error_line(run(args, 1))
    assert "unsafe" in line and str(path) in line and "refusing to load it" in line
    assert not marker.exists()
    # The trap is real: an unsafe load would have sprung it.
    if writer == "torch.save":
        torch.load(path, weights_only=False)
    else:
        pickle.loads(path.read_bytes())
    assert marker.exists()


# --- 12. metadata paths that leave the data home --------------------------------------------


def test_metadata_paths_outside_the_data_home_are_skipped(tmp_path, tinysol_home):
    # (That train names the skipped files: test_bad_files_in_a_folder_are_skipped_and_counted[train].)
    home, outside = tinysol_home
    run_dir = tmp_path / "run"
    source = ["--dataset", "tinysol", "--data-home", home]
    out = run(["train", *source, *split(TS_TRAIN, TS_VAL, TS_TEST), *TINY_TRAIN, "--out", run_dir], 0)
    assert "15 clips" in flat(out)  # the valid WAV outside was never read into the data
    assert (run_dir / "model.pt").is_file()
    assert [p.name for p in outside.parent.iterdir()] == ["secret.wav"]  # nothing written out there


def test_index_paths_outside_the_data_home_are_skipped(tmp_path, model_pt):
    home = tmp_path / "home"
    tracks = make_tinysol(home)  # writes the index too
    secret = tmp_path / "secret.wav"
    sf.write(secret, synth_tone(np.random.default_rng(0), "Odd", 0.1, 8000), 8000)
    idx = json.loads(index_path(home).read_text())
    idx["tracks"][tracks[0].track_id]["audio"][0] = "../secret.wav"  # a Bass Tuba
    idx["tracks"][tracks[3].track_id]["audio"][0] = str(secret)  # a French Horn
    index_path(home).write_text(json.dumps(idx))
    args = ["--dataset", "tinysol", "--data-home", home, "--test-classes", "Violin,French Horn", "--episodes", "2"]
    out = run(["eval", model_pt, *args, *TINY_EPISODES], 0)
    escaping = [line for line in out.splitlines() if line.startswith("skipped") and "outside the data home" in line]
    assert len(escaping) == 2 and all("secret.wav" in line for line in escaping), out


# --- Ctrl-C -------------------------------------------------------------------------------


@pytest.mark.parametrize("at_step", [1, 0])
def test_ctrl_c_during_training_prints_how_to_go_on(tmp_path, monkeypatch, bad_folder, at_step):
    from fslcli.training import dataset

    real = dataset.episode_batch
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) > at_step:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(dataset, "episode_batch", interrupted)
    handler = signal.getsignal(signal.SIGINT)
    run_dir = tmp_path / "run"
    steps = ["--steps", "3", *TINY_TRAIN[2:]]
    out = run(["train", "--data-dir", bad_folder, *split("A,B", "C,D", "E"), *steps, "--out", run_dir], 130)
    if at_step:
        assert f"Continue with: fsl train --resume {run_dir}" in flat(out)
        assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    else:
        assert "nothing to resume" in flat(out) and "--force" in out
    assert not (run_dir / "model.pt").exists()  # an interrupted run never passes for a finished one
    assert signal.getsignal(signal.SIGINT) is handler  # Lightning's "ignore Ctrl-C" does not outlive the run
