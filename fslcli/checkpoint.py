"""The self-contained model file, ``model.pt``.

It holds only tensors and plain values (a format version, the settings as a dict, the
class splits, the data source, the state dict, metrics), so it loads with
``torch.load(..., weights_only=True)``: a crafted file cannot run code on load.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pickle
import pickletools
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fslcli.atomic import atomic_write
from fslcli.config import PARTS, RunConfig
from fslcli.datasets import DataSource
from fslcli.errors import CheckpointError
from fslcli.model import ProtoNet

FORMAT = "fslcli-protonet"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class LoadedModel:
    """A model rebuilt from its file, with everything recorded beside it."""

    net: ProtoNet
    config: RunConfig
    source: DataSource
    meta: dict[str, Any]
    path: Path
    sha256: str

    @property
    def sources(self) -> tuple[DataSource, ...]:
        """Every data source the model was trained on, ``source`` first."""
        listed = self.meta.get("sources")
        return tuple(DataSource.from_dict(d) for d in listed) if listed else (self.source,)

    @property
    def fonts(self) -> tuple[str | None, ...]:
        """The sha256 of each SoundFont the model was trained on (None: not a render, or unknown)."""
        return tuple(self.meta.get("soundfonts") or (self.meta.get("soundfont_sha256"),))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename it into place."""
    atomic_write(path, lambda f: torch.save(obj, f))


def save_model(
    path: Path,
    net: ProtoNet,
    config: RunConfig,
    source: DataSource,
    meta: dict[str, Any],
) -> None:
    """Write ``model.pt`` (only tensors and plain values)."""
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "settings": config.to_dict(),
        "splits": {
            "train": list(config.split.train_classes),
            "val": list(config.split.val_classes),
            "test": list(config.split.test_classes),
            "val_fold": config.split.val_fold,
        },
        "source": source.to_dict(),
        "meta": meta,
        "state_dict": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
    }
    atomic_torch_save(payload, path)


def read_payload(path: Path) -> dict[str, Any]:
    """Load a model file safely, turning every failure into one line that says which."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(
            f"model file {path} does not exist; train one with `fsl train` or give the path to a model.pt"
        )
    if path.is_dir():
        if (path / "model.pt").is_file():
            path = path / "model.pt"
        else:
            raise CheckpointError(f"{path} is a folder without a model.pt; give a model.pt file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4": the error below says it all
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        code = _code_in_pickle(path, exc)
        if code is not None:
            raise CheckpointError(
                f"{path} is unsafe: it holds Python objects ({code}) that would run code when loaded; "
                "refusing to load it (use a model.pt written by `fsl train`)"
            ) from None
        raise CheckpointError(
            f"{path} is damaged or not a model file (not a PyTorch file fslcli can read); retrain or copy it again"
        ) from None
    except Exception as exc:  # torch.load on arbitrary bytes: RuntimeError, EOFError, IndexError, ...
        if path.stat().st_size == 0:
            msg = "empty file"
        elif isinstance(exc, RuntimeError):  # torch's zip reader says what is wrong
            msg = _one_line(exc).split(". ")[0][:160]
        else:
            msg = "not a PyTorch file fslcli can read"
        raise CheckpointError(f"{path} is damaged or not a model file ({msg}); retrain or copy it again") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not an fslcli model file (no '{FORMAT}' header); give a model.pt written by `fsl train`"
        )
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has model format version {version}, this fslcli reads version {FORMAT_VERSION}; "
            "use the fslcli version that wrote it, or retrain"
        )
    missing = [k for k in ("settings", "splits", "source", "state_dict") if not isinstance(payload.get(k), dict)]
    if missing:
        raise CheckpointError(f"{path} is damaged: its {', '.join(missing)} part is missing; retrain or copy it again")
    return payload


#: Pickle opcodes that import or call Python objects.
_CODE_OPS = frozenset({"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX"})


def _code_in_pickle(path: Path, exc: Exception) -> str | None:
    """What in a file refused by weights-only loading would run code, or None if it is just not a pickle.

    Torch names the first global it refused; otherwise the file is parsed with
    :mod:`pickletools`, which reads opcodes without importing or calling anything.
    """
    refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
    if refused:
        return refused.group(1)
    names: list[str] = []
    found = False
    last_two: list[object] = [None, None]  # arguments of the two previous opcodes
    try:
        with open(path, "rb") as f:
            for op, arg, _pos in pickletools.genops(f):
                if op.name == "GLOBAL" and isinstance(arg, str):
                    names.append(arg.replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and all(isinstance(a, str) for a in last_two):
                    names.append(f"{last_two[0]}.{last_two[1]}")
                if op.name not in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT", "FRAME"):
                    last_two = [last_two[1], arg]
                found = found or op.name in _CODE_OPS
    except Exception:  # not a complete pickle: damaged or not a model file
        return None
    if not found:
        return None
    return ", ".join(dict.fromkeys(names)) or "callables"


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line, without terminal colour codes."""
    return " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).split())


#: Parts whose every setting a model file must hold: the ones that decide how it computes.
_REQUIRED_PARTS = ("audio", "model")


def settings_config(settings: dict[str, Any]) -> RunConfig:
    """The run settings of a model file as a :class:`RunConfig`.

    Raises:
        ValueError: the file was written by another version of fslcli: a part or setting this
            version does not have, or a setting of how the model computes missing.
    """
    unknown = sorted(set(settings) - set(PARTS))
    if unknown:
        raise ValueError(f"unknown settings {', '.join(unknown)}")
    for name, part in settings.items():
        if not isinstance(part, dict):
            raise ValueError(f"its {name!r} settings are not a table")
    for name in _REQUIRED_PARTS:
        missing = {f.name for f in dataclasses.fields(PARTS[name])} - set(settings.get(name, {}))
        if missing:
            raise ValueError(f"no {name} setting {', '.join(sorted(missing))}")
    return RunConfig.from_dict(settings)


def load_model(path: Path) -> LoadedModel:
    """Rebuild the network, settings and data source from a model file alone."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    payload = read_payload(path)
    try:
        config = settings_config(payload["settings"])
        net = ProtoNet(config.audio, config.model)
        net.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{path} was written by another version of fslcli ({str(exc).splitlines()[0][:160]}); retrain it with "
            "`fsl train`"
        ) from None
    net.eval()
    return LoadedModel(
        net=net,
        config=config,
        source=DataSource.from_dict(payload["source"]),
        meta=dict(payload.get("meta", {})),
        path=path,
        sha256=sha256_file(path),
    )


def newest_run(runs_dir: Path = Path("runs")) -> Path | None:
    """The newest ``runs/*/model.pt``, or None."""
    candidates = sorted(Path(runs_dir).glob("*/model.pt"), key=lambda p: p.stat().st_mtime)
    return candidates[-1] if candidates else None


def default_model(runs_dir: Path = Path("runs")) -> tuple[Path, str | None]:
    """The model a command uses when given none: the newest ``runs/*/model.pt``, else the model
    that ships with fslcli; with a line saying so when it is the bundled one."""
    from fslcli.models import bundled_model

    run = newest_run(runs_dir)
    if run is not None:
        return run, None
    bundled = bundled_model()
    if bundled is None:
        raise CheckpointError(
            f"no model given and none found under {runs_dir}/*/model.pt (and this installation ships none); "
            "train one with `fsl train` or pass MODEL"
        )
    return (
        bundled,
        f"no MODEL given and no {runs_dir}/*/model.pt here: using the model that ships with fslcli ({bundled.name})",
    )
