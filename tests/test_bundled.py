"""The model that ships with fslcli: a safe file, rebuildable from its own settings, used when no
MODEL is given, good on rendered examples, and inside the wheel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from fslcli.checkpoint import load_model
from fslcli.cli import app
from fslcli.model import ProtoNet
from fslcli.models import bundled_model

BUNDLED = bundled_model()
ROOT = Path(__file__).resolve().parents[1]


def test_the_bundled_file_is_weights_only_and_rebuilds_from_its_settings() -> None:
    assert BUNDLED is not None and BUNDLED.stat().st_size < 8 * 2**20  # a few MB
    payload = torch.load(BUNDLED, map_location="cpu", weights_only=True)  # no pickled code
    loaded = load_model(BUNDLED)
    rebuilt = ProtoNet(loaded.config.audio, loaded.config.model)
    rebuilt.load_state_dict(payload["state_dict"])  # strict: every tensor has its place
    recipe = payload["meta"]["recipe"]
    assert recipe["command"] == "make pretrained" and recipe["seed"] == 0 and recipe["steps"] > 0
    assert set(payload["meta"]["held_out"]) >= {"FluidR3_GM", "MuseScore_General"}
    assert payload["source"]["path"] is None  # points at each user's own default data home


@pytest.fixture(scope="module")
def examples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fslcli.datasets.examples import render_examples

    return render_examples(tmp_path_factory.mktemp("examples") / "ex", per_class=5).home


def test_predict_without_model_uses_the_bundled_one(
    examples: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no runs/ here
    res = CliRunner().invoke(
        app, ["predict", "--support", str(examples / "support"), str(examples / "queries"), "--json"]
    )
    assert res.exit_code == 0, res.output
    assert "using the model that ships with fslcli" in res.stderr and res.stderr.count("\n") <= 3
    records = json.loads(res.stdout)
    assert len(records) == 25 and all(r["true_class"] for r in records)
    accuracy = sum(r["predicted"] == r["true_class"] for r in records) / len(records)
    assert accuracy >= 0.7  # 5 classes: chance is 0.2


@pytest.mark.slow
def test_the_wheel_holds_the_model_and_fsl_models_lists_it(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("fslcli-*.whl")
    assert "fslcli/models/default.pt" in zipfile.ZipFile(wheel).namelist()
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    code = "from fslcli.cli import main; import sys; sys.argv = ['fsl', 'models']; main()"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "default" in out.stdout and "bundled" in out.stdout
