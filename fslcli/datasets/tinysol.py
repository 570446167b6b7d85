"""TinySOL, read through mirdata's loader, and its download from Zenodo.

The reader serves every TinySOL-shaped data home: the real TinySOL and the offline
SoundFont render share one layout::

    <data_home>/audio/<Family>/<Instrument>/ordinario/<track_id>.wav
    <data_home>/annotation/TinySOL_metadata.csv
    <data_home>/index/tinysol_index_6.0.json      (mirdata's index format)

Labels, folds, pitch and dynamics come from mirdata's ``tinysol`` ``Track`` objects. The
index lives in the data home (see :mod:`fslcli.datasets.mirdata_index`); when it is missing
it is rebuilt from the CSV.

Every path taken from the index or the CSV is checked to resolve inside the data home
before anything touches it; a path that escapes (``../``, absolute, or a symlink leading
out) is skipped with a reason and never opened.

The downloader takes its URLs and md5 checksums from mirdata (``tinysol.REMOTES`` and
``tinysol.INDEXES["6.0"]``), resumes interrupted downloads with HTTP ``Range``, verifies
every file before giving it its final name and extracts the audio archive safely.
"""

from __future__ import annotations

import csv
import http.client
import json
import logging
import os
import shlex
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import ModuleType
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse
from urllib.request import Request, urlopen

from fslcli import __version__
from fslcli.datasets.base import RENDER_MARKER, Clip, ReadResult
from fslcli.datasets.instruments import INSTRUMENTS, PROVENANCE_COLUMNS
from fslcli.datasets.mirdata_index import index_path, md5sum, write_index
from fslcli.errors import DataError, DownloadError

#: Where TinySOL keeps its metadata, relative to the data home.
CSV_RELPATH = Path("annotation") / "TinySOL_metadata.csv"
AUDIO_DIRNAME = "audio"
#: Environment variable naming a mirror that replaces Zenodo (``{mirror}/{filename}``).
MIRROR_ENV = "FSL_TINYSOL_URL"
#: Seconds a connection or a read may stall before the download gives up.
TIMEOUT_S = 15.0
#: Completion markers (``<filename>.done``, holding the md5) live here, inside the data home.
MARKER_DIRNAME = ".fsl_download"

_CHUNK = 1 << 16
_FAMILIES = frozenset(i.family for i in INSTRUMENTS)

#: ``progress(name, bytes_done, total_bytes_or_None)``
ProgressFn = Callable[[str, int, "int | None"], None]


@dataclass(frozen=True)
class DownloadReport:
    """What :func:`download_tinysol` did: remote file names fetched and already complete."""

    data_home: Path
    downloaded: list[str]
    skipped: list[str]


# --------------------------------------------------------------------------- reading


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

    tinysol = _mirdata_tinysol()
    ds = tinysol.Dataset(data_home=str(home))
    # mirdata would look for the index inside its own package; ours lives in the data home.
    ds.index_path = str(idx)
    try:
        track_ids = list(ds.track_ids)
    except (ValueError, AttributeError, TypeError) as exc:  # JSONDecodeError is a ValueError
        raise DataError(
            f"TinySOL index {idx} is unreadable ({_one_line(exc)}). Delete it to rebuild it "
            f"from the CSV, or download it again: {_download_cmd(home)}"
        ) from None

    groups, notices = _source_groups(home, csv_path)
    inside = _inside_checker(home)
    clips: list[Clip] = []
    for tid in track_ids:
        try:
            track = ds.track(tid)
            listed = track.audio_path
            if listed is None:
                raise TypeError("no audio path")
            path = Path(listed)
            outside = not inside(path)
        except (KeyError, TypeError, IndexError, ValueError):
            skipped.append((idx, f"track {tid!r}: index entry has no usable audio path"))
            continue
        if outside:
            skipped.append((path, "resolves outside the data home; not opened"))
            continue
        try:
            label = track.instrument_full
            meta = (track.split, track.pitch, track.pitch_id, track.dynamics, track.family)
        except (ValueError, IndexError, StopIteration, AttributeError) as exc:
            # mirdata parses the whole CSV at once (AttributeError: it has no rows at all)
            raise DataError(
                f"Cannot parse {csv_path} ({_one_line(exc) or type(exc).__name__}); it "
                f"should have TinySOL's 14 columns and one row per clip. Download it again: "
                f"{_download_cmd(home)}"
            ) from None
        # mirdata hands a track without a CSV row the whole metadata dict instead of its
        # own row, so every field reads None rather than raising.
        if label is None:
            skipped.append((path, f"no row for {tid!r} in {CSV_RELPATH.as_posix()}"))
            continue
        if not path.is_file():
            skipped.append((path, "listed in the index but missing"))
            continue
        fold, pitch, pitch_id, dynamics, family = meta
        group = (
            f"{label}/{pitch_id}" if groups is None else groups.get(path.relative_to(home / AUDIO_DIRNAME).as_posix())
        )
        clips.append(Clip(path, label, fold, pitch, pitch_id, dynamics, family, group))

    if not clips:
        first = f" First: {skipped[0][0]}: {skipped[0][1]}." if skipped else ""
        raise DataError(
            f"No usable clips in {home} ({len(skipped)} skipped).{first} Download TinySOL again: {_download_cmd(home)}"
        )
    clips.sort(key=lambda c: str(c.path))
    skipped.sort(key=lambda s: (str(s[0]), s[1]))
    return ReadResult(clips=clips, skipped=skipped, notices=notices)


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
        raise DataError(f"Cannot read {csv_path} ({_one_line(exc)}). {_fill_hint(home)}") from None
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


def _mirdata_tinysol() -> ModuleType:
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


# --------------------------------------------------------------------------- downloading


@dataclass(frozen=True)
class _Remote:
    """One file to fetch: ``target`` is the final file, or the folder an archive fills."""

    filename: str
    url: str
    checksum: str
    download_to: Path
    target: Path
    archive: bool


def download_tinysol(
    data_home: Path,
    *,
    progress: ProgressFn | None = None,
    base_url: str | None = None,
    force: bool = False,
) -> DownloadReport:
    """Download TinySOL (audio, metadata CSV and mirdata index) into ``data_home``.

    URLs and md5 checksums are mirdata's. ``base_url`` (or ``$FSL_TINYSOL_URL``) replaces
    Zenodo with a mirror serving ``{base_url}/{filename}``. Complete files are skipped
    unless ``force``; an interrupted download continues from its ``.part`` file.

    Raises:
        DownloadError: the server cannot be reached, answers with an error, the transfer
            stops, a checksum does not match, or the archive is damaged or unsafe.
    """
    home = Path(data_home).expanduser().resolve()
    if home.exists() and not home.is_dir():
        raise DownloadError(f"TinySOL data home {home} is a file; pass a folder with --data-home.")
    home.mkdir(parents=True, exist_ok=True)
    mirror = base_url or os.environ.get(MIRROR_ENV) or None

    downloaded: list[str] = []
    skipped: list[str] = []
    for remote in _remotes(home, mirror):
        if not force and _is_complete(home, remote):
            skipped.append(remote.filename)
            continue
        if force:
            _marker(home, remote).unlink(missing_ok=True)
            _part(remote.download_to).unlink(missing_ok=True)
            remote.download_to.unlink(missing_ok=True)
        if force or not _md5_matches(remote.download_to, remote.checksum):
            _fetch(remote, progress)
        if remote.archive:
            _extract_tar(remote.download_to, remote.target)
            remote.download_to.unlink()
        elif remote.filename.endswith(".json") and zipfile.is_zipfile(remote.download_to):
            # mirdata accepts an index published as a zip under a .json name.
            _unzip_json(remote.download_to)
        marker = _marker(home, remote)
        marker.parent.mkdir(exist_ok=True)
        marker.write_text(remote.checksum, encoding="utf-8")
        downloaded.append(remote.filename)
    return DownloadReport(data_home=home, downloaded=downloaded, skipped=skipped)


def _remotes(home: Path, mirror: str | None) -> list[_Remote]:
    """The index, the CSV and the audio archive, as mirdata describes them (read now)."""
    tinysol = _mirdata_tinysol()
    index_remote = tinysol.INDEXES["6.0"].remote
    csv_remote = tinysol.REMOTES["annotations"]
    audio_remote = tinysol.REMOTES["audio"]

    def url(filename: str, official: str) -> str:
        return f"{mirror.rstrip('/')}/{filename}" if mirror else official

    idx = index_path(home)
    csv_file = home / CSV_RELPATH
    audio_dir = home / AUDIO_DIRNAME
    return [
        _Remote(r.filename, url(r.filename, r.url), r.checksum, download_to, target, archive)
        for r, download_to, target, archive in (
            (index_remote, idx, idx, False),
            (csv_remote, csv_file, csv_file, False),
            (audio_remote, home / audio_remote.filename, audio_dir, True),
        )
    ]


def _marker(home: Path, remote: _Remote) -> Path:
    return home / MARKER_DIRNAME / f"{remote.filename}.done"


def _part(path: Path) -> Path:
    return path.with_name(path.name + ".part")


def _is_complete(home: Path, remote: _Remote) -> bool:
    """A remote is done when its marker holds the expected md5 and its target exists;
    a plain file whose md5 matches (e.g. copied in by hand) also counts."""
    marker = _marker(home, remote)
    if marker.is_file() and marker.read_text(encoding="utf-8").strip() == remote.checksum:
        return remote.target.is_dir() if remote.archive else remote.target.is_file()
    return not remote.archive and _md5_matches(remote.target, remote.checksum)


def _md5_matches(path: Path, checksum: str) -> bool:
    return path.is_file() and md5sum(path) == checksum


def _fetch(remote: _Remote, progress: ProgressFn | None) -> None:
    """Download ``remote.url`` to ``<file>.part`` (resuming it), verify md5, rename."""
    final = remote.download_to
    part = _part(final)
    part.parent.mkdir(parents=True, exist_ok=True)
    name = remote.filename
    for _attempt in range(2):
        offset = part.stat().st_size if part.is_file() else 0
        headers = {"User-Agent": f"fslcli/{__version__}"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            resp = urlopen(Request(remote.url, headers=headers), timeout=TIMEOUT_S)
        except HTTPError as exc:
            exc.close()
            if exc.code == 416 and offset:
                # The .part already holds at least the whole file: keep it if it verifies.
                if md5sum(part) == remote.checksum:
                    break
                part.unlink()
                continue
            raise DownloadError(
                f"{_host(remote.url)} answered HTTP {exc.code} ({_one_line(exc.reason)}) for "
                f"{remote.url}. Try again later, or render the offline SoundFont dataset "
                f"instead: fsl download tinysol-gm"
            ) from None
        except (URLError, OSError, http.client.HTTPException) as exc:
            # refused, DNS failure, timeout (TimeoutError is an OSError), garbled reply
            reason = exc.reason if isinstance(exc, URLError) else exc
            raise DownloadError(
                f"Could not reach {_host(remote.url)} ({remote.url}): {_one_line(reason)}. "
                f"TinySOL cannot be downloaded offline; render the offline SoundFont dataset "
                f"instead: fsl download tinysol-gm"
            ) from None
        with resp:
            if offset and resp.status == 206 and _range_start(resp) != offset:
                part.unlink()  # a range we did not ask for: start over without one
                continue
            resumed = offset > 0 and resp.status == 206
            done = offset if resumed else 0  # a server that ignores Range sends it all again
            total = _total_size(resp, done)
            _receive(resp, part, "ab" if resumed else "wb", done, total, name, remote.url, progress)
        break

    actual = md5sum(part)
    if actual != remote.checksum:
        part.unlink()
        raise DownloadError(
            f"{name} from {remote.url} has md5 {actual}, expected {remote.checksum}; the "
            f"damaged download was deleted. Run the command again, or use another mirror."
        )
    os.replace(part, final)


def _receive(
    resp: http.client.HTTPResponse,
    part: Path,
    mode: str,
    done: int,
    total: int | None,
    name: str,
    url: str,
    progress: ProgressFn | None,
) -> None:
    """Stream the body into ``part``; a stalled or cut transfer leaves it for resuming."""
    if progress:
        progress(name, done, total)
    with open(part, mode) as f:
        while True:
            try:
                chunk = resp.read(_CHUNK)
            except (OSError, http.client.HTTPException) as exc:
                raise DownloadError(
                    f"Download of {name} from {url} stopped after {done} bytes "
                    f"({_one_line(exc) or type(exc).__name__}); run the same command again "
                    f"to resume."
                ) from None
            if not chunk:
                break
            f.write(chunk)
            done += len(chunk)
            if progress:
                progress(name, done, total)
    if total is not None and done < total:
        raise DownloadError(
            f"Download of {name} from {url} stopped after {done} of {total} bytes; run the "
            f"same command again to resume."
        )


def _range_start(resp: http.client.HTTPResponse) -> int | None:
    """First byte of a 206 reply, from ``Content-Range: bytes START-END/TOTAL``."""
    value = resp.headers.get("Content-Range", "")
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _total_size(resp: http.client.HTTPResponse, done: int) -> int | None:
    """Full size of the file, or None when the server does not say."""
    total = resp.headers.get("Content-Range", "").rpartition("/")[2]
    if resp.status == 206 and total.isdigit():
        return int(total)
    length = resp.headers.get("Content-Length")
    return done + int(length) if length and length.isdigit() else None


def _extract_tar(archive: Path, dest: Path) -> None:
    """Extract the audio archive into ``dest`` via a temporary folder beside it.

    Members with absolute paths, ``..`` parts, links or anything but files and folders
    are refused. A single top-level folder that is not a TinySOL family (``TinySOL/``) is
    unwrapped, so ``dest`` always holds ``<Family>/<Instrument>/...``.
    """
    parent = dest.parent
    for stale in parent.glob(".audio-extract-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=".audio-extract-"))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                members = tar.getmembers()
                for m in members:
                    name = PurePosixPath(m.name)
                    unsafe = name.is_absolute() or ".." in name.parts or "\\" in m.name
                    if unsafe or not (m.isfile() or m.isdir()):
                        raise DownloadError(
                            f"{archive.name} holds an unsafe entry {m.name!r} (absolute path, "
                            f"'..' or link); nothing was extracted. Delete {archive} and "
                            f"download from the official source."
                        )
                extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(tmp, members=members, **extra)
        except (tarfile.TarError, EOFError, OSError) as exc:
            archive.unlink(missing_ok=True)
            raise DownloadError(
                f"Cannot extract {archive.name} ({_one_line(exc)}); it was deleted. Run the "
                f"command again to download it afresh."
            ) from None
        entries = [p for p in tmp.iterdir() if not p.name.startswith(".")]
        root = tmp
        if len(entries) == 1 and entries[0].is_dir() and entries[0].name not in _FAMILIES:
            root = entries[0]
        else:
            root.chmod(0o755)  # mkdtemp made it private; it becomes the audio folder
        if dest.exists():
            old = Path(tempfile.mkdtemp(dir=parent, prefix=".audio-extract-old-"))
            os.replace(dest, old / "audio")
            shutil.rmtree(old, ignore_errors=True)
        os.replace(root, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _unzip_json(path: Path) -> None:
    """Replace a zipped index with the single JSON file it contains."""
    with zipfile.ZipFile(path) as zf:
        names = [n for n in zf.namelist() if n.endswith(".json")]
        if len(names) != 1:
            raise DownloadError(f"{path.name} is a zip without exactly one .json index inside.")
        data = zf.read(names[0])
    try:
        json.loads(data)  # refuse to install something that is not JSON
    except ValueError as exc:
        raise DownloadError(f"{path.name} holds an index that is not JSON ({exc}).") from None
    tmp = _part(path)
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _host(url: str) -> str:
    host = urlparse(url).hostname or url
    return "Zenodo" if host == "zenodo.org" or host.endswith(".zenodo.org") else host


def _one_line(value: object) -> str:
    return " ".join(str(value).split())
