"""TinySOL, read through mirdata's loader.

The reader serves every TinySOL-shaped data home: the real TinySOL and the offline
SoundFont render share one layout::

    <data_home>/audio/<Family>/<Instrument>/ordinario/<track_id>.wav
    <data_home>/annotation/TinySOL_metadata.csv
    <data_home>/index/tinysol_index_6.0.json      (mirdata's index format)

Labels, folds, pitch and dynamics come from mirdata's ``tinysol`` ``Track`` objects. The
index lives in the data home (see :mod:`fslcli.datasets.mirdata_index`); when it is missing
it is rebuilt from the CSV. The download is :mod:`fslcli.datasets.tinysol_download`.

Every path taken from the index or the CSV is checked to resolve inside the data home
before anything touches it; a path that escapes (``../``, absolute, or a symlink leading
out) is skipped with a reason and never opened.
"""

from __future__ import annotations

import csv
import logging
import os
import shlex
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from types import ModuleType

from fslcli.datasets.base import RENDER_MARKER, Clip, ReadResult
from fslcli.datasets.instruments import PROVENANCE_COLUMNS
from fslcli.datasets.mirdata_index import index_path, write_index
from fslcli.errors import DataError

#: Where TinySOL keeps its metadata, relative to the data home.
CSV_RELPATH = Path("annotation") / "TinySOL_metadata.csv"
AUDIO_DIRNAME = "audio"


def read_tinysol(data_home: Path) -> ReadResult:
    """Read every clip of a TinySOL-shaped data home through mirdata's ``tinysol`` loader.

    The index is taken from ``<data_home>/index/`` and rebuilt from the CSV when missing.
    Files that are listed but missing, paths that resolve outside the data home and
    tracks without a CSV row are skipped with a reason.

    Source groups: a note (one instrument at one pitch, every dynamic and string) in the real
    TinySOL; the CSV's "Source Group" column in an offline render. A render made before that
    column existed falls back to notes, said once in ``notices``.

    Raises:
        DataError: the data home is missing or empty, has no CSV or no audio folder,
            its index or CSV cannot be parsed, or no clip at all can be used.
    """
    home = Path(data_home).expanduser().resolve()
    csv_path = home / CSV_RELPATH
    _check_home(home, csv_path)

    skipped: list[tuple[Path, str]] = []
    idx = index_path(home)
    if not idx.is_file():
        skipped.extend(_build_index(home, csv_path))

    ds = _mirdata_dataset(home, idx)
    groups, notices = _source_groups(home, csv_path)
    inside = _inside_checker(home)
    clips: list[Clip] = []
    for tid in ds.track_ids:
        clip = _clip(ds, tid, home, inside, groups, skipped)
        if clip is not None:
            clips.append(clip)

    if not clips:
        first = f" First: {skipped[0][0]}: {skipped[0][1]}." if skipped else ""
        raise DataError(
            f"No usable clips in {home} ({len(skipped)} skipped).{first} Download TinySOL again: {_download_cmd(home)}"
        )
    clips.sort(key=lambda c: str(c.path))
    skipped.sort(key=lambda s: (str(s[0]), s[1]))
    return ReadResult(clips=clips, skipped=skipped, notices=notices)


def _mirdata_dataset(home: Path, idx: Path):  # -> mirdata tinysol.Dataset
    """mirdata's TinySOL loader over ``home``, its index read (from the data home, not mirdata's package)."""
    ds = mirdata_tinysol().Dataset(data_home=str(home))
    ds.index_path = str(idx)
    try:
        ds.track_ids  # noqa: B018  (reads the index)
    except (ValueError, AttributeError, TypeError) as exc:  # JSONDecodeError is a ValueError
        raise DataError(
            f"TinySOL index {idx} is unreadable ({one_line(exc)}). Delete it to rebuild it "
            f"from the CSV, or download it again: {_download_cmd(home)}"
        ) from None
    return ds


def _clip(
    ds, tid: str, home: Path, inside: Callable[[Path], bool], groups: dict[str, str] | None, skipped: list
) -> Clip | None:
    """Track ``tid`` as a clip, or None after appending why it is skipped to ``skipped``."""
    idx = Path(ds.index_path)
    try:
        track = ds.track(tid)
        if track.audio_path is None:
            raise TypeError("no audio path")
        path = Path(track.audio_path)
    except (KeyError, TypeError, IndexError, ValueError):
        skipped.append((idx, f"track {tid!r}: index entry has no usable audio path"))
        return None
    if not inside(path):
        skipped.append((path, "resolves outside the data home; not opened"))
        return None
    try:
        label = track.instrument_full
        fold, pitch, pitch_id, dynamics, family = track.split, track.pitch, track.pitch_id, track.dynamics, track.family
    except (ValueError, IndexError, StopIteration, AttributeError) as exc:
        # mirdata parses the whole CSV at once (AttributeError: it has no rows at all)
        raise DataError(
            f"Cannot parse {home / CSV_RELPATH} ({one_line(exc) or type(exc).__name__}); it should have TinySOL's "
            f"14 columns and one row per clip. Download it again: {_download_cmd(home)}"
        ) from None
    # mirdata hands a track without a CSV row the whole metadata dict instead of its own row,
    # so every field reads None rather than raising.
    if label is None:
        skipped.append((path, f"no row for {tid!r} in {CSV_RELPATH.as_posix()}"))
        return None
    if not path.is_file():
        skipped.append((path, "listed in the index but missing"))
        return None
    group = f"{label}/{pitch_id}" if groups is None else groups.get(path.relative_to(home / AUDIO_DIRNAME).as_posix())
    return Clip(path, label, fold, pitch, pitch_id, dynamics, family, group)


def _source_groups(home: Path, csv_path: Path) -> tuple[dict[str, str] | None, tuple[str, ...]]:
    """The CSV's "Source Group" column by path (None: group by note), and any notice.

    The real TinySOL has no such column: its source group is the note. A render without it
    predates provenance: it falls back to notes too, and says how to re-render.
    """
    column = PROVENANCE_COLUMNS[-1]
    try:
        with open(csv_path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, [])
            if column not in header:
                rows = None
            else:
                at = header.index(column)
                rows = {row[0]: row[at] for row in reader if len(row) > at and row[at]}
    except (OSError, UnicodeDecodeError, csv.Error):
        rows = None  # mirdata's own parse below says what is wrong with the CSV
    if rows is None and (home / RENDER_MARKER).is_file():
        return None, (
            f"{home} was rendered before source groups were recorded, so episodes keep notes apart instead of "
            f"SoundFont samples; re-render it with `fsl download tinysol-gm --data-home {shlex.quote(str(home))}`",
        )
    return rows, ()


def _check_home(home: Path, csv_path: Path) -> None:
    """Raise a DataError naming what is missing and the command that fills the home."""
    if not home.exists():
        raise DataError(f"TinySOL data home {home} does not exist. {_fill_hint(home)}")
    if not home.is_dir():
        raise DataError(f"TinySOL data home {home} is a file, not a folder. {_fill_hint(home)}")
    if not any(home.iterdir()):
        raise DataError(f"TinySOL data home {home} is empty. {_fill_hint(home)}")
    if not csv_path.is_file():
        raise DataError(f"TinySOL data home {home} has no {CSV_RELPATH.as_posix()}. {_fill_hint(home)}")


def _build_index(home: Path, csv_path: Path) -> list[tuple[Path, str]]:
    """Write the mirdata index from the CSV's ``Path`` column; return the rows left out.

    Audio paths are ``audio/`` + the CSV path. Only files that exist inside the data home
    go into the index (writing it hashes each one, so nothing outside may be listed).
    """
    if not (home / AUDIO_DIRNAME).is_dir():
        raise DataError(
            f"TinySOL data home {home} has {CSV_RELPATH.as_posix()} but no {AUDIO_DIRNAME}/ folder. {_fill_hint(home)}"
        )
    rels: list[str] = []
    skipped: list[tuple[Path, str]] = []
    try:
        with open(csv_path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"Cannot read {csv_path} ({one_line(exc)}). {_fill_hint(home)}") from None
    for row in rows[1:]:
        if not row or not row[0]:
            continue
        rel = f"{AUDIO_DIRNAME}/{row[0]}"
        path = home / rel
        if PurePosixPath(row[0]).is_absolute() or not _inside(home, path):
            skipped.append((path, "resolves outside the data home; not opened"))
        elif not path.is_file():
            skipped.append((path, f"listed in {CSV_RELPATH.as_posix()} but missing"))
        else:
            rels.append(rel)
    if not rels:
        raise DataError(
            f"None of the {len(rows) - 1} files listed in {csv_path} exist under "
            f"{home / AUDIO_DIRNAME}. {_fill_hint(home)}"
        )
    write_index(home, rels)
    return skipped


def _inside(home: Path, path: Path) -> bool:
    """Whether ``path`` resolves (symlinks followed, nothing opened) inside ``home``."""
    return path.resolve().is_relative_to(home)


def _inside_checker(home: Path) -> Callable[[Path], bool]:
    """:func:`_inside` for many paths: when nothing under ``home`` is a symbolic link (one scan),
    where a path resolves is a matter of its text, so it is not resolved file by file."""
    if _any_symlink(home):
        return lambda path: _inside(home, path)
    prefix = str(home) + os.sep
    return lambda path: os.path.normpath(path).startswith(prefix)


def _any_symlink(root: Path) -> bool:
    """Whether any entry below ``root`` is a symbolic link (links are not followed)."""
    folders = [str(root)]
    while folders:
        with os.scandir(folders.pop()) as entries:
            for entry in entries:
                if entry.is_symlink():
                    return True
                if entry.is_dir(follow_symlinks=False):
                    folders.append(entry.path)
    return False


def _fill_hint(home: Path) -> str:
    return (
        f"Download TinySOL with: {_download_cmd(home)} (offline, render the SoundFont set "
        f"instead: fsl download tinysol-gm --data-home {shlex.quote(str(home))})"
    )


def _download_cmd(home: Path) -> str:
    return f"fsl download tinysol --data-home {shlex.quote(str(home))}"


def mirdata_tinysol() -> ModuleType:
    """Import mirdata's TinySOL loader without its import-time logging setup.

    ``mirdata.download_utils`` calls ``logging.basicConfig(level=INFO)`` when imported,
    which would make every library's INFO records appear on the CLI's stderr. The import
    is also slow (it pulls in librosa), so it happens only when needed.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    from mirdata.datasets import tinysol

    root.handlers[:] = handlers
    root.setLevel(level)
    return tinysol


def one_line(value: object) -> str:
    return " ".join(str(value).split())
