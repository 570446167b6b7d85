"""Your own data: a folder with one subfolder per class.

Each file is its own source group unless the folder has a ``groups.csv`` with rows
``path,group`` (paths relative to the folder, e.g. ``Violin/take1_a.wav,take1``): files of one
class with the same group share a recording (cuts of one take, one player's session), so an
episode never puts them on both sides of support and query.
"""

from __future__ import annotations

import csv
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
    groups = read_groups(root / GROUPS_FILE)
    clips: list[Clip] = []
    unlisted = 0
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in list_audio(class_dir):
            rel = path.relative_to(root).as_posix()
            unlisted += groups is not None and rel not in groups
            group = groups.get(rel, rel) if groups is not None else rel
            clips.append(Clip(path=path, label=class_dir.name, fold=stable_fold(rel), group=group))
    if not clips:
        raise DataError(
            f"--data-dir {root} holds no audio in class subfolders; "
            "put each class's recordings in its own subfolder, e.g. DIR/Violin/a.wav"
        )
    notices: tuple[str, ...] = ()
    if unlisted:
        notices = (f"{unlisted} file(s) of {root} are not in {GROUPS_FILE}: each is its own source group",)
    return ReadResult(clips=clips, skipped=[], notices=notices)


#: A folder's optional source groups: rows ``path,group``.
GROUPS_FILE = "groups.csv"


def read_groups(path: Path) -> dict[str, str] | None:
    """``groups.csv`` as {relative path: group}, or None when there is none.

    A first row ``path,group`` is a header. Raises DataError naming a malformed row.
    """
    if not path.is_file():
        return None
    groups: dict[str, str] = {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            for line, row in enumerate(csv.reader(f), start=1):
                if not row or (line == 1 and [c.strip().lower() for c in row] == ["path", "group"]):
                    continue
                if len(row) != 2 or not row[0].strip() or not row[1].strip():
                    raise DataError(
                        f"{path} line {line}: expected 'path,group' (e.g. Violin/a.wav,take1), got {','.join(row)!r}"
                    )
                groups[Path(row[0].strip()).as_posix()] = row[1].strip()
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path} cannot be read ({exc}); fix it or remove it to give each file its own group") from None
    return groups
