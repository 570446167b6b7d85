"""Episodic training: seeded episodes and crops, validation data, the optimiser, real CPU runs
(the model file, learning, determinism, resume after an interrupt, DDP)."""

from __future__ import annotations

import importlib
import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import FOLDER_TIMBRES, SR, tiny_train_args, write_folder_dataset
from typer.testing import CliRunner

from fslcli.checkpoint import load_model
from fslcli.cli import app
from fslcli.config import AudioConfig, AugmentConfig, EpisodeConfig, ModelConfig, RunConfig, SplitConfig, TrainConfig
from fslcli.episodes import TRAIN_STREAM, VAL_STREAM, episode_rng, groups_can_split, make_pool, sample_episode
from fslcli.errors import EpisodeError, FslError
from fslcli.training.dataset import BlockSampler, EpisodeDataset, episode_batch
from fslcli.training.fit import preflight, read_history, resolve_accelerator
from fslcli.training.module import build_net, train_episode_config
from fslcli.training.validation import (
    VAL_EPISODE,
    center_clips_per_class,
    make_val_data,
    split_val_config,
    subset,
    val_episode_config,
)

#: The module fslcli.training.fit (the package's attribute of that name is the function).
FIT_MODULE = importlib.import_module("fslcli.training.fit")

# --- pieces --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "block", "epoch", "expected"),
    [(10, 4, 0, [0, 1, 2, 3]), (10, 4, 1, [4, 5, 6, 7]), (10, 4, 2, [8, 9]), (10, 4, 3, []), (3, 3, 0, [0, 1, 2])],
)
def test_block_sampler_yields_one_block_of_step_indices(
    steps: int, block: int, epoch: int, expected: list[int]
) -> None:
    s = BlockSampler(steps, block)
    s.set_epoch(epoch)
    assert list(s) == expected and len(s) == len(expected)


CFG = EpisodeConfig(3, 2, 2)
EXCERPT = 4000


def make_dataset(cache, rank: int = 0, seed: int = 0, aug: AugmentConfig = AugmentConfig()) -> EpisodeDataset:
    return EpisodeDataset(
        cache, make_pool(cache.labels()), CFG, excerpt=EXCERPT, aug=aug, seed=seed, rank=rank, steps=10, n_mels=32,
        n_frames=16,
    )  # fmt: skip


@pytest.mark.parametrize(("seed", "rank"), [(0, 0), (0, 1), (1, 0)])
def test_episode_dataset_item_i_is_drawn_from_seed_step_and_rank(folder_cache, seed: int, rank: int) -> None:
    ds = make_dataset(folder_cache, rank=rank, seed=seed)
    assert len(ds) == 10
    item = ds[3]
    rng = episode_rng(seed, 3, rank, TRAIN_STREAM)
    episode = sample_episode(make_pool(folder_cache.labels()), CFG, rng)
    expected = episode_batch(folder_cache, episode, EXCERPT, aug=AugmentConfig(), rng=rng, n_mels=32, n_frames=16)
    assert item.keys() == expected.keys()
    assert all(torch.equal(item[k], expected[k]) for k in item)
    again = make_dataset(folder_cache, rank=rank, seed=seed)[3]  # nothing carried over from earlier items
    assert all(torch.equal(item[k], again[k]) for k in item)


#: Ramp clips: 1.5 s each, rising by RAMP across the clip from a level that names the clip.
RAMP, RAMP_SAMPLES = 0.01, int(1.5 * SR)


@pytest.fixture(scope="module")
def ramp_cache(tmp_path_factory: pytest.TempPathFactory):
    """Three classes of four clips; clip k of class c holds ``0.1 c + 0.02 k`` plus a rise from 0 to
    RAMP across the clip, so a crop's first sample tells its clip and where the crop starts."""
    from fslcli.datasets.folder import read_folder
    from fslcli.features import open_cache

    root = tmp_path_factory.mktemp("ramps")
    for c, name in enumerate("abc"):
        (root / "data" / name).mkdir(parents=True)
        for k in range(4):
            wave = (0.1 * c + 0.02 * k + RAMP * np.arange(RAMP_SAMPLES) / RAMP_SAMPLES).astype(np.float32)
            sf.write(root / "data" / name / f"{k}.wav", wave, SR, subtype="FLOAT")
    cache, _ = open_cache(read_folder(root / "data").clips, SR, root / "cache")
    return cache


def clip_level_and_start(first: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The level naming each ramp clip and the sample its crop starts at, from the crops' first samples."""
    level = 0.02 * np.round(first.astype(np.float64) / 0.02 - 0.25)
    return level, np.round((first - level) / RAMP * RAMP_SAMPLES).astype(int)


def test_episode_batch_lays_out_support_then_queries(ramp_cache) -> None:
    pool = make_pool(ramp_cache.labels())
    episode = sample_episode(pool, CFG, np.random.default_rng(0))
    batch = episode_batch(
        ramp_cache, episode, EXCERPT, aug=AugmentConfig(gain_db=0.0), rng=np.random.default_rng(1), n_mels=32,
        n_frames=16,
    )  # fmt: skip
    ids = np.concatenate([episode.support.reshape(-1), episode.query.reshape(-1)])  # support class-major, then queries
    level, start = clip_level_and_start(batch["waves"][:, 0].numpy())
    np.testing.assert_allclose(level, [ramp_cache.clip(int(i))[0] for i in ids], atol=1e-6)
    for row, clip in enumerate(ids):
        np.testing.assert_array_equal(batch["waves"][row].numpy(), ramp_cache.excerpt(int(clip), start[row], EXCERPT))
    assert batch["target"].tolist() == [0, 0, 1, 1, 2, 2]
    n = len(ids)
    assert batch["eq"].shape == (n, 32) and batch["shift"].shape == (n,)
    assert batch["time_masks"].shape[0] == batch["freq_masks"].shape[0] == n
    assert batch["pitch"].shape == (n,) and batch["pitch"].abs().max() <= 8.0  # pitch warps are on by default


def test_crops_start_anywhere_in_the_clip(ramp_cache) -> None:
    ds = EpisodeDataset(
        ramp_cache, make_pool(ramp_cache.labels()), CFG, excerpt=EXCERPT, aug=AugmentConfig(gain_db=0.0), seed=0,
        rank=0, steps=10, n_mels=32, n_frames=16,
    )  # fmt: skip
    _, starts = clip_level_and_start(torch.cat([ds[i]["waves"][:, 0] for i in range(10)]).numpy())
    room = RAMP_SAMPLES - EXCERPT
    assert starts.min() >= 0 and starts.max() <= room
    assert starts.min() < 0.1 * room and starts.max() > 0.9 * room  # spread over the whole clip, not one place


def test_pitch_draws_only_when_asked(ramp_cache) -> None:
    pool = make_pool(ramp_cache.labels())
    episode = sample_episode(pool, CFG, np.random.default_rng(0))
    kw = {"rng": np.random.default_rng(1), "n_mels": 32, "n_frames": 16}
    plain = episode_batch(ramp_cache, episode, EXCERPT, aug=AugmentConfig(gain_db=0.0, pitch_semitones=0.0), **kw)
    assert "pitch" not in plain
    kw["rng"] = np.random.default_rng(1)
    warped = episode_batch(ramp_cache, episode, EXCERPT, aug=AugmentConfig(gain_db=0.0, pitch_semitones=2.0), **kw)
    assert torch.equal(warped["waves"], plain["waves"])  # the warp acts on the filterbank, not the waveform
    assert warped["pitch"].shape == (len(plain["waves"]),) and warped["pitch"].abs().max() <= 2.0
    assert warped["pitch"].std() > 0.5


@pytest.mark.parametrize(("classes", "ways"), [(30, 24), (7, 7), (3, 3)])
def test_training_ways_are_capped_at_the_training_classes(classes: int, ways: int) -> None:
    assert train_episode_config(RunConfig(), classes) == EpisodeConfig(ways, 5, 5)


@pytest.mark.parametrize(
    ("sizes", "expected"),
    [
        ({"a": 9, "b": 9, "c": 9}, EpisodeConfig(3, 5, 4)),
        ({"a": 2, "b": 3}, EpisodeConfig(2, 1, 1)),
        ({k: 40 for k in "abcdefg"}, VAL_EPISODE),
    ],
)
def test_val_episode_config_shrinks_to_held_out_classes(sizes: dict, expected: EpisodeConfig) -> None:
    assert EpisodeConfig(5, 5, 15) == VAL_EPISODE
    assert val_episode_config({k: np.arange(n) for k, n in sizes.items()}) == expected


def test_val_episode_config_refuses_too_little_data() -> None:
    with pytest.raises(EpisodeError, match=r"at least 2 held-out classes with 2 clips.*a: 1 clips"):
        val_episode_config({"a": np.arange(1), "b": np.arange(5)})


def test_val_episode_config_shrinks_until_groups_can_split() -> None:
    pool = {"a": np.arange(0, 12), "b": np.arange(12, 24)}
    # a: groups of 8 and 4 clips; b: 6 and 6. 5 shots + 7 queries from different groups cannot be drawn.
    groups = np.array([0] * 8 + [1] * 4 + [2] * 6 + [3] * 6)
    cfg = val_episode_config(pool, groups)
    assert cfg.ways == 2 and (cfg.shots, cfg.queries) < (5, 7)  # smaller than the shape the clips allow ungrouped
    assert all(groups_can_split(groups[ids], cfg.shots, cfg.queries) for ids in pool.values())
    assert val_episode_config(pool) == EpisodeConfig(ways=2, shots=5, queries=7)  # ungrouped: the full shape


def test_split_val_config_shrinks_to_both_pools() -> None:
    support = {"a": np.arange(10), "b": np.arange(3), "c": np.arange(8)}
    query = {"a": np.arange(4), "b": np.arange(20), "d": np.arange(9)}  # c: no held-out clips; d: not trained
    assert split_val_config(support, query) == EpisodeConfig(ways=2, shots=3, queries=4)
    with pytest.raises(EpisodeError, match=r"at least 2 training classes with held-out recordings; found 1 \(a\)"):
        split_val_config(support, {"a": np.arange(4)})


@pytest.mark.parametrize(("n_classes", "per_class"), [(1, 1500), (10, 150), (300, 8)])
def test_center_clips_are_shared_out_but_at_least_8(n_classes: int, per_class: int) -> None:
    assert center_clips_per_class(n_classes) == per_class


def test_subset_keeps_at_most_n_per_class_in_index_order() -> None:
    pool = {"a": np.arange(100, 120), "b": np.arange(3)}
    got = subset(pool, 5, np.random.default_rng(0))
    assert len(got["a"]) == 5 and set(got["a"]) <= set(pool["a"]) and (np.diff(got["a"]) > 0).all()
    assert got["b"].tolist() == [0, 1, 2]
    np.testing.assert_array_equal(got["a"], subset(pool, 5, np.random.default_rng(0))["a"])


def val_config(**split) -> RunConfig:
    return replace(
        RunConfig(),
        audio=AudioConfig(excerpt_seconds=0.25),
        train=replace(TrainConfig(), val_episodes=7),
        split=SplitConfig(test_classes=(), **split),
    )


def test_validation_scores_held_out_recordings_against_training_clips(folder_cache) -> None:
    labels = folder_cache.labels()
    train = make_pool(labels, indices=[i for i in range(len(labels)) if i % 5], classes=["Bright", "Dark", "Odd"])
    held = make_pool(labels, indices=[i for i in range(len(labels)) if i % 5 == 0], classes=["Bright", "Dark", "Odd"])
    val = make_val_data(folder_cache, val_config(), train_pool=train, val_pool=held)
    assert len(val.episodes) == 7
    for ep in val.episodes:
        assert ep.support.shape == (3, 5) and ep.query.shape == (3, 2)  # 5 shots, 2 held-out clips a class
        for row, c in enumerate(ep.classes):
            assert set(ep.support[row]) <= set(train[c]) and set(ep.query[row]) <= set(held[c])
    # Calibration: every training clip (fewer than the cap), labelled by its class's sorted index.
    calibrating = [val.ids[r] for r in val.center_rows]
    assert sorted(calibrating) == sorted(int(i) for ids in train.values() for i in ids)
    names = sorted(train)
    assert all(labels[i] == names[k] for i, k in zip(calibrating, val.center_labels, strict=True))
    # One window per clip, owned by its position in ids.
    assert val.windows.shape == (len(val.ids), 4000) and val.owners.tolist() == list(range(len(val.ids)))
    assert set(val.ids) == set(calibrating) | {int(i) for ep in val.episodes for i in ep.query.ravel()}


def test_calibration_on_several_libraries_groups_a_class_per_library(folder_cache) -> None:
    """What tells libraries apart must not count as within-class spread: each (class, library)
    is its own group of the calibration, while episodes stay as they were."""
    labels = folder_cache.labels()
    train = make_pool(labels, indices=[i for i in range(len(labels)) if i % 5], classes=["Bright", "Dark", "Odd"])
    held = make_pool(labels, indices=[i for i in range(len(labels)) if i % 5 == 0], classes=["Bright", "Dark", "Odd"])
    libraries = np.arange(len(labels)) % 2  # two libraries, interleaved
    one = make_val_data(folder_cache, val_config(), train_pool=train, val_pool=held)
    two = make_val_data(folder_cache, val_config(), train_pool=train, val_pool=held, libraries=libraries)
    assert two.ids == one.ids and np.array_equal(two.center_rows, one.center_rows)
    assert all(np.array_equal(a.support, b.support) for a, b in zip(one.episodes, two.episodes, strict=True))
    clips = [two.ids[r] for r in two.center_rows]
    pairs = {(int(k), labels[i], int(libraries[i])) for i, k in zip(clips, two.center_labels, strict=True)}
    assert len({(c, lib) for _, c, lib in pairs}) == len({k for k, _, _ in pairs}) == 6  # 3 classes x 2 libraries


def test_validation_on_held_out_classes_draws_grouped_episodes(folder_cache) -> None:
    labels = folder_cache.labels()
    train, held = make_pool(labels, classes=["Bright", "Dark"]), make_pool(labels, classes=["Odd", "Noisy"])
    groups = np.arange(len(labels)) // 5  # each class's 10 clips: two recordings of 5
    config = val_config(train_classes=("Bright", "Dark"), val_classes=("Odd", "Noisy"))
    val = make_val_data(folder_cache, config, train_pool=train, val_pool=held, groups=groups)
    shape = EpisodeConfig(2, 5, 5)  # VAL_EPISODE shrunk to 2 classes of 10 clips
    for i, ep in enumerate(val.episodes):
        expected = sample_episode(held, shape, episode_rng(0, i, 0, VAL_STREAM), groups)  # the validation stream's
        assert ep.classes == expected.classes and np.array_equal(ep.support, expected.support)
        for row in range(2):  # one recording on each side
            assert len(set(groups[ep.support[row]])) == len(set(groups[ep.query[row]])) == 1
            assert not set(groups[ep.support[row]]) & set(groups[ep.query[row]])
    embedding_none = replace(config, model=ModelConfig(embedding_norm="none"))
    assert len(make_val_data(folder_cache, embedding_none, train_pool=train, val_pool=held).center_rows) == 0


@pytest.mark.parametrize(
    ("accelerator", "precision", "needle"),
    [("cpu", "16-mixed", "16-mixed needs a CUDA"), ("cpu", "64", "unknown"), ("mps", "32", "MPS")],
)
def test_resolve_accelerator_refusals(accelerator: str, precision: str, needle: str) -> None:
    if accelerator == "mps" and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    with pytest.raises(FslError, match=needle):
        resolve_accelerator(accelerator, precision)


def test_resolve_accelerator_cpu() -> None:
    assert resolve_accelerator("cpu", "32") == "cpu"
    assert resolve_accelerator("cpu", "bf16-mixed") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(FslError, match="no CUDA GPU"):
            resolve_accelerator("cuda", "32")


def test_preflight_refuses_before_any_work(folder_cache) -> None:
    labels = folder_cache.labels()
    train, held = make_pool(labels, classes=["Bright", "Dark"]), make_pool(labels, classes=["Odd", "Noisy"])
    config = val_config(train_classes=("Bright", "Dark"), val_classes=("Odd", "Noisy"))
    config = replace(config, train=replace(config.train, accelerator="cpu"))
    assert preflight(config, train, held) == "cpu"
    with pytest.raises(FslError, match="optimizer 'sgd' is unknown; choose one of adamw, adam"):
        preflight(replace(config, train=replace(config.train, optimizer="sgd")), train, held)
    with pytest.raises(FslError, match=r"training needs at least 2 classes; found 1 \(Bright\)"):
        preflight(config, {"Bright": train["Bright"]}, held)
    with pytest.raises(EpisodeError, match="--shots 5 \\+ --queries 20 needs 25 clips per class for training"):
        preflight(replace(config, episode=EpisodeConfig(2, 5, 20)), train, held)


def test_build_net_is_seeded_and_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a, b = build_net(RunConfig(), 7), build_net(RunConfig(), 7)
    assert torch.rand(1) == expected_next
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    c = build_net(RunConfig(), 8)
    assert not torch.allclose(a.head.weight, c.head.weight)  # another seed, another initialisation


def learning_rates(optimizer: str, steps: int = 200, lr: float = 1e-3) -> list[float]:
    """The learning rate at each step of a run, as the LightningModule schedules it."""
    from fslcli.training.module import ProtoLit

    config = replace(RunConfig(), train=replace(TrainConfig(), steps=steps, optimizer=optimizer, learning_rate=lr))
    configured = ProtoLit(config, None, {}, None).configure_optimizers()
    if isinstance(configured, torch.optim.Optimizer):
        return [configured.param_groups[0]["lr"]] * steps
    opt, sched = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    assert configured["lr_scheduler"]["interval"] == "step"
    rates = []
    for _ in range(steps):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return rates


def test_adamw_warms_up_then_decays_to_zero_and_adam_is_constant() -> None:
    rates = learning_rates("adamw")  # 200 steps: a warm-up of 10
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)
    assert all(a < b for a, b in zip(rates[:10], rates[1:10], strict=False))  # rising
    assert all(a >= b for a, b in zip(rates[10:], rates[11:], strict=False))  # then falling
    assert rates[105] == pytest.approx(0.5e-3, rel=0.02) and rates[-1] < 1e-6  # half way; nearly zero
    assert learning_rates("adam") == [1e-3] * 200


# --- real runs -----------------------------------------------------------------------------


def states_equal(a: dict, b: dict, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if atol:
            assert torch.allclose(a[k].double(), b[k].double(), atol=atol, rtol=0), k
        else:
            assert torch.equal(a[k], b[k]), k


def test_trained_model_is_a_safe_self_contained_file(trained_model: Path) -> None:
    payload = torch.load(trained_model, map_location="cpu", weights_only=True)
    assert payload["format"] == "fslcli-protonet" and payload["format_version"] == 1
    assert payload["meta"]["steps"] == 2
    assert payload["source"]["kind"] == "tinysol-gm"
    assert payload["settings"]["episode"] == {"ways": 3, "shots": 2, "queries": 3}  # --ways/--shots/--queries
    # The split is stored resolved: every class but the test classes and those sharing their recordings.
    train = payload["splits"]["train"]
    assert (
        len(train) == 7
        and not {"Violin", "French Horn"} & set(train)
        and not set(train) & set(payload["splits"]["test"])
    )
    loaded = load_model(trained_model)
    states_equal(loaded.net.state_dict(), payload["state_dict"])
    assert loaded.config.train.steps == 2 and loaded.config.split.test_classes == tuple(payload["splits"]["test"])
    with torch.no_grad():
        emb = loaded.net.embed(torch.zeros(2, loaded.config.audio.excerpt_samples))
    assert emb.shape == (2, loaded.net.dim) and torch.isfinite(emb).all()
    run = trained_model.parent
    for name in ("run.json", "history.jsonl", "learning_curves.html", "checkpoints/last.ckpt"):
        assert (run / name).is_file(), name
    rows = read_history(run)
    assert [r["step"] for r in rows] == [1, 2]
    assert all("val_acc" in r and "train_loss" in r for r in rows)
    assert payload["meta"]["best_val_acc"] == max(r["val_acc"] for r in rows)


def test_same_seed_twice_gives_identical_weights(trained_model: Path, gm_home: Path, tmp_path: Path) -> None:
    # the exact command of the trained_model fixture, into another folder
    res = CliRunner().invoke(app, tiny_train_args(gm_home, tmp_path / "again"))
    assert res.exit_code == 0, res.output
    a = torch.load(trained_model, weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "again" / "model.pt", weights_only=True)["state_dict"]
    states_equal(a, b)


def test_model_file_keeps_the_training_clips_calibration(trained_model: Path, gm_home: Path) -> None:
    # embedding_norm "whitened" (the default): the centre and whitener saved in model.pt are the
    # mean and within-class whitener of a fixed subset of training clips, embedded by the saved weights.
    from fslcli.data import prepare
    from fslcli.datasets import DataSource
    from fslcli.embedding import embed_cached
    from fslcli.model import within_class_whitener

    loaded = load_model(trained_model)
    config = loaded.config
    assert config.model.embedding_norm == "whitened"
    prep = prepare(
        DataSource("tinysol-gm", gm_home), config.split, sample_rate=config.audio.sample_rate, cache_dir=None
    )
    pools = prep.pools
    val = make_val_data(prep.cache, config, train_pool=pools.train, val_pool=pools.val, groups=pools.groups)
    # this small set has fewer training clips per class than the cap: all of them calibrate
    calibrating = [val.ids[r] for r in val.center_rows]
    assert sorted(calibrating) == sorted(int(i) for ids in pools.train.values() for i in ids)
    per_clip = embed_cached(loaded.net, prep.cache, calibrating)
    assert torch.allclose(loaded.net.center, per_clip.mean(0), atol=1e-4)
    assert loaded.net.center.abs().sum() > 0
    unit = torch.nn.functional.normalize(per_clip.double() - per_clip.double().mean(0), dim=-1)
    expected = within_class_whitener(unit, torch.from_numpy(val.center_labels), config.model.whiten_shrinkage)
    assert torch.allclose(loaded.net.whitener, expected.float(), atol=1e-3)


def test_training_learns_to_tell_timbres_apart(tmp_path: Path) -> None:
    """50 steps on five synthetic timbres: the training loss falls, and new recordings of those
    timbres are told apart far above chance (5-way: 0.2)."""
    from fslcli.datasets import DataSource
    from fslcli.datasets.folder import read_folder
    from fslcli.evaluation import evaluate
    from fslcli.features import open_cache
    from fslcli.splits import make_pools
    from fslcli.training import fit

    timbres = (*FOLDER_TIMBRES, "Hollow")
    train_dir = write_folder_dataset(tmp_path / "train", per_class=16, seed=0, timbres=timbres)
    test_dir = write_folder_dataset(tmp_path / "test", per_class=10, seed=1, timbres=timbres)
    config = replace(
        RunConfig(),
        audio=AudioConfig(excerpt_seconds=0.5, n_mels=32),
        model=ModelConfig(channels=(8, 16), embedding_dim=32),
        episode=EpisodeConfig(5, 3, 3),
        train=replace(TrainConfig(), steps=50, val_every=25, val_episodes=20, accelerator="cpu"),
        split=SplitConfig(train_classes=timbres, test_classes=(), group_by="none"),
    )
    cache, _ = open_cache(read_folder(train_dir).clips, SR, tmp_path / "cache")
    pools = make_pools(cache.clips, config.split)
    result = fit(
        config, cache, train_pool=pools.train, val_pool=pools.val, source=DataSource("folder", train_dir),
        run_dir=tmp_path / "run",
    )  # fmt: skip
    rows = read_history(tmp_path / "run")
    assert [r["step"] for r in rows] == [25, 50]
    assert rows[1]["train_loss"] < 0.8 * rows[0]["train_loss"]
    test_cache, _ = open_cache(read_folder(test_dir).clips, SR, tmp_path / "cache")
    net = load_model(result.model_path).net
    scores = evaluate(net, test_cache, make_pool(test_cache.labels()), EpisodeConfig(5, 5, 5), episodes=40, seed=0)
    assert scores.mean_accuracy > 0.6


def _interrupt_after(step: int):
    """A replacement for fit's history callback that also presses Ctrl-C once ``step`` steps are done."""
    real = FIT_MODULE._history_callback

    def history_then_ctrl_c(run_dir, progress, t0):
        history = real(run_dir, progress, t0)

        class CtrlC(type(history)):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
                if trainer.global_step >= step:
                    raise KeyboardInterrupt

        return CtrlC()

    return history_then_ctrl_c


def history(run: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in read_history(run)]


TRAIN_SMALL = ["--dataset", "tinysol-gm", "--ways", "2", "--shots", "1", "--queries", "2", "--val-episodes", "3"]
TRAIN_SMALL += ["--accelerator", "cpu"]


@pytest.mark.slow
def test_interrupted_then_resumed_run_matches_an_uninterrupted_one(
    gm_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    args = ["train", "--data-home", str(gm_home), *TRAIN_SMALL, "--steps", "4", "--val-every", "2"]
    full, part = tmp_path / "full", tmp_path / "part"
    res = runner.invoke(app, [*args, "--out", str(full)])
    assert res.exit_code == 0, res.output

    with monkeypatch.context() as m:
        m.setattr(FIT_MODULE, "_history_callback", _interrupt_after(2))
        res = runner.invoke(app, [*args, "--out", str(part)])
    assert res.exit_code == 130, res.output
    assert f"Continue with: fsl train --resume {part}" in " ".join(res.output.split())
    assert not (part / "model.pt").exists()
    assert torch.load(part / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2

    res = runner.invoke(app, ["train", "--resume", str(part)])
    assert res.exit_code == 0, res.output
    assert "Trained 4 steps" in res.output
    last_full = torch.load(full / "checkpoints" / "last.ckpt", weights_only=True)
    last_part = torch.load(part / "checkpoints" / "last.ckpt", weights_only=True)
    assert last_full["global_step"] == last_part["global_step"] == 4
    states_equal(last_full["state_dict"], last_part["state_dict"], atol=1e-6)
    states_equal(
        torch.load(full / "model.pt", weights_only=True)["state_dict"],
        torch.load(part / "model.pt", weights_only=True)["state_dict"],
        atol=1e-6,
    )
    assert history(part) == history(full)  # the same blocks, each logged once


def test_resume_before_first_validation_says_so(gm_home: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(
        json.dumps({"settings": RunConfig().to_dict(), "source": {"kind": "tinysol-gm", "path": str(gm_home)}})
    )
    res = CliRunner().invoke(app, ["train", "--resume", str(run)])
    assert res.exit_code == 1
    assert "no checkpoints/last.ckpt" in res.output
    res = CliRunner().invoke(app, ["train", "--resume", str(tmp_path / "nothing")])
    assert res.exit_code == 1 and "no run.json" in res.output


def _gloo_unavailable(text: str) -> bool:
    needles = ("gloo", "Address already in use", "Connection refused", "errno 98", "bind", "getaddrinfo")
    return any(n.lower() in text.lower() for n in needles)


@pytest.mark.slow
def test_ddp_two_cpu_processes_write_a_loadable_model(gm_home: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "fslcli", "train", "--devices", "2", "--data-home", str(gm_home), *TRAIN_SMALL]
    cmd += ["--steps", "2", "--val-every", "1", "--out", str(out)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("FSL_RUN_DIR", None)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    except subprocess.TimeoutExpired:
        pytest.skip("two-process gloo training did not finish within 300 s on this machine")
    if proc.returncode != 0 and _gloo_unavailable(proc.stderr + proc.stdout):
        pytest.skip(f"gloo cannot set up a process group here: {proc.stderr.strip().splitlines()[-1:]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = load_model(out / "model.pt")
    assert loaded.meta["steps"] == 2
    assert loaded.config.train.devices == 2
    assert [r["step"] for r in history(out)] == [1, 2]  # rank 0 alone writes the history
    assert all(math.isfinite(r["train_loss"]) for r in history(out))
