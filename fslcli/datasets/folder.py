"""Your own data: a folder with one subfolder per class."""

from __future__ import annotations

import hashlib
from pathlib import Path

from fslcli.datasets.base import AUDIO_EXTENSIONS, Clip, ReadResult
from fslcli.errors import DataError

#: Number of folds the folder reader deals recordings into (validation uses one of them).
N_FOLDS = 5


def stable_fold(relpath: str, n_folds: int = N_FOLDS) -> int:
    """A fold for a recording that depends only on its path inside the folder.

    Hashing the relative path (not the listing order) keeps each file in the same fold
    when other files are added or removed.
    """
    digest = hashlib.sha256(relpath.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") % n_folds


def list_audio(folder: Path) -> list[Path]:
    """Audio files below ``folder`` (recursively), hidden files skipped, sorted."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in AUDIO_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def read_folder(root: Path) -> ReadResult:
    """Clips from ``root/<class>/**/<file>``; the subfolder name is the label."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"--data-dir {root} is not a folder; give a folder with one subfolder per class")
    clips: list[Clip] = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in list_audio(class_dir):
            rel = path.relative_to(root).as_posix()
            clips.append(Clip(path=path, label=class_dir.name, fold=stable_fold(rel)))
    if not clips:
        raise DataError(
            f"--data-dir {root} holds no audio in class subfolders; "
            "put each class's recordings in its own subfolder, e.g. DIR/Violin/a.wav"
        )
    return ReadResult(clips=clips, skipped=[])
