"""Which SoundFont samples sound a note: the preset and instrument zones of a .sf2/.sf3 font.

A SoundFont 2 font (SoundFont 2.04 specification, section 7: the "pdta" hydra) maps a
preset (bank, program) to preset zones, each with a key and velocity range and an
instrument; an instrument maps to instrument zones, each with ranges and a sample. A note
(key, velocity) sounds every sample whose preset zone and instrument zone both contain it.
A zone without a key or velocity range takes its zone list's global zone's, else the full
range. ``.sf3`` fonts share the hydra and only compress the samples, so both read the same.

Only the hydra is parsed when a font is read (a 140 MB font reads in milliseconds); sample
audio is decoded only for :func:`duplicate_samples`. Samples are named ``"<name> [<index>]"``:
sample names need not be unique within a font.

Fonts also hold the same recording under two sample headers: TimGM6mb's French Horn plays
resampled copies of its Tuba's samples on its low keys. :func:`duplicate_samples` finds such
copies by their audio, so that "shares a sample" means "shares a recording".
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fslcli.errors import DownloadError

#: Generator operators (SoundFont 2.04, section 8.1.2) read here.
_GEN_INSTRUMENT, _GEN_KEY_RANGE, _GEN_VEL_RANGE, _GEN_SAMPLE = 41, 43, 44, 53
#: sfSampleType bit of .sf3's Ogg Vorbis-compressed samples.
_COMPRESSED = 0x10
_FULL = (0, 127)

Range = tuple[int, int]


@dataclass(frozen=True)
class Zone:
    """A key range, a velocity range and what the zone points at (an instrument or a sample index)."""

    keys: Range
    velocities: Range
    target: int

    def sounds(self, key: int, velocity: int) -> bool:
        return self.keys[0] <= key <= self.keys[1] and self.velocities[0] <= velocity <= self.velocities[1]


@dataclass(frozen=True)
class SoundFont:
    """A font's presets, instruments and sample names, enough to say which samples sound a note."""

    #: (bank, program) -> (preset name, its zones pointing at instruments)
    presets: dict[tuple[int, int], tuple[str, tuple[Zone, ...]]]
    #: instrument index -> zones pointing at samples
    instruments: tuple[tuple[Zone, ...], ...]
    sample_names: tuple[str, ...]
    #: per sample: (start, end, sample rate, type) from its header; offsets into ``sample_data``
    #: (16-bit words for .sf2, bytes of an Ogg Vorbis stream for .sf3's compressed samples)
    sample_headers: tuple[tuple[int, int, int, int], ...] = field(default=(), repr=False)
    sample_data: bytes = field(default=b"", repr=False)

    def preset_name(self, bank: int, program: int) -> str | None:
        found = self.presets.get((bank, program))
        return found[0] if found is not None else None

    def samples(self, bank: int, program: int, key: int, velocity: int) -> tuple[str, ...]:
        """The samples that sound ``key`` at ``velocity`` on preset (``bank``, ``program``), as
        ``"<name> [<index>]"``, sorted; empty when the preset is missing or silent there."""
        return tuple(self.sample_label(i) for i in self.sample_indices(bank, program, key, velocity))

    def sample_label(self, index: int) -> str:
        return f"{self.sample_names[index]} [{index}]"

    def sample_indices(self, bank: int, program: int, key: int, velocity: int) -> tuple[int, ...]:
        """:meth:`samples` as header indices."""
        found = self.presets.get((bank, program))
        if found is None:
            return ()
        return tuple(
            sorted(
                {
                    zone.target
                    for preset_zone in found[1]
                    if preset_zone.sounds(key, velocity)
                    for zone in self.instruments[preset_zone.target]
                    if zone.sounds(key, velocity)
                }
            )
        )

    def sample_audio(self, index: int) -> tuple[np.ndarray, int]:
        """Sample ``index`` as ``(n_samples,)`` float32 and its sample rate."""
        start, end, rate, kind = self.sample_headers[index]
        if kind & _COMPRESSED:
            import soundfile as sf

            audio, rate = sf.read(io.BytesIO(self.sample_data[start:end]), dtype="float32", always_2d=True)
            return audio.mean(axis=1), int(rate)
        words = np.frombuffer(self.sample_data, dtype="<i2", count=max(0, end - start), offset=2 * start)
        return words.astype(np.float32) / 32768.0, int(rate)


def read_soundfont(path: Path) -> SoundFont:
    """Parse the preset, instrument and sample headers of a .sf2 or .sf3 file.

    Raises:
        DownloadError: the file is missing, unreadable or not a SoundFont.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DownloadError(
            f"SoundFont {path} cannot be read ({exc.strerror or exc}); pass an existing .sf2/.sf3 (CLI: --soundfont)"
        ) from None
    try:
        return parse_soundfont(data)
    except (ValueError, struct.error, IndexError) as exc:
        raise DownloadError(
            f"SoundFont {path} is not a readable .sf2/.sf3 ({exc}); pass a valid General MIDI font (CLI: --soundfont)"
        ) from None


def parse_soundfont(data: bytes) -> SoundFont:
    """:func:`read_soundfont` on the file's bytes (ValueError when they are not a SoundFont)."""
    if data[:4] != b"RIFF" or data[8:12] != b"sfbk":
        raise ValueError("no RIFF 'sfbk' header")
    hydra = _pdta_chunks(data)
    missing = [n for n in ("phdr", "pbag", "pgen", "inst", "ibag", "igen", "shdr") if n not in hydra]
    if missing:
        raise ValueError(f"its 'pdta' list lacks {', '.join(missing)}")
    pgen = _generators(hydra["pgen"])
    igen = _generators(hydra["igen"])
    pbag = [g for g, _ in struct.iter_unpack("<HH", hydra["pbag"])]
    ibag = [g for g, _ in struct.iter_unpack("<HH", hydra["ibag"])]

    inst_records = list(struct.iter_unpack("<20sH", hydra["inst"]))
    instruments = tuple(
        _zones(ibag, igen, first, nxt, _GEN_SAMPLE)
        for (_, first), (_, nxt) in zip(inst_records[:-1], inst_records[1:], strict=True)
    )
    presets: dict[tuple[int, int], tuple[str, tuple[Zone, ...]]] = {}
    records = list(struct.iter_unpack("<20sHHHIII", hydra["phdr"]))
    for rec, nxt in zip(records[:-1], records[1:], strict=True):
        name, program, bank, first = _name(rec[0]), rec[1], rec[2], rec[3]
        zones = tuple(z for z in _zones(pbag, pgen, first, nxt[3], _GEN_INSTRUMENT) if z.target < len(instruments))
        presets.setdefault((bank, program), (name, zones))
    shdr = list(struct.iter_unpack("<20s5IbbHH", hydra["shdr"]))[:-1]
    return SoundFont(
        presets=presets,
        instruments=instruments,
        sample_names=tuple(_name(rec[0]) for rec in shdr),
        sample_headers=tuple((rec[1], rec[2], rec[5], rec[9]) for rec in shdr),
        sample_data=_list_chunks(data, b"sdta").get("smpl", b""),
    )


def _pdta_chunks(data: bytes) -> dict[str, bytes]:
    """The sub-chunks of the top-level ``LIST pdta`` chunk, by id."""
    chunks = _list_chunks(data, b"pdta")
    if not chunks:
        raise ValueError("no 'pdta' list")
    return chunks


def _list_chunks(data: bytes, kind: bytes) -> dict[str, bytes]:
    """The sub-chunks of the top-level ``LIST <kind>`` chunk, by id (empty when there is none)."""
    pos = 12
    while pos + 12 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        if cid == b"LIST" and data[pos + 8 : pos + 12] == kind:
            out: dict[str, bytes] = {}
            sub, end = pos + 12, min(len(data), pos + 8 + size)
            while sub + 8 <= end:
                sid, ssize = data[sub : sub + 4], struct.unpack_from("<I", data, sub + 4)[0]
                out[sid.decode("latin-1")] = data[sub + 8 : sub + 8 + ssize]
                sub += 8 + ssize + (ssize & 1)
            return out
        pos += 8 + size + (size & 1)
    return {}


def _generators(chunk: bytes) -> list[tuple[int, int, int]]:
    """(operator, low byte, high byte) of each generator record."""
    return [(op, lo, hi) for op, lo, hi in struct.iter_unpack("<HBB", chunk)]


def _zones(bags: list[int], gens: list[tuple[int, int, int]], first: int, end: int, target_op: int) -> list[Zone]:
    """The zones of one preset or instrument (bags ``first..end-1``); a leading zone without a
    ``target_op`` generator is global and lends its ranges to the others."""
    default_keys, default_vels = _FULL, _FULL
    zones: list[Zone] = []
    for b in range(first, min(end, len(bags) - 1)):
        keys = vels = target = None
        for op, lo, hi in gens[bags[b] : bags[b + 1]]:
            if op == _GEN_KEY_RANGE:
                keys = (lo, hi)
            elif op == _GEN_VEL_RANGE:
                vels = (lo, hi)
            elif op == target_op:
                target = lo | (hi << 8)
        if target is None:
            if b == first:  # the global zone
                default_keys, default_vels = keys or default_keys, vels or default_vels
            continue
        zones.append(Zone(keys or default_keys, vels or default_vels, target))
    return zones


def _name(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("latin-1").strip()


#: Samples are compared at this rate, over at most this many seconds from their start.
COMPARE_RATE = 8_000
COMPARE_SECONDS = 0.5
#: Two samples whose peak normalised cross-correlation reaches this hold the same recording.
DUPLICATE_CORRELATION = 0.95
#: Pairs whose average spectra (32 bands, unit length) have a lower cosine are not compared further.
_SPECTRUM_COSINE = 0.9


def duplicate_samples(font: SoundFont, indices: list[int] | tuple[int, ...]) -> dict[int, int]:
    """Which of the samples ``indices`` hold the same recording: each index -> the lowest index
    of its copies (itself when it has none).

    Each sample is resampled to :data:`COMPARE_RATE`, its first :data:`COMPARE_SECONDS` kept, and
    pairs are compared over the shorter one's length by their peak normalised cross-correlation
    (any lag, either polarity), so resampled, shifted or truncated copies count as one.
    """
    import soxr

    idx = sorted(set(int(i) for i in indices))
    snippets: list[np.ndarray] = []
    for i in idx:
        audio, rate = font.sample_audio(i)
        x = soxr.resample(audio, rate, COMPARE_RATE) if rate != COMPARE_RATE and len(audio) > 1 else audio
        x = np.asarray(x[: int(COMPARE_SECONDS * COMPARE_RATE)], dtype=np.float64)
        snippets.append(x - x.mean() if len(x) else x)
    bands = np.stack([_band_spectrum(x) for x in snippets]) if idx else np.zeros((0, 32))
    parent = {i: i for i in idx}

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    similar = bands @ bands.T
    for a, b in zip(*np.nonzero(np.triu(similar >= _SPECTRUM_COSINE, k=1)), strict=True):
        if _peak_correlation(snippets[a], snippets[b]) >= DUPLICATE_CORRELATION:
            ra, rb = root(idx[a]), root(idx[b])
            parent[max(ra, rb)] = min(ra, rb)
    return {i: root(i) for i in idx}


def _band_spectrum(x: np.ndarray, n_bands: int = 32) -> np.ndarray:
    """Unit-length magnitude spectrum of ``x`` summed into ``n_bands`` equal bands (zeros if silent)."""
    if len(x) < 2 * n_bands:
        return np.zeros(n_bands)
    mag = np.abs(np.fft.rfft(x))
    edges = np.linspace(0, len(mag), n_bands + 1).astype(int)
    out = np.add.reduceat(mag, edges[:-1])
    norm = np.linalg.norm(out)
    return out / norm if norm > 0 else out


def _peak_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Peak of the normalised cross-correlation of ``x`` and ``y``, each cut to the shorter's length."""
    n = min(len(x), len(y))
    if n < 2:
        return 0.0
    x, y = x[:n], y[:n]
    nx, ny = np.linalg.norm(x), np.linalg.norm(y)
    if nx == 0 or ny == 0:
        return 0.0
    size = 1 << (2 * n - 1).bit_length()
    xc = np.fft.irfft(np.fft.rfft(x, size) * np.conj(np.fft.rfft(y, size)), size)
    return float(np.abs(xc).max() / (nx * ny))
