"""TinySOL's download from Zenodo, into a data home the reader (:mod:`fslcli.datasets.tinysol`) reads.

The downloader takes its URLs and md5 checksums from mirdata (``tinysol.REMOTES`` and
``tinysol.INDEXES["6.0"]``), resumes interrupted downloads with HTTP ``Range``, verifies
every file before giving it its final name and extracts the audio archive safely.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse
from urllib.request import Request, urlopen

from fslcli import __version__
from fslcli.datasets.instruments import INSTRUMENTS
from fslcli.datasets.mirdata_index import index_path, md5sum
from fslcli.datasets.tinysol import AUDIO_DIRNAME, CSV_RELPATH, mirdata_tinysol, one_line
from fslcli.errors import DownloadError

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
    tinysol = mirdata_tinysol()
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
                f"{_host(remote.url)} answered HTTP {exc.code} ({one_line(exc.reason)}) for "
                f"{remote.url}. Try again later, or render the offline SoundFont dataset "
                f"instead: fsl download tinysol-gm"
            ) from None
        except (URLError, OSError, http.client.HTTPException) as exc:
            # refused, DNS failure, timeout (TimeoutError is an OSError), garbled reply
            reason = exc.reason if isinstance(exc, URLError) else exc
            raise DownloadError(
                f"Could not reach {_host(remote.url)} ({remote.url}): {one_line(reason)}. "
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
                    f"({one_line(exc) or type(exc).__name__}); run the same command again "
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
                f"Cannot extract {archive.name} ({one_line(exc)}); it was deleted. Run the "
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
