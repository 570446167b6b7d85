"""Indexes in mirdata's format, kept inside a dataset's own data home.

mirdata 1.0 keeps remote indexes inside its installed package; fslcli keeps each
dataset's index in ``<data_home>/index/`` instead, so a data home is self-contained and
the package directory is never written.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

INDEX_DIRNAME = "index"
INDEX_FILENAME = "tinysol_index_6.0.json"


def index_path(data_home: Path) -> Path:
    """Where a TinySOL-shaped data home keeps its mirdata index."""
    return Path(data_home) / INDEX_DIRNAME / INDEX_FILENAME


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_index(data_home: Path, relpaths: Iterable[str], version: str = "6.0") -> Path:
    """Write a mirdata track index for audio files given relative to ``data_home``.

    Track ids are the file stems, as mirdata's TinySOL loader expects. The file is written
    atomically (temporary file, then rename).
    """
    data_home = Path(data_home)
    tracks = {}
    for rel in sorted(relpaths):
        tid = Path(rel).stem
        tracks[tid] = {"audio": [rel, md5sum(data_home / rel)]}
    out = index_path(data_home)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = json.dumps({"version": version, "tracks": tracks}, indent=1, sort_keys=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".index-", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(payload)
    os.replace(tmp, out)
    return out
