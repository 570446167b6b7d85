"""Shared fixtures: tiny generated audio, isolated caches and data homes, a seeded rng."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

sys.path.insert(0, str(Path(__file__).parent))  # tests/ helpers (tinysol_fixture) import by name

SR = 16_000

# Synthetic "instruments": distinct spectral envelopes and attacks, random pitch.
_TIMBRES = {
    "Bright": (np.array([1.0, 0.9, 0.8, 0.7, 0.6, 0.5]), 0.01),
    "Dark": (np.array([1.0, 0.3, 0.1]), 0.05),
    "Odd": (np.array([1.0, 0.0, 0.6, 0.0, 0.4, 0.0, 0.3]), 0.02),
    "Noisy": (np.array([1.0, 0.5]), 0.001),
    "Hollow": (np.array([0.2, 1.0, 0.0, 0.0, 0.5]), 0.08),
}
#: The classes of :func:`write_folder_dataset` (and of the ``folder_data`` fixture).
FOLDER_TIMBRES: tuple[str, ...] = ("Bright", "Dark", "Odd", "Noisy")


def synth_tone(rng: np.random.Generator, timbre: str, seconds: float = 0.6, sr: int = SR) -> np.ndarray:
    """A short note of one synthetic timbre: ``(n_samples,)`` float32 in [-1, 1]."""
    amps, attack = _TIMBRES[timbre]
    f0 = 110.0 * 2 ** (rng.integers(0, 24) / 12)
    t = np.arange(int(seconds * sr)) / sr
    x = sum(a * np.sin(2 * np.pi * f0 * (k + 1) * t + rng.uniform(0, 6.28)) for k, a in enumerate(amps) if a > 0)
    if timbre == "Noisy":
        x = x + 0.8 * rng.standard_normal(len(t))
    env = np.minimum(1.0, t / attack) * np.exp(-t * rng.uniform(1.0, 3.0))
    x = x * env
    return (0.5 * x / (np.abs(x).max() + 1e-9)).astype(np.float32)


def write_folder_dataset(
    root: Path, per_class: int = 10, seed: int = 0, seconds: float = 0.6, timbres: tuple[str, ...] = FOLDER_TIMBRES
) -> Path:
    """``root/<class>/<n>.wav`` for the synthetic ``timbres`` (by default the four of ``folder_data``)."""
    rng = np.random.default_rng(seed)
    for name in timbres:
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            sf.write(d / f"{name.lower()}_{k:02d}.wav", synth_tone(rng, name, seconds), SR, subtype="PCM_16")
    return root


def _foreign_fslcli_modules() -> list[str]:
    """fslcli modules imported from anywhere but the folder ``fslcli`` itself came from.

    A shared environment may hold an editable install of another checkout: a module this
    checkout lacks (removed or renamed) is then silently imported from there.
    """
    package = sys.modules.get("fslcli")
    if package is None or package.__file__ is None:
        return []
    home = Path(package.__file__).resolve().parent
    return sorted(
        name
        for name, module in list(sys.modules.items())
        if name.startswith("fslcli.")
        and getattr(module, "__file__", None)
        and not Path(module.__file__).resolve().is_relative_to(home)
    )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    foreign = _foreign_fslcli_modules()
    if foreign:
        home = Path(sys.modules["fslcli"].__file__).parent
        print(f"\nerror: tests imported fslcli modules from outside {home}: {', '.join(foreign)}", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every test's cache and default data homes out of the user's folders."""
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("FSL_CACHE_DIR", str(base / "cache"))
    monkeypatch.setenv("FSL_DATA_ROOT", str(base / "data-root"))
    monkeypatch.delenv("FSL_RUN_DIR", raising=False)


@pytest.fixture(scope="session")
def folder_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four classes x 10 clips of 0.6 s synthetic tones, one subfolder per class."""
    return write_folder_dataset(tmp_path_factory.mktemp("folder-data"), per_class=10)


@pytest.fixture(scope="session")
def gm_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small render of the offline dataset: all 14 instruments, 5 notes x 3 dynamics each."""
    from fslcli.datasets.tinysol_gm import render_tinysol_gm

    home = tmp_path_factory.mktemp("gm") / "tinysol-gm"
    render_tinysol_gm(home, seed=0, max_notes_per_instrument=5)
    return home


def tiny_train_args(gm_home: Path, out: Path) -> list[str]:
    """The `fsl train` arguments of the ``trained_model`` fixture: 2 steps of 3-way 2-shot 3-query
    training episodes on the CPU. Validation takes its own shape from the held-out data (on the
    small render: 2 training classes with a held-out source group, 5-shot 3-query)."""
    return [
        "train",
        "--data-home",
        str(gm_home),
        "--dataset",
        "tinysol-gm",
        "--steps",
        "2",
        "--val-every",
        "1",
        "--ways",
        "3",
        "--shots",
        "2",
        "--queries",
        "3",
        "--val-episodes",
        "5",
        "--accelerator",
        "cpu",
        "--out",
        str(out),
    ]


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory: pytest.TempPathFactory, gm_home: Path) -> Path:
    """A model trained for 2 steps on the small render (through the real CLI)."""
    import os

    from typer.testing import CliRunner

    from fslcli.cli import app

    run = tmp_path_factory.mktemp("runs") / "run"
    env = {"FSL_CACHE_DIR": str(tmp_path_factory.getbasetemp() / "cache")}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        res = CliRunner().invoke(
            app,
            tiny_train_args(gm_home, run),
        )
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert res.exit_code == 0, res.output
    return run / "model.pt"


@pytest.fixture(scope="session")
def folder_cache(tmp_path_factory: pytest.TempPathFactory, folder_data: Path):
    """``folder_data`` decoded into its own waveform cache (a :class:`~fslcli.features.WaveCache`)."""
    from fslcli.datasets.folder import read_folder
    from fslcli.features import open_cache

    cache, _ = open_cache(read_folder(folder_data).clips, SR, tmp_path_factory.mktemp("folder-cache"))
    return cache


def make_tiny_net(seed: int = 0, excerpt_seconds: float = 0.25, **model: object):
    """A small, seeded, untrained ProtoNet (channels 4, 8; 16-d embeddings) in eval mode."""
    import torch

    from fslcli.config import AudioConfig, ModelConfig
    from fslcli.model import ProtoNet

    torch.manual_seed(seed)
    kw = {"channels": (4, 8), "embedding_dim": 16, **model}
    return ProtoNet(AudioConfig(excerpt_seconds=excerpt_seconds, n_mels=32), ModelConfig(**kw)).eval()  # type: ignore[arg-type]


@pytest.fixture
def tiny_net():
    """A small untrained ProtoNet (see :func:`make_tiny_net`)."""
    return make_tiny_net()
