"""A tiny TinySOL-shaped dataset and a local HTTP mirror that serves it.

``make_tinysol`` writes short generated WAVs for three instruments, TinySOL's 14-column
metadata CSV and a mirdata index. ``pack_tinysol`` turns such a home into the three files
Zenodo serves (``TinySOL.tar.gz``, ``TinySOL_metadata.csv``, ``tinysol_index_6.0.json``).
``Mirror`` serves them from 127.0.0.1 with HTTP Range support and records each request.
"""

from __future__ import annotations

import csv
import hashlib
import io
import tarfile
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self

import numpy as np
import soundfile as sf

from fslcli.datasets.instruments import BY_NAME, METADATA_COLUMNS, pitch_name
from fslcli.datasets.mirdata_index import write_index


@dataclass(frozen=True)
class FixtureTrack:
    """One generated clip and the CSV row that describes it."""

    track_id: str
    csv_path: str  # relative to audio/, as in TinySOL's "Path" column
    label: str
    family: str
    fold: int
    pitch: str
    pitch_id: int
    dynamics: str


#: (instrument, MIDI note, dynamics, fold)
_SPEC: tuple[tuple[str, int, str, int], ...] = (
    ("Bass Tuba", 40, "pp", 0),
    ("Bass Tuba", 45, "ff", 1),
    ("Bass Tuba", 50, "mf", 2),
    ("French Horn", 50, "mf", 0),
    ("French Horn", 55, "ff", 3),
    ("French Horn", 61, "pp", 4),
    ("Violin", 60, "mf", 1),
    ("Violin", 67, "ff", 2),
    ("Violin", 70, "pp", 4),
)
_DYN_ID = {"pp": 0, "mf": 2, "ff": 4}


def make_tinysol(home: Path, sr: int = 8000, seconds: float = 0.05) -> list[FixtureTrack]:
    """Write a TinySOL-layout data home (audio, CSV, index) and return its tracks."""
    tracks = []
    rows = []
    for name, midi, dyn, fold in _SPEC:
        inst = BY_NAME[name]
        pitch = pitch_name(midi)
        string_id = "1.0" if inst.family == "Strings" else ""
        tid = f"{inst.abbr}-ord-{pitch}-{dyn}-{'1c' if string_id else 'N'}-N"
        rel = f"{inst.family}/{inst.folder}/ordinario/{tid}.wav"
        t = np.arange(int(sr * seconds)) / sr
        wav = 0.3 * np.sin(2 * np.pi * 440.0 * 2 ** ((midi - 69) / 12) * t)
        out = home / "audio" / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        sf.write(out, wav.astype(np.float32), sr)
        rows.append(
            [
                rel,
                fold,
                inst.family,
                inst.abbr,
                inst.full,
                "ord",
                "ordinario",
                pitch,
                midi,
                dyn,
                _DYN_ID[dyn],
                0,
                string_id,
                "FALSE",
            ]
        )
        tracks.append(FixtureTrack(tid, rel, inst.full, inst.family, fold, pitch, midi, dyn))
    write_csv(home, rows)
    write_index(home, [f"audio/{t.csv_path}" for t in tracks])
    return tracks


def write_csv(home: Path, rows: list[list[object]]) -> Path:
    """Write ``annotation/TinySOL_metadata.csv`` with TinySOL's header."""
    out = home / "annotation" / "TinySOL_metadata.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(METADATA_COLUMNS)
        w.writerows(rows)
    return out


def read_csv_rows(home: Path) -> list[list[str]]:
    """The CSV's data rows (header dropped)."""
    with open(home / "annotation" / "TinySOL_metadata.csv", newline="", encoding="utf-8") as f:
        return list(csv.reader(f))[1:]


def md5_bytes(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def pack_tinysol(home: Path, top_folder: str | None = None) -> dict[str, bytes]:
    """The three files Zenodo serves, built from ``home``: name -> content.

    The archive holds ``<Family>/...`` at its top (mirdata extracts it into ``audio/``),
    or ``<top_folder>/<Family>/...`` when ``top_folder`` is given.
    """
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        audio = home / "audio"
        for path in sorted(audio.rglob("*.wav")):
            arc = path.relative_to(audio).as_posix()
            tar.add(path, arcname=f"{top_folder}/{arc}" if top_folder else arc)
    return {
        "TinySOL.tar.gz": buf.getvalue(),
        "TinySOL_metadata.csv": (home / "annotation" / "TinySOL_metadata.csv").read_bytes(),
        "tinysol_index_6.0.json": (home / "index" / "tinysol_index_6.0.json").read_bytes(),
    }


class Mirror:
    """A local HTTP server for ``files`` on 127.0.0.1 (port chosen by the OS).

    ``honour_range=False`` makes it ignore ``Range`` (always 200, whole file);
    ``cut`` maps a file name to a byte count: the first reply for it stops there.
    ``requests`` records ``(name, range_header_or_None)`` for each GET.
    """

    def __init__(self, files: dict[str, bytes], honour_range: bool = True, cut: dict[str, int] | None = None) -> None:
        self.files = files
        self.honour_range = honour_range
        self.cut = dict(cut or {})
        self.requests: list[tuple[str, str | None]] = []
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                name = self.path.split("?")[0].rsplit("/", 1)[-1]
                rng = self.headers.get("Range")
                mirror.requests.append((name, rng))
                if name not in mirror.files:
                    self.send_error(404)
                    return
                data = mirror.files[name]
                start = 0
                if rng and mirror.honour_range:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if name in mirror.cut:
                    body = body[: mirror.cut.pop(name)]
                    self.close_connection = True
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/files"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
