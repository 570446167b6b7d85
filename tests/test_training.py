"""Episodic training: seeded data, a real CPU run, determinism, resume after an interrupt, DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_train_args
from typer.testing import CliRunner

from fslcli import training
from fslcli.checkpoint import load_model
from fslcli.cli import app
from fslcli.config import AugmentConfig, EpisodeConfig, RunConfig
from fslcli.episodes import make_pool
from fslcli.errors import EpisodeError, FslError
from fslcli.training import (
    BlockSampler,
    EpisodeDataset,
    apply_spec_masks,
    build_net,
    resolve_accelerator,
    spec_mask_params,
    val_episode_config,
)

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


def test_apply_spec_masks_zeroes_exactly_the_masked_cells(rng: np.random.Generator) -> None:
    x = torch.from_numpy(rng.uniform(1, 2, (2, 1, 6, 8)).astype(np.float32))
    before = x.clone()
    tm = torch.tensor([[[2, 3]], [[0, 0]]])  # clip 0: frames 2..4; clip 1: none
    fm = torch.tensor([[[5, 1]], [[1, 2]]])  # clip 0: band 5; clip 1: bands 1..2
    y = apply_spec_masks(x, tm, fm)
    assert torch.equal(x, before)  # a new tensor; the input is untouched
    expected = before.clone()
    expected[0, 0, :, 2:5] = 0
    expected[0, 0, 5, :] = 0
    expected[1, 0, 1:3, :] = 0
    assert torch.equal(y, expected)


def test_spec_mask_params_are_seeded_and_in_range() -> None:
    aug = AugmentConfig(spec_time_masks=2, spec_freq_masks=1, time_mask_frames=5, freq_mask_bins=3)
    a = spec_mask_params(np.random.default_rng(3), 50, 16, 20, aug)
    b = spec_mask_params(np.random.default_rng(3), 50, 16, 20, aug)
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
    tm, fm = a
    assert tm.shape == (50, 2, 2) and fm.shape == (50, 1, 2)
    assert (tm[..., 1] <= 5).all() and (tm[..., 0] + tm[..., 1] <= 20).all()
    assert (fm[..., 1] <= 3).all() and (fm[..., 0] + fm[..., 1] <= 16).all()


def make_dataset(cache, rank: int = 0, seed: int = 0, aug: AugmentConfig = AugmentConfig()) -> EpisodeDataset:
    return EpisodeDataset(cache, make_pool(cache.labels()), EpisodeConfig(3, 2, 2), 4000, aug, seed, rank, 10, 32, 16)


def test_episode_dataset_items_are_seeded_by_index_and_rank(folder_cache) -> None:
    ds = make_dataset(folder_cache)
    item = ds[3]
    assert len(ds) == 10
    assert item["waves"].shape == (3 * (2 + 2), 4000)
    assert item["target"].tolist() == [0, 0, 1, 1, 2, 2]
    assert item["time_masks"].shape[0] == item["freq_masks"].shape[0] == 12
    again = make_dataset(folder_cache)[3]  # a fresh dataset: nothing carried over from earlier items
    assert all(torch.equal(item[k], again[k]) for k in item)
    assert not torch.equal(item["waves"], ds[4]["waves"])
    assert not torch.equal(item["waves"], make_dataset(folder_cache, rank=1)[3]["waves"])
    assert not torch.equal(item["waves"], make_dataset(folder_cache, seed=1)[3]["waves"])


def test_onset_crops_start_within_the_span_after_each_clips_onset(tmp_path: Path) -> None:
    import soundfile as sf

    from fslcli.datasets.folder import read_folder
    from fslcli.features import open_cache

    # Each clip: 19 frames (of 256 samples) of silence, then a loud ramp whose value tells how far
    # into the note a sample lies, so an excerpt's first sample gives its start.
    sr, silence, note = 16_000, 19 * 256, 24_000
    ramp = (0.5 + 0.5 * np.arange(note) / note).astype(np.float32)
    for c in "abc":
        (tmp_path / "data" / c).mkdir(parents=True)
        for k in range(4):
            wave = np.concatenate([np.zeros(silence, np.float32), ramp])
            sf.write(tmp_path / "data" / c / f"{k}.wav", wave, sr, subtype="FLOAT")
    cache, _ = open_cache(read_folder(tmp_path / "data").clips, sr, tmp_path / "cache")
    aug = AugmentConfig(onset_crop_seconds=0.1, gain_db=0.0)
    ds = EpisodeDataset(cache, make_pool(cache.labels()), EpisodeConfig(3, 2, 2), 4000, aug, 0, 0, 10, 32, 16)
    firsts = torch.cat([ds[i]["waves"][:, 0] for i in range(10)]).numpy()
    into_note = (firsts - 0.5) / 0.5 * note  # samples past the onset
    assert (firsts >= 0.5).all()  # never before the onset
    assert into_note.max() <= 0.1 * sr + 1
    assert into_note.max() > 0.05 * sr  # and spread over the span
    anywhere = EpisodeDataset(
        cache, make_pool(cache.labels()), EpisodeConfig(3, 2, 2), 4000, AugmentConfig(gain_db=0.0), 0, 0, 10, 32, 16
    )
    assert (torch.cat([anywhere[i]["waves"][:, 0] for i in range(10)]) == 0).any()  # some start in the silence


def test_episode_dataset_without_augmentation_reads_clip_starts(folder_cache) -> None:
    aug = AugmentConfig(random_crop=False, gain_db=0.0)
    item = make_dataset(folder_cache, aug=aug)[0]
    w = item["waves"].numpy()
    # every row is the first 4000 samples of some cached clip
    starts = {folder_cache.excerpt(i, 0, 4000).tobytes() for i in range(len(folder_cache))}
    assert all(row.tobytes() in starts for row in w)


@pytest.mark.parametrize(
    ("sizes", "cfg", "expected"),
    [
        ({"a": 9, "b": 9, "c": 9}, EpisodeConfig(5, 5, 15), EpisodeConfig(3, 5, 4)),
        ({"a": 2, "b": 3}, EpisodeConfig(5, 5, 15), EpisodeConfig(2, 1, 1)),
        ({"a": 30, "b": 30}, EpisodeConfig(2, 1, 3), EpisodeConfig(2, 1, 3)),
    ],
)
def test_val_episode_config_shrinks_to_held_out_data(sizes: dict, cfg: EpisodeConfig, expected: EpisodeConfig) -> None:
    pool = {k: np.arange(n) for k, n in sizes.items()}
    assert val_episode_config(pool, cfg) == expected


def test_val_episode_config_refuses_too_little_data() -> None:
    with pytest.raises(EpisodeError, match=r"at least 2 classes with 2 held-out clips.*a: 1"):
        val_episode_config({"a": np.arange(1), "b": np.arange(5)}, EpisodeConfig())


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


def test_build_net_is_seeded_and_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a, b = build_net(RunConfig(), 7), build_net(RunConfig(), 7)
    assert torch.rand(1) == expected_next
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    c = build_net(RunConfig(), 8)
    assert not torch.equal(a.head.weight, c.head.weight)


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
    assert payload["settings"]["episode"] == {"ways": 3, "shots": 2, "queries": 3}
    loaded = load_model(trained_model)
    states_equal(loaded.net.state_dict(), payload["state_dict"])
    assert loaded.config.train.steps == 2 and loaded.config.split.test_classes == tuple(payload["splits"]["test"])
    with torch.no_grad():
        emb = loaded.net.embed(torch.zeros(2, loaded.config.audio.excerpt_samples))
    assert emb.shape == (2, loaded.net.dim) and torch.isfinite(emb).all()
    run = trained_model.parent
    for name in ("run.json", "history.jsonl", "learning_curves.html", "checkpoints/last.ckpt"):
        assert (run / name).is_file(), name
    rows = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert all("val_acc" in r and "train_loss" in r for r in rows)


TRAIN_SMALL = [
    "--dataset",
    "tinysol-gm",
    "--ways",
    "2",
    "--shots",
    "1",
    "--queries",
    "2",
    "--val-episodes",
    "3",
    "--accelerator",
    "cpu",
]


def test_same_seed_twice_gives_identical_weights(trained_model: Path, gm_home: Path, tmp_path: Path) -> None:
    # the exact command of the trained_model fixture, into another folder
    args = tiny_train_args(gm_home, tmp_path / "again")
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    a = torch.load(trained_model, weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "again" / "model.pt", weights_only=True)["state_dict"]
    states_equal(a, b)


def test_model_file_keeps_the_training_clips_calibration(trained_model: Path, gm_home: Path) -> None:
    # embedding_norm "whitened" (the default): the centre and whitener saved in model.pt are the
    # mean and within-class whitener of a fixed subset of training clips, embedded by the saved weights.
    from fslcli.datasets import DataSource
    from fslcli.evaluation import embed_windows
    from fslcli.model import within_class_whitener
    from fslcli.workflows import prepare

    loaded = load_model(trained_model)
    config = loaded.config
    assert config.model.embedding_norm == "whitened"
    prep = prepare(DataSource("tinysol-gm", gm_home), config.split, config.audio.sample_rate, None)
    val = training.make_val_data(prep.cache, prep.pools.val, config, prep.pools.train)
    per_class = training.center_clips_per_class(len(prep.pools.train))
    assert val.n_center == sum(min(len(v), per_class) for v in prep.pools.train.values())
    # this small set has fewer training clips per class than the cap: all of them calibrate,
    # in index order, each labelled with its training class
    names = sorted(prep.pools.train)
    center_ids = sorted(int(i) for ids in prep.pools.train.values() for i in ids)
    for clip, label in zip(center_ids, val.center_labels, strict=True):
        assert clip in prep.pools.train[names[label]]
    windows, owners = val.center_windows()
    per_clip = embed_windows(loaded.net, windows, owners, val.n_center, finish=False)
    assert torch.allclose(loaded.net.center, per_clip.mean(0), atol=1e-4)
    assert loaded.net.center.abs().sum() > 0
    unit = torch.nn.functional.normalize(per_clip.double() - per_clip.double().mean(0), dim=-1)
    expected = within_class_whitener(unit, torch.from_numpy(val.center_labels), config.model.whiten_shrinkage)
    assert torch.allclose(loaded.net.whitener, expected.float(), atol=1e-3)
    assert not torch.equal(loaded.net.whitener, torch.eye(loaded.net.dim))


def test_model_files_with_centered_l2_embeddings_still_load(trained_model: Path, tmp_path: Path) -> None:
    # Written before whitening became the default: compared as they were, without a whitener.
    payload = torch.load(trained_model, map_location="cpu", weights_only=True)
    payload["settings"]["model"]["embedding_norm"] = "centered-l2"
    del payload["settings"]["model"]["whiten_shrinkage"]
    del payload["state_dict"]["whitener"]
    old = tmp_path / "old.pt"
    torch.save(payload, old)
    net = load_model(old).net
    assert net.whitener is None
    emb = torch.randn(3, net.dim)
    assert torch.allclose(net.finish(emb), torch.nn.functional.normalize(emb - net.center, dim=-1))


def test_model_files_from_before_embedding_norm_load_unnormalised(trained_model: Path, tmp_path: Path) -> None:
    payload = torch.load(trained_model, map_location="cpu", weights_only=True)
    del payload["settings"]["model"]["embedding_norm"]
    del payload["state_dict"]["center"]
    del payload["state_dict"]["whitener"]
    old = tmp_path / "old.pt"
    torch.save(payload, old)
    loaded = load_model(old)
    assert loaded.config.model.embedding_norm == "none"
    emb = torch.randn(3, loaded.net.dim)
    assert torch.equal(loaded.net.finish(emb), emb)


@pytest.mark.parametrize(
    ("setting", "default", "before"),
    [
        ("eval_shifts", 2, 0),  # each clip embedded once
        ("support_cov_weight", 0.1, 0.0),  # whitened by the training classes alone
        ("eval_pitch_shifts", [-8, -4, 4, 8], ()),  # no pitch-shifted views
    ],
)
def test_model_files_from_before_a_setting_existed_load_with_how_they_were_evaluated(
    trained_model: Path, tmp_path: Path, setting: str, default: object, before: object
) -> None:
    payload = torch.load(trained_model, map_location="cpu", weights_only=True)
    assert payload["settings"]["model"][setting] == default
    del payload["settings"]["model"][setting]
    old = tmp_path / "old.pt"
    torch.save(payload, old)
    assert getattr(load_model(old).config.model, setting) == before


def test_auxiliary_class_loss_trains_but_stays_out_of_the_model_file(
    trained_model: Path, gm_home: Path, tmp_path: Path
) -> None:
    args = [*tiny_train_args(gm_home, tmp_path / "aux"), "--class-loss-weight", "1.0"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    plain = torch.load(trained_model, weights_only=True)
    aux = torch.load(tmp_path / "aux" / "model.pt", weights_only=True)
    assert aux["settings"]["train"]["class_loss_weight"] == 1.0
    assert aux["state_dict"].keys() == plain["state_dict"].keys()  # the training-only head is not saved
    # the same seed and episodes, a different loss: different weights and a higher training loss
    assert not torch.equal(aux["state_dict"]["head.weight"], plain["state_dict"]["head.weight"])
    assert history(tmp_path / "aux")[0]["train_loss"] > history(trained_model.parent)[0]["train_loss"]
    ckpt = torch.load(tmp_path / "aux" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert any(k.startswith("class_head.") for k in ckpt["state_dict"])  # resumable with its head


def test_ensemble_members_each_learn_and_the_model_file_holds_them_all(gm_home: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(app, [*tiny_train_args(gm_home, tmp_path / "ens"), "--members", "2"])
    assert res.exit_code == 0, res.output
    loaded = load_model(tmp_path / "ens" / "model.pt")
    net, config = loaded.net, loaded.config
    assert config.model.members == 2 and net.dim == 2 * net.member_dim
    start = build_net(config, config.train.seed).state_dict()
    trained = net.state_dict()
    for head in ("head.weight", "more_heads.0.weight"):  # each member has its own loss and learns
        assert not torch.equal(trained[head], start[head]), head
    assert net.whitener.shape == (net.dim, net.dim)  # compared as one model
    with torch.no_grad():
        emb = net.embed(torch.zeros(2, config.audio.excerpt_samples))
    assert emb.shape == (2, net.dim) and torch.isfinite(emb).all()
    info = CliRunner().invoke(app, ["info", str(tmp_path / "ens" / "model.pt")])
    assert info.exit_code == 0 and "2 x conv" in info.output, info.output


def test_weight_average_step_and_warm_up() -> None:
    live, average = build_net(RunConfig(), 1), build_net(RunConfig(), 2)
    before = {k: v.clone() for k, v in average.state_dict().items()}
    average.center.fill_(3.0)  # calibration buffers are validation's business
    training.update_average(average, live, 0.9)
    for (name, a), p in zip(average.named_parameters(), live.parameters(), strict=True):
        assert torch.allclose(a, 0.9 * before[name] + 0.1 * p), name
    assert torch.equal(average.band_norm.running_mean, live.band_norm.running_mean)  # statistics copied
    assert (average.center == 3.0).all() and torch.equal(average.whitener, before["whitener"])
    assert training.ema_decay_at(0.995, 0) == pytest.approx(0.1)  # forgets the initialisation fast
    assert training.ema_decay_at(0.995, 10_000) == 0.995


def test_weight_average_is_what_the_model_file_holds(gm_home: Path, tmp_path: Path) -> None:
    from dataclasses import replace

    from fslcli.datasets import DataSource
    from fslcli.workflows import prepare

    base = RunConfig()
    config = replace(
        base,
        episode=EpisodeConfig(3, 2, 3),
        train=replace(base.train, steps=3, val_every=3, val_episodes=3, accelerator="cpu", ema_decay=0.9),
    )
    source = DataSource("tinysol-gm", gm_home)
    prep = prepare(source, config.split, config.audio.sample_rate, tmp_path / "cache")
    res = training.fit(config, prep.cache, prep.pools.train, prep.pools.val, source, tmp_path / "run")
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    saved = load_model(res.model_path).net.state_dict()
    # The calibration (centre, whitening) is refitted with the pitch-shifted views once training ends.
    calibration = ("center", "whitener")
    for name, value in saved.items():
        assert torch.equal(value, ckpt["state_dict"][f"ema_net.{name}"]) != (name in calibration), name
    # three steps of decay 0.1, 0.18, 0.25 (the warm-up): the average is not the live network
    assert not torch.equal(saved["head.weight"], ckpt["state_dict"]["net.head.weight"])
    with pytest.raises(FslError, match="weight-average decay 1.0"):
        training.preflight(
            replace(config, train=replace(config.train, ema_decay=1.0)), prep.pools.train, prep.pools.val
        )


def test_episode_batch_labels_name_each_clip_class(folder_cache) -> None:
    from fslcli.episodes import sample_episode
    from fslcli.training import episode_batch

    labels = folder_cache.labels()
    pool = make_pool(labels)
    index = {c: k for k, c in enumerate(pool)}
    ep = sample_episode(pool, EpisodeConfig(3, 2, 1), np.random.default_rng(0))
    batch = episode_batch(folder_cache, ep, 800, None, np.random.default_rng(0), 32, 4, class_index=index)
    ids = np.concatenate([ep.support.reshape(-1), ep.query.reshape(-1)])
    assert batch["labels"].tolist() == [index[labels[i]] for i in ids]
    assert sorted(set(batch["labels"].tolist())) == sorted(index[c] for c in ep.classes)


def _interrupt_after(step: int):
    """A replacement for training._callbacks that adds Ctrl-C once ``step`` steps are done."""
    real = training._callbacks

    def callbacks(run_dir, progress, t0):
        import pytorch_lightning as pl

        class CtrlC(pl.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
                if trainer.global_step >= step:
                    raise KeyboardInterrupt

        return [*real(run_dir, progress, t0), CtrlC()]

    return callbacks


def history(run: Path) -> list[dict]:
    return [
        {k: v for k, v in json.loads(line).items() if k != "seconds"}
        for line in (run / "history.jsonl").read_text().splitlines()
    ]


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
        m.setattr(training, "_callbacks", _interrupt_after(2))
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
    cmd = [
        sys.executable,
        "-m",
        "fslcli",
        "train",
        "--devices",
        "2",
        "--data-home",
        str(gm_home),
        *TRAIN_SMALL,
        "--steps",
        "2",
        "--val-every",
        "1",
        "--out",
        str(out),
    ]
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
    torch.load(out / "model.pt", weights_only=True)
    assert [r["step"] for r in history(out)] == [1, 2]  # rank 0 alone writes the history


def test_the_saved_calibration_is_refitted_to_every_test_time_view(rng: np.random.Generator) -> None:
    from fslcli.config import AudioConfig, ModelConfig
    from fslcli.evaluation import embed_windows
    from fslcli.model import ProtoNet

    audio = AudioConfig(excerpt_seconds=0.25, n_mels=32)
    net = ProtoNet(audio, ModelConfig(channels=(4, 8), embedding_dim=16, eval_pitch_shifts=(-4, 4))).eval()
    # Two validation clips (owners 0, 1), then six calibration clips of two classes.
    windows = (0.1 * rng.standard_normal((8, audio.excerpt_samples))).astype(np.float32)
    val = training.ValData(windows, np.arange(8), list(range(8)), [], np.arange(2, 8), np.array([0, 0, 0, 1, 1, 1]))
    training.refit_calibration(net, val, "cpu")
    every_view = embed_windows(net, windows[2:], np.arange(6), 6, finish=False)
    assert torch.allclose(net.center, every_view.mean(dim=0), atol=1e-5)
    with torch.no_grad():
        as_validated = net.embed(torch.from_numpy(windows[2:]), semitones=())
    assert not torch.allclose(net.center, as_validated.mean(dim=0), atol=1e-3)  # not validation's space
