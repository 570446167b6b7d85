"""Audio decoding and the on-disk waveform cache.

Each file is decoded and resampled once (mono, ``AudioConfig.sample_rate``) into a cache
keyed by the file list, sizes, modification times and the audio settings. Training,
evaluation and plotting read excerpts from the memory-mapped cache and never decode audio
again. A cache is built in a temporary folder and renamed into place when complete, so a
crash never leaves a half cache that is later trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fslcli.datasets.base import Clip

CACHE_VERSION = 1
_WAVES = "waves.f32"
_MANIFEST = "manifest.json"


def default_cache_dir() -> Path:
    """``$FSL_CACHE_DIR``, else the user's cache directory (``~/.cache/fslcli``)."""
    env = os.environ.get("FSL_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path(os.environ.get("HOME", "/tmp")) / ".cache"
    return base / "fslcli"


class DecodeError(Exception):
    """A file could not be decoded as audio (the message says why)."""


def decode_audio(path: Path, sample_rate: int) -> np.ndarray:
    """Decode any soundfile/librosa-readable file to mono float32 at ``sample_rate``.

    Returns ``(n_samples,)``. Raises :class:`DecodeError` for unreadable, empty or
    non-audio files. Non-finite samples become 0.
    """
    import soundfile as sf

    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
        audio = data.mean(axis=1)
    except Exception as sf_exc:  # soundfile cannot read it: let librosa (audioread) try
        if os.path.getsize(path) == 0:
            raise DecodeError("empty file (0 bytes)") from None
        try:
            import librosa

            # Filters, not catch_warnings(): that is not thread-safe and the cache decodes in threads.
            warnings.filterwarnings("ignore", message="PySoundFile failed", category=UserWarning)
            warnings.filterwarnings("ignore", message=".*audioread_load", category=FutureWarning)
            audio, sr = librosa.load(str(path), sr=None, mono=True)
            audio = np.asarray(audio, dtype=np.float32)
        except Exception:
            detail = (
                str(sf_exc).replace(f"Error opening {str(path)!r}: ", "").strip()[:120]
            )  # the path is named already
            raise DecodeError(f"not decodable as audio ({detail or type(sf_exc).__name__})") from None
    if audio.size == 0:
        raise DecodeError("no audio samples (empty file)")
    short = _wav_shortfall(path)
    if short is not None:
        raise DecodeError(f"truncated: its header promises {short[0]} bytes of audio, the file holds {short[1]}")
    audio = np.nan_to_num(audio, nan=0.0, posinf=0.0, neginf=0.0)
    if sr != sample_rate:
        import soxr

        audio = soxr.resample(audio, sr, sample_rate, quality="HQ")
    return np.ascontiguousarray(audio, dtype=np.float32)


def _wav_shortfall(path: Path) -> tuple[int, int] | None:
    """For a RIFF/WAVE file cut short (e.g. an interrupted copy): the data bytes its header
    promises and those present; None for complete files and other formats.

    libsndfile quietly reads what is there, so the cut would otherwise go unnoticed.
    """
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        size = os.fstat(f.fileno()).st_size
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk = f.read(8)
            declared = int.from_bytes(chunk[4:8], "little")
            if chunk[:4] == b"data":
                present = size - pos - 8
                # 0 and 0xFFFFFFFF mark streamed WAVs whose writer never knew the length.
                if declared not in (0, 0xFFFFFFFF) and present < declared:
                    return declared, present
                return None
            pos += 8 + declared + (declared & 1)
    return None


def cache_key(paths: Sequence[Path], sample_rate: int) -> str:
    """Hash of the file list, each file's size and mtime, and the audio settings."""
    h = hashlib.sha256()
    h.update(f"v{CACHE_VERSION};sr={sample_rate};n={len(paths)}\n".encode())
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}\tmissing\n".encode())
    return h.hexdigest()[:24]


@dataclass
class WaveCache:
    """Decoded clips, memory-mapped: ``waves[offsets[i] : offsets[i] + lengths[i]]`` is clip i.

    ``clips`` are the usable clips in cache order; ``skipped`` the files that could not be
    decoded, with reasons.
    """

    root: Path
    clips: list[Clip]
    offsets: np.ndarray
    lengths: np.ndarray
    waves: np.ndarray
    sample_rate: int
    skipped: list[tuple[str, str]]

    def __len__(self) -> int:
        return len(self.clips)

    def clip(self, i: int) -> np.ndarray:
        """All of clip ``i``: a memory-mapped view (nothing is read until it is used)."""
        begin = int(self.offsets[i])
        return self.waves[begin : begin + int(self.lengths[i])]

    def excerpt(self, i: int, start: int, length: int) -> np.ndarray:
        """``(length,)`` samples of clip ``i`` from ``start``; zero-padded past its end."""
        return self.excerpts(np.asarray([i]), np.asarray([start]), length)[0]

    def excerpts(self, ids: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
        """``(len(ids), length)`` excerpts, zero-padded past each clip's end.

        One slice copy per clip: cheaper than a fancy-index read, which would first build an
        index array as large as the output.
        """
        ids = np.asarray(ids, dtype=np.int64)
        out = np.empty((len(ids), length), dtype=np.float32)
        lengths = self.lengths[ids]
        starts = np.clip(np.asarray(starts, dtype=np.int64), 0, np.maximum(lengths - 1, 0))
        takes = np.minimum(length, lengths - starts)
        begins = self.offsets[ids] + starts
        waves = self.waves
        for row in range(len(ids)):
            t = max(0, int(takes[row]))
            if t > 0:
                b = int(begins[row])
                out[row, :t] = waves[b : b + t]
            out[row, t:] = 0.0
        return out

    def labels(self) -> list[str]:
        return [c.label for c in self.clips]


def _load(root: Path, clips_by_path: dict[str, Clip]) -> WaveCache:
    manifest = json.loads((root / _MANIFEST).read_text(encoding="utf-8"))
    total = int(manifest["total_samples"])
    waves = (
        np.memmap(root / _WAVES, dtype=np.float32, mode="r", shape=(total,))
        if total > 0
        else np.zeros(0, dtype=np.float32)
    )
    clips = [clips_by_path[p] for p in manifest["paths"]]
    return WaveCache(
        root=root,
        clips=clips,
        offsets=np.asarray(manifest["offsets"], dtype=np.int64),
        lengths=np.asarray(manifest["lengths"], dtype=np.int64),
        waves=waves,
        sample_rate=int(manifest["sample_rate"]),
        skipped=[tuple(s) for s in manifest["skipped"]],  # type: ignore[misc]
    )


def open_cache(
    clips: Sequence[Clip],
    sample_rate: int,
    cache_dir: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
) -> tuple[WaveCache, bool]:
    """Open the cache for ``clips`` at ``sample_rate``, building it first if needed.

    Returns the cache and whether it was built now (False: reused). Files that cannot be
    decoded are left out and listed in ``WaveCache.skipped``.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    paths = [c.path for c in clips]
    key = cache_key(paths, sample_rate)
    root = cache_dir / f"waves-{sample_rate}-{key}"
    by_path = {str(c.path): c for c in clips}
    if (root / _MANIFEST).is_file() and (root / _WAVES).exists():
        try:
            return _load(root, by_path), False
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError):
            shutil.rmtree(root, ignore_errors=True)  # unreadable: rebuild it
    elif root.exists():
        shutil.rmtree(root, ignore_errors=True)  # incomplete (no manifest): never trusted, rebuilt
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from fslcli.errors import OutputError

        raise OutputError(
            f"cannot create the cache folder {cache_dir} ({exc.strerror}); choose another with --cache-dir"
        ) from None
    _build(root, clips, sample_rate, progress, workers)
    return _load(root, by_path), True


def _build(
    root: Path,
    clips: Sequence[Clip],
    sample_rate: int,
    progress: Callable[[int, int], None] | None,
    workers: int | None,
) -> None:
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.tmp-"))
    try:
        offsets: list[int] = []
        lengths: list[int] = []
        kept: list[str] = []
        skipped: list[tuple[str, str]] = []
        total = 0

        def work(clip: Clip) -> np.ndarray | str:
            try:
                return decode_audio(clip.path, sample_rate)
            except DecodeError as exc:
                return str(exc)
            except OSError as exc:
                return f"cannot read ({exc.strerror or exc})"

        n_workers = workers or min(4, os.cpu_count() or 1)
        with open(tmp / _WAVES, "wb") as out, ThreadPoolExecutor(n_workers) as pool:
            # map() keeps input order, so the cache layout does not depend on thread timing.
            for done, (clip, result) in enumerate(zip(clips, pool.map(work, clips), strict=True), start=1):
                if isinstance(result, str):
                    skipped.append((str(clip.path), result))
                else:
                    out.write(result.tobytes())
                    offsets.append(total)
                    lengths.append(int(result.size))
                    kept.append(str(clip.path))
                    total += int(result.size)
                if progress is not None:
                    progress(done, len(clips))
            out.flush()
            os.fsync(out.fileno())
        manifest = {
            "version": CACHE_VERSION,
            "sample_rate": sample_rate,
            "paths": kept,
            "offsets": offsets,
            "lengths": lengths,
            "total_samples": total,
            "skipped": skipped,
        }
        (tmp / _MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
        try:
            os.replace(tmp, root)
        except OSError:
            # Another process finished the same cache first; theirs is as good as ours.
            if not (root / _MANIFEST).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass(frozen=True)
class CacheEntry:
    path: Path
    bytes: int
    clips: int
    sample_rate: int


def list_caches(cache_dir: Path | None = None) -> list[CacheEntry]:
    """The complete caches under ``cache_dir`` with their sizes."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    out = []
    if not cache_dir.is_dir():
        return out
    for d in sorted(cache_dir.glob("waves-*")):
        m = d / _MANIFEST
        if not m.is_file():
            continue
        try:
            manifest = json.loads(m.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        size = sum(f.stat().st_size for f in d.iterdir() if f.is_file())
        out.append(CacheEntry(d, size, len(manifest.get("paths", [])), int(manifest.get("sample_rate", 0))))
    return out


def clear_caches(cache_dir: Path | None = None) -> int:
    """Delete every cache (and leftover partial builds) under ``cache_dir``; returns bytes freed."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    freed = 0
    if not cache_dir.is_dir():
        return 0
    for d in list(cache_dir.glob("waves-*")) + list(cache_dir.glob(".waves-*")):
        if d.is_dir():
            freed += sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
            shutil.rmtree(d, ignore_errors=True)
    return freed
