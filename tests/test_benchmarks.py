"""The bundled model's recipe (benchmarks/pretrained.py over benchmarks/libraries.py), run for 4
steps on two copies of the small render: it trains with fsl train's split and stamps a file that
loads with its recipe, its figures and both fonts, and no path of this machine."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import libraries  # noqa: E402
import library_episodes  # noqa: E402
import pretrained  # noqa: E402


@pytest.mark.slow
def test_the_recipe_trains_and_stamps_a_loadable_model(gm_home: Path, tmp_path: Path) -> None:
    import shutil

    from fslcli.checkpoint import load_model
    from fslcli.config import SplitConfig
    from fslcli.data import prepare
    from fslcli.datasets import DataSource

    other = tmp_path / "other-library"
    shutil.copytree(gm_home, other)
    sources = [DataSource("tinysol-gm", gm_home), DataSource("tinysol-gm", other)]
    prep = prepare(sources, SplitConfig(), sample_rate=16_000, cache_dir=None)
    config = libraries.configuration("default", 0, None, "cpu", quick=True)
    assert config.split.train_classes is None  # resolved from the data, as fsl train resolves it
    model, seconds, fitted = libraries.train(config, prep, tmp_path / "run")
    assert seconds > 0 and [h["step"] for h in fitted["history"]] == [2, 4]

    out = tmp_path / "default.pt"
    pretrained.stamp(model, out, {"FluidR3_GM": {"5-shot": 0.5, "1-shot": 0.3}})
    payload = torch.load(out, map_location="cpu", weights_only=True)
    assert payload["meta"]["recipe"]["seed"] == 0 and payload["meta"]["recipe"]["steps"] == 4
    assert payload["source"] == {"kind": "tinysol-gm", "path": None}
    assert "sources" not in payload["meta"] and "soundfont_sha256" not in payload["meta"]
    loaded = load_model(out)
    font = json.loads((gm_home / "render_report.json").read_text())["soundfont_sha256"]
    assert loaded.fonts == (font, font)  # eval warns in-font on a render of either
    assert loaded.config.split.train_classes == prep.split.train_classes
    assert pretrained.compare(out, out)  # a file is bit-identical to itself


def test_the_per_library_study_draws_each_episode_from_one_library(gm_home: Path, tmp_path: Path) -> None:
    import shutil

    from fslcli.config import AugmentConfig, EpisodeConfig, SplitConfig
    from fslcli.data import prepare
    from fslcli.datasets import DataSource

    other = tmp_path / "other-library"
    shutil.copytree(gm_home, other)
    prep = prepare(
        [DataSource("tinysol-gm", gm_home), DataSource("tinysol-gm", other)], SplitConfig(), sample_rate=16_000,
        cache_dir=tmp_path / "cache",
    )  # fmt: skip
    dataset = library_episodes.per_library_dataset(prep.libraries)(
        prep.cache, prep.pools.train, EpisodeConfig(3, 2, 2), excerpt=1600, aug=AugmentConfig(), seed=0, rank=0,
        steps=20, n_mels=64, n_frames=7,
    )  # fmt: skip
    in_other = {i for i, c in enumerate(prep.cache.clips) if other in c.path.parents}
    drawn = set()
    for i in range(20):
        ep, _ = dataset.episode(i)
        ids = {int(x) for x in np.concatenate([ep.support.ravel(), ep.query.ravel()])}
        assert ids <= in_other or not ids & in_other  # one library per episode
        drawn.add(ids <= in_other)
        assert dataset[i]["waves"].shape == (len(ep.classes) * 4, 1600)
    assert drawn == {True, False}  # both libraries take turns
