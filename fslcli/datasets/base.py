"""The record every data source yields, and where datasets live by default."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: Extensions tried when scanning a folder for audio (anything soundfile or librosa decodes).
AUDIO_EXTENSIONS: frozenset[str] = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".m4a", ".opus", ".wv"}
)


#: Written last inside an offline render's data home (:mod:`fslcli.datasets.tinysol_gm`).
RENDER_MARKER = ".fsl-render.json"


@dataclass(frozen=True)
class Clip:
    """One recording: where it is, what it is, and metadata where the source has it.

    ``fold`` is TinySOL's official fold (0-4) or a seeded fold for other sources; ``None``
    means the source has none. ``group`` is the clip's source group: clips of one class with
    the same group share a recording (one TinySOL note, one SoundFont sample, or what a
    folder's ``groups.csv`` says); ``None`` means the source does not say.
    """

    path: Path
    label: str
    fold: int | None = None
    pitch: str | None = None
    pitch_id: int | None = None
    dynamics: str | None = None
    family: str | None = None
    group: str | None = None


def data_root() -> Path:
    """Where named datasets live unless ``--data-home`` says otherwise (mirdata's convention)."""
    env = os.environ.get("FSL_DATA_ROOT")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("HOME", "/tmp")) / "mir_datasets"


def default_data_home(name: str) -> Path:
    """The default home of a named dataset, e.g. ``~/mir_datasets/tinysol``."""
    return data_root() / name


@dataclass(frozen=True)
class ReadResult:
    """What a reader found: usable clips (sorted by path), skipped files with reasons, and
    notices to show the user once (one line each)."""

    clips: list[Clip]
    skipped: list[tuple[Path, str]]
    notices: tuple[str, ...] = ()
