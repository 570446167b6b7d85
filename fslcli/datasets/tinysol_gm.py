"""An offline, TinySOL-shaped dataset rendered from a General MIDI SoundFont.

Each of TinySOL's 14 instruments is played on its General MIDI program, one note per file
across its range, at pp, mf and ff. A note is held for a seeded 1.5-3.5 s, released, and
rendered until its release dies away (at most :data:`RELEASE_SECONDS` more); trailing
silence below -60 dB relative to the note's peak is trimmed, keeping a short fade. The
result is laid out exactly like TinySOL (``audio/<Family>/<Folder>/ordinario/*.wav`` and
``annotation/TinySOL_metadata.csv``) with a mirdata index in ``index/``, so mirdata's own
TinySOL loader and every fslcli TinySOL code path read it unchanged.

Every note's provenance is recorded: the SoundFont preset and samples that sound it and its
source group (:mod:`fslcli.datasets.provenance`), as three columns after TinySOL's own in the
metadata CSV (:data:`PROVENANCE_COLUMNS`), so TinySOL's columns and readers are unchanged.
``render_report.json`` names every pair of instruments that sound a common recording.

Rendering is deterministic: the same font bytes, seed and settings give byte-identical
files. Each note's hold time comes from its own generator, keyed by (seed, instrument,
MIDI note, dynamics), so it does not depend on which other notes are rendered or in what
order. The render is written into a temporary sibling folder and moved into place only
after a completion marker (:data:`MARKER_NAME`) has been written, so a partial render is
never mistaken for a finished one.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import tinysoundfont

from fslcli.config import DEFAULT_TEST_CLASSES, DEFAULT_TRAIN_CLASSES
from fslcli.datasets import mirdata_index
from fslcli.datasets.base import RENDER_MARKER
from fslcli.datasets.general_midi import DRUM_BANK
from fslcli.datasets.instruments import (
    DYNAMICS,
    INSTRUMENTS,
    METADATA_COLUMNS,
    PROVENANCE_COLUMNS,
    Instrument,
    pitch_name,
)
from fslcli.datasets.provenance import REPORT_NAME, SharedPair, shared_pairs, source_groups, write_report
from fslcli.datasets.soundfont import SoundFont, duplicate_samples, parse_soundfont
from fslcli.errors import DownloadError

#: Bump whenever a change here alters the rendered bytes; a data home rendered by another
#: version is not reused (it is replaced without --force: it is this renderer's own output).
#: 2: provenance columns and render_report.json.
RENDERER_VERSION: int = 2

#: Completion marker, written last inside the render before it is moved into place.
MARKER_NAME = RENDER_MARKER

#: Range of the seeded hold time (note-on to note-off), in seconds.
HOLD_SECONDS: tuple[float, float] = (1.5, 3.5)
#: Longest release rendered after note-off, in seconds.
RELEASE_SECONDS = 1.5
#: Trailing audio quieter than this, relative to the note's peak, is trimmed.
TRIM_DB = -60.0
#: Length of the fade-out that ends every trimmed note, in seconds.
FADE_SECONDS = 0.05
#: A note whose peak stays below this (about -100 dBFS) counts as silent and is skipped.
SILENCE_PEAK = 1e-5

_CHANNEL = 0
_BLOCK_FRAMES = 2048
_FLUSH_FRAMES = 256
_FLUSH_MAX_BLOCKS = 1000
_N_FOLDS = 5
#: TinySOL's own instruments: a font must sound them all (other GM programs are optional).
_TINYSOL_ABBRS = frozenset(i.abbr for i in INSTRUMENTS)
_DURATION_STREAM = 0
_FOLD_STREAM = 1


def default_soundfont() -> Path:
    """The General MIDI SoundFont shipped inside pretty_midi (``TimGM6mb.sf2``, ~6 MB)."""
    try:
        import pretty_midi
    except ImportError:
        raise DownloadError(
            "the default SoundFont ships with pretty_midi, which is not installed; "
            "install it (pip install pretty_midi) or pass a .sf2/.sf3 file (CLI: --soundfont)"
        ) from None
    path = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
    if not path.is_file():
        raise DownloadError(
            f"the default SoundFont {path} is missing from the pretty_midi installation; "
            "reinstall pretty_midi or pass a .sf2/.sf3 file (CLI: --soundfont)"
        )
    return path


@dataclass(frozen=True)
class RenderReport:
    """What :func:`render_tinysol_gm` did.

    ``per_instrument`` maps TinySOL's "Instrument (in full)" names to files written;
    ``skipped_silent`` counts notes the font could not sound (never written);
    ``reused`` is True when a matching complete render was already in place; ``shared`` lists
    the instruments that sound common recordings in this font (:mod:`~fslcli.datasets.provenance`).
    """

    data_home: Path
    written: int
    skipped_silent: int
    per_instrument: dict[str, int]
    seconds: float
    reused: bool
    shared: tuple[SharedPair, ...] = ()


@dataclass(frozen=True)
class _Note:
    """One file to render: an instrument, a MIDI note and a TinySOL dynamic, on a preset
    (``bank``, ``program``: the instrument's GM program, or a drum kit)."""

    instrument: Instrument
    midi: int
    dynamics: str
    velocity: int
    dynamics_id: int
    bank: int = 0
    program: int | None = None

    @property
    def preset(self) -> tuple[int, int]:
        return self.bank, self.instrument.gm_program if self.program is None else self.program

    @property
    def relpath(self) -> str:
        """Path relative to ``audio/``, as TinySOL's metadata writes it (drum sounds name the kit)."""
        inst = self.instrument
        where = f"K{self.preset[1]:03d}" if inst.kits else pitch_name(self.midi)
        name = f"{inst.abbr}-ord-{where}-{self.dynamics}-N-N.wav"
        return f"{inst.family}/{inst.folder}/ordinario/{name}"


def render_tinysol_gm(
    data_home: Path,
    soundfont: Path | None = None,
    seed: int = 0,
    *,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
    instruments: Sequence[Instrument] = INSTRUMENTS,
    max_notes_per_instrument: int | None = None,
    sample_rate: int = 44_100,
) -> RenderReport:
    """Render a TinySOL-shaped dataset from a SoundFont into ``data_home``.

    Args:
        data_home: Folder that will hold ``audio/``, ``annotation/`` and ``index/``.
        soundfont: A .sf2/.sf3 General MIDI font; ``None`` uses :func:`default_soundfont`.
        seed: Non-negative seed for hold times and folds.
        force: Replace whatever ``data_home`` holds, and re-render even a matching render.
        progress: Called as ``progress(done, total)`` after each note (written or skipped).
        instruments: Instruments to render, each on its ``gm_program`` over ``low..high``.
        max_notes_per_instrument: Render at most this many notes per instrument, evenly
            spaced over its range (for quick tests); ``None`` renders every note.
        sample_rate: Output sample rate in Hz (files are mono 16-bit PCM WAV).

    Returns:
        A :class:`RenderReport`; ``reused=True`` when ``data_home`` already held a complete
        render with the same font, seed, settings and :data:`RENDERER_VERSION`.

    Raises:
        DownloadError: the font is missing or unreadable, lacks a program, sounds no note
            of an instrument; ``data_home`` holds something else and ``force`` is False;
            or an argument is out of range.
    """
    started = time.perf_counter()
    _check_arguments(seed, instruments, max_notes_per_instrument, sample_rate)
    font_path = Path(soundfont) if soundfont is not None else default_soundfont()
    font_bytes = _read_font(font_path)
    # Through JSON, as the marker stores them, so a finished render compares equal (tuples become lists).
    settings = json.loads(
        json.dumps(
            {
                "renderer_version": RENDERER_VERSION,
                "soundfont_sha256": hashlib.sha256(font_bytes).hexdigest(),
                "seed": int(seed),
                "sample_rate": int(sample_rate),
                "max_notes_per_instrument": max_notes_per_instrument,
                "instruments": [asdict(inst) for inst in instruments],
            }
        )
    )

    # Resolved so a symlinked data home is rendered next to its target and swapped there.
    data_home = Path(data_home).expanduser().resolve()
    data_home.parent.mkdir(parents=True, exist_ok=True)
    _remove_partials(data_home)

    existing = _read_marker(data_home)
    if existing is not None and existing.get("settings") == settings and not force:
        from fslcli.datasets.provenance import read_shared_pairs

        found = read_shared_pairs(data_home)
        return RenderReport(
            data_home=data_home,
            written=int(existing["written"]),
            skipped_silent=int(existing["skipped_silent"]),
            per_instrument={name: int(n) for name, n in existing["per_instrument"].items()},
            seconds=time.perf_counter() - started,
            reused=True,
            shared=tuple(found[1]) if found else (),
        )
    _check_replaceable(data_home, existing, settings, force)

    synth, sfid = _load_synth(font_path, font_bytes, sample_rate)
    try:
        font = parse_soundfont(font_bytes)
    except ValueError as exc:
        raise DownloadError(
            f"SoundFont {font_path} cannot be parsed ({exc}); pass a valid .sf2/.sf3 file (CLI: --soundfont)"
        ) from None
    partial = _make_partial(data_home)
    try:
        counts = _render_into(
            partial,
            synth,
            sfid,
            font,
            font_path,
            settings,
            seed,
            progress,
            instruments,
            max_notes_per_instrument,
            sample_rate,
        )
        _move_into_place(partial, data_home)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    written, skipped, per_instrument, shared = counts
    return RenderReport(
        data_home=data_home,
        written=written,
        skipped_silent=skipped,
        per_instrument=per_instrument,
        seconds=time.perf_counter() - started,
        reused=False,
        shared=tuple(shared),
    )


# ---------------------------------------------------------------------------------------
# Rendering


def _render_into(
    out: Path,
    synth: tinysoundfont.Synth,
    sfid: int,
    font: SoundFont,
    font_path: Path,
    settings: dict[str, Any],
    seed: int,
    progress: Callable[[int, int], None] | None,
    instruments: Sequence[Instrument],
    max_notes: int | None,
    sample_rate: int,
) -> tuple[int, int, dict[str, int], list[SharedPair]]:
    """Render every note into ``out``, then the metadata, the index, the provenance report and
    the marker (last)."""
    plan = [(inst, _notes(inst, max_notes)) for inst in instruments]
    total = sum(len(notes) for _, notes in plan)
    sources = _NoteSources(font, plan)
    done = 0
    skipped = 0
    rows: list[list[str]] = []
    per_instrument: dict[str, int] = {}
    for inst, notes in plan:
        required = inst.abbr in _TINYSOL_ABBRS
        if required:
            _select_program(synth, sfid, 0, inst.gm_program, inst, font_path)
        selected = (0, inst.gm_program) if required else None
        kept: list[_Note] = []
        for note in notes:
            if note.preset != selected:
                selected = note.preset if font.preset_name(*note.preset) is not None else None
                if selected is not None:
                    _select_program(synth, sfid, *selected, inst, font_path)
            hold = hold_seconds(note_rng(seed, inst, note.midi, note.dynamics_id))
            audio = render_note(synth, note.midi, note.velocity, hold, sample_rate) if selected else None
            if audio is None:
                skipped += 1
            else:
                path = out / "audio" / note.relpath
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(path, audio, sample_rate, subtype="PCM_16", format="WAV")
                kept.append(note)
            done += 1
            if progress is not None:
                progress(done, total)
        if not kept and not required:
            continue  # a GM program or drum sound this font does not have
        if not kept:
            raise DownloadError(
                f"SoundFont {font_path} sounds no note of {inst.full!r} "
                f"(GM program {inst.gm_program}, MIDI {inst.low}-{inst.high}); "
                "use a General MIDI SoundFont (CLI: --soundfont)"
            )
        folds = assign_folds(len(kept), fold_rng(seed, inst))
        groups = source_groups([sources.recordings(note) for note in kept])
        rows.extend(
            _metadata_row(note, fold) + sources.columns(note, group)
            for note, fold, group in zip(kept, folds, groups, strict=True)
        )
        per_instrument[inst.full] = len(kept)
        sources.add_rendered(inst, kept, groups)

    rows.sort(key=lambda row: row[0])
    _write_metadata(out / "annotation" / "TinySOL_metadata.csv", rows)
    mirdata_index.write_index(out, [f"audio/{row[0]}" for row in rows])
    written = len(rows)
    shared = sources.shared()
    write_report(out / REPORT_NAME, sources.report(font_path, settings["soundfont_sha256"], per_instrument, shared))
    marker = {
        "settings": settings,
        "written": written,
        "skipped_silent": skipped,
        "per_instrument": per_instrument,
    }
    (out / MARKER_NAME).write_text(json.dumps(marker, indent=1, sort_keys=True), encoding="utf-8")
    return written, skipped, per_instrument, shared


class _NoteSources:
    """The samples behind each planned note, with copies of one recording merged
    (:func:`~fslcli.datasets.soundfont.duplicate_samples`), and what the rendered notes used."""

    def __init__(self, font: SoundFont, plan: Sequence[tuple[Instrument, Sequence[_Note]]]) -> None:
        self.font = font
        self.samples = {
            (inst.abbr, n.preset, n.midi, n.velocity): font.sample_indices(*n.preset, n.midi, n.velocity)
            for inst, notes in plan
            for n in notes
        }
        self.canonical = duplicate_samples(font, [i for ids in self.samples.values() for i in ids])
        self.used: dict[str, set[int]] = {}
        self.groups: dict[str, int] = {}

    def recordings(self, note: _Note) -> tuple[int, ...]:
        return tuple(sorted({self.canonical[i] for i in self._indices(note)}))

    def _indices(self, note: _Note) -> tuple[int, ...]:
        return self.samples[(note.instrument.abbr, note.preset, note.midi, note.velocity)]

    def columns(self, note: _Note, group: int) -> list[str]:
        """The provenance columns of one note (:data:`PROVENANCE_COLUMNS`)."""
        bank, program = note.preset
        preset = f"{bank:03d}:{program:03d} {self.font.preset_name(bank, program) or ''}".rstrip()
        samples = "|".join(self.font.sample_label(i) for i in self._indices(note))
        return [preset, samples, f"{note.instrument.abbr}-{group}"]

    def add_rendered(self, inst: Instrument, kept: Sequence[_Note], groups: Sequence[int]) -> None:
        self.used[inst.full] = {s for note in kept for s in self.recordings(note)}
        self.groups[inst.full] = len(set(groups))

    def shared(self) -> list[SharedPair]:
        return shared_pairs(self.used, {i: self.font.sample_label(i) for ids in self.used.values() for i in ids})

    def report(
        self, font_path: Path, sha256: str, per_instrument: dict[str, int], shared: list[SharedPair]
    ) -> dict[str, Any]:
        roles = default_roles()
        return {
            "soundfont": font_path.name,
            "soundfont_sha256": sha256,
            "instruments": {
                name: {
                    "files": per_instrument[name],
                    "recordings": len(self.used[name]),
                    "source_groups": self.groups[name],
                    "role": roles.get(name, ""),
                }
                for name in per_instrument
            },
            "shared": [
                {
                    "instruments": [p.first, p.second],
                    "roles": [roles.get(p.first, ""), roles.get(p.second, "")],
                    "samples": list(p.samples),
                }
                for p in shared
            ],
        }


def default_roles() -> dict[str, str]:
    """Each TinySOL instrument's side of the default split: "train" or "test"."""
    return {**{n: "train" for n in DEFAULT_TRAIN_CLASSES}, **{n: "test" for n in DEFAULT_TEST_CLASSES}}


def render_note(
    synth: tinysoundfont.Synth, midi: int, velocity: int, hold: float, sample_rate: int
) -> np.ndarray | None:
    """Play one note on channel 0 and return it as mono 16-bit PCM, or None if silent.

    The note is held ``hold`` seconds, released, and rendered in blocks until a block falls
    entirely below the trim threshold or :data:`RELEASE_SECONDS` have passed. Every voice
    is stopped afterwards, so the next note starts from a quiet synth.

    Returns:
        ``(n_samples,)`` int16, or None when the font cannot sound the note.
    """
    try:
        if not synth.noteon(_CHANNEL, midi, velocity):
            return None
        hold_frames = round(hold * sample_rate)
        blocks = [_generate(synth, hold_frames)]
        synth.noteoff(_CHANNEL, midi)
        peak = float(np.abs(blocks[0]).max(initial=0.0))
        release_frames = round(RELEASE_SECONDS * sample_rate)
        rendered = 0
        while rendered < release_frames:
            block = _generate(synth, min(_BLOCK_FRAMES, release_frames - rendered))
            rendered += len(block)
            blocks.append(block)
            block_peak = float(np.abs(block).max(initial=0.0))
            peak = max(peak, block_peak)
            if block_peak <= peak * _db_to_ratio(TRIM_DB):
                break
    finally:
        _silence(synth)
    mono = np.concatenate(blocks)
    if peak < SILENCE_PEAK:
        return None
    return to_pcm16(trim_tail(mono, sample_rate))


def _silence(synth: tinysoundfont.Synth) -> None:
    """Stop every voice and render until the synth is exactly silent.

    "All sounds off" only starts a very short release; a voice still fading when the next
    note starts would leak into it, making a note's bytes depend on the note rendered
    before it. Rendering the fade away (a few ms) makes every note start from the same
    quiet synth.
    """
    synth.sounds_off()
    for _ in range(_FLUSH_MAX_BLOCKS):
        if not np.frombuffer(synth.generate(_FLUSH_FRAMES), dtype=np.float32).any():
            return


def _generate(synth: tinysoundfont.Synth, frames: int) -> np.ndarray:
    """``frames`` of mono float32 audio (the mean of tinysoundfont's interleaved stereo)."""
    stereo = np.frombuffer(synth.generate(frames), dtype=np.float32).reshape(-1, 2)
    # generate() returns a view of the synth's own buffer; the mean makes a fresh array.
    return stereo.mean(axis=1, dtype=np.float32)


def trim_tail(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Cut trailing audio below :data:`TRIM_DB` relative to the peak, ending in a fade.

    Keeps up to :data:`FADE_SECONDS` after the last sample above the threshold and fades
    the final :data:`FADE_SECONDS` linearly to zero, so the cut is click-free.

    Args:
        audio: ``(n_samples,)`` float mono audio.

    Returns:
        ``(m_samples,)`` float32, ``m_samples <= n_samples``; a copy.
    """
    magnitude = np.abs(audio)
    peak = float(magnitude.max(initial=0.0))
    loud = np.flatnonzero(magnitude > peak * _db_to_ratio(TRIM_DB))
    if loud.size == 0:
        return np.asarray(audio[:0], dtype=np.float32)
    fade = round(FADE_SECONDS * sample_rate)
    end = min(len(audio), int(loud[-1]) + 1 + fade)
    out = np.array(audio[:end], dtype=np.float32)
    n = min(fade, end)
    out[end - n :] *= np.linspace(1.0, 0.0, n, dtype=np.float32)
    return out


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1] to int16 samples (clipped, rounded to nearest)."""
    return np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2")


def _db_to_ratio(db: float) -> float:
    return float(10.0 ** (db / 20.0))


# ---------------------------------------------------------------------------------------
# Seeded choices


def _instrument_key(inst: Instrument) -> int:
    """A stable 32-bit key for an instrument (its abbreviation), independent of list order."""
    return int.from_bytes(hashlib.sha256(inst.abbr.encode("utf-8")).digest()[:4], "big")


def note_rng(seed: int, inst: Instrument, midi: int, dynamics_id: int) -> np.random.Generator:
    """The generator for one note, keyed by (seed, instrument, note, dynamics) alone."""
    key = (_DURATION_STREAM, _instrument_key(inst), int(midi), int(dynamics_id))
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=key))


def fold_rng(seed: int, inst: Instrument) -> np.random.Generator:
    """The generator for one instrument's fold assignment."""
    key = (_FOLD_STREAM, _instrument_key(inst))
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=key))


def hold_seconds(rng: np.random.Generator) -> float:
    """A hold time drawn uniformly from :data:`HOLD_SECONDS`."""
    return float(rng.uniform(*HOLD_SECONDS))


def assign_folds(n: int, rng: np.random.Generator, n_folds: int = _N_FOLDS) -> list[int]:
    """Balanced folds for ``n`` items: fold sizes differ by at most one, order shuffled."""
    return [int(f) for f in rng.permutation(np.arange(n) % n_folds)]


# ---------------------------------------------------------------------------------------
# Notes, metadata and the font


def _notes(inst: Instrument, max_notes: int | None) -> list[_Note]:
    """The instrument's notes (all, or ``max_notes`` evenly spaced; a drum sound's kits, or the
    first ``max_notes`` of them) at every dynamic."""
    if inst.kits:
        kits = inst.kits[:max_notes] if max_notes is not None else inst.kits
        return [
            _Note(inst, inst.low, dyn, velocity, dyn_id, bank=DRUM_BANK, program=kit)
            for kit in kits
            for dyn, velocity, dyn_id in DYNAMICS
        ]
    midis = list(range(inst.low, inst.high + 1, inst.step))
    if max_notes is not None and max_notes < len(midis):
        picks = np.round(np.linspace(0, len(midis) - 1, max_notes)).astype(int)
        midis = sorted({midis[int(m)] for m in picks})
    return [_Note(inst, midi, dyn, velocity, dyn_id) for midi in midis for dyn, velocity, dyn_id in DYNAMICS]


def _metadata_row(note: _Note, fold: int) -> list[str]:
    inst = note.instrument
    return [
        note.relpath,
        str(fold),
        inst.family,
        inst.abbr,
        inst.full,
        "ord",
        "ordinario",
        pitch_name(note.midi),
        str(note.midi),
        note.dynamics,
        str(note.dynamics_id),
        "0",
        "",
        "FALSE",
    ]


def _write_metadata(path: Path, rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(METADATA_COLUMNS + PROVENANCE_COLUMNS)
        writer.writerows(rows)


def _read_font(path: Path) -> bytes:
    if not path.is_file():
        raise DownloadError(
            f"SoundFont {path} does not exist or is not a file; pass an existing .sf2/.sf3 "
            "file (CLI: --soundfont) or omit it to use the General MIDI font shipped with "
            "pretty_midi"
        )
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DownloadError(
            f"SoundFont {path} cannot be read ({exc.strerror or exc}); check its permissions "
            "or pass another .sf2/.sf3 file (CLI: --soundfont)"
        ) from None


def _load_synth(path: Path, data: bytes, sample_rate: int) -> tuple[tinysoundfont.Synth, int]:
    synth = tinysoundfont.Synth(samplerate=sample_rate)
    try:
        sfid = synth.sfload(data)
    except (RuntimeError, OSError) as exc:
        raise DownloadError(
            f"SoundFont {path} cannot be loaded ({exc}); pass a valid .sf2/.sf3 file (CLI: --soundfont)"
        ) from None
    return synth, sfid


def _select_program(
    synth: tinysoundfont.Synth, sfid: int, bank: int, program: int, inst: Instrument, path: Path
) -> None:
    try:
        synth.program_select(_CHANNEL, sfid, bank, program)
    except RuntimeError:
        raise DownloadError(
            f"SoundFont {path} has no preset for GM program {program} in bank {bank}, "
            f"needed for {inst.full!r}; use a General MIDI SoundFont (CLI: --soundfont)"
        ) from None


def _check_arguments(
    seed: int,
    instruments: Sequence[Instrument],
    max_notes: int | None,
    sample_rate: int,
) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise DownloadError(f"seed {seed!r} must be a non-negative integer, e.g. --seed 0")
    if max_notes is not None and max_notes < 1:
        raise DownloadError(f"max_notes_per_instrument {max_notes!r} must be at least 1, or None for every note")
    if sample_rate < 1:
        raise DownloadError(f"sample_rate {sample_rate!r} must be positive, e.g. 44100")
    if not instruments:
        raise DownloadError("no instruments to render; pass at least one Instrument")
    seen: set[str] = set()
    for inst in instruments:
        if inst.abbr in seen:
            raise DownloadError(f"instrument abbreviation {inst.abbr!r} is listed twice")
        seen.add(inst.abbr)
        if not 0 <= inst.low <= inst.high <= 127:
            raise DownloadError(
                f"{inst.full!r} has range {inst.low}-{inst.high}; it needs 0 <= low <= high <= 127 (MIDI notes)"
            )
        if not 0 <= inst.gm_program <= 127:
            raise DownloadError(f"{inst.full!r} has GM program {inst.gm_program}; it needs 0-127")


# ---------------------------------------------------------------------------------------
# The data home: markers, refusal, leftovers and the final move


def _read_marker(data_home: Path) -> dict[str, Any] | None:
    """The completion marker of a finished render in ``data_home``, or None."""
    try:
        marker = json.loads((data_home / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or not isinstance(marker.get("settings"), dict):
        return None
    required = (
        data_home / "annotation" / "TinySOL_metadata.csv",
        mirdata_index.index_path(data_home),
    )
    if not all(p.is_file() for p in required):
        return None
    try:
        int(marker["written"]), int(marker["skipped_silent"])
        for n in marker["per_instrument"].values():
            int(n)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return marker


def _check_replaceable(data_home: Path, existing: dict[str, Any] | None, settings: dict[str, Any], force: bool) -> None:
    """Refuse to replace anything but an empty folder, or the same render made by an older
    renderer, unless ``force`` is set."""
    if not data_home.exists():
        return
    if not data_home.is_dir():
        raise DownloadError(f"{data_home} exists and is not a folder; remove it or choose another --data-home")
    if force or not any(data_home.iterdir()):
        return
    if existing is not None and _same_but_older(existing["settings"], settings):
        return
    if existing is not None:
        reason = "holds a SoundFont render with different settings (font, seed, version, ...)"
    else:
        reason = "is not empty and holds no finished SoundFont render"
    raise DownloadError(
        f"{data_home} {reason}; pass force=True (CLI: --force) to replace it, or choose another --data-home"
    )


def _same_but_older(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """The same render request (font, seed, notes) made by an older renderer version."""
    version = old.get("renderer_version")
    same = {k: v for k, v in old.items() if k != "renderer_version"} == {
        k: v for k, v in new.items() if k != "renderer_version"
    }
    return same and isinstance(version, int) and version < new["renderer_version"]


def _remove_partials(data_home: Path) -> None:
    """Delete ``<data_home>.partial-*`` siblings left behind by an interrupted render."""
    for leftover in data_home.parent.glob(f"{data_home.name}.partial-*"):
        try:
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
        except OSError as exc:
            raise DownloadError(
                f"cannot remove {leftover}, left by an interrupted render ({exc.strerror or exc}); "
                "delete it by hand and run again"
            ) from None


def _make_partial(data_home: Path) -> Path:
    """A fresh, empty ``<data_home>.partial-<random>`` sibling (created with the umask)."""
    while True:
        partial = data_home.with_name(f"{data_home.name}.partial-{secrets.token_hex(6)}")
        try:
            partial.mkdir()
        except FileExistsError:
            continue
        return partial


def _move_into_place(partial: Path, data_home: Path) -> None:
    """Swap the finished render in for whatever ``data_home`` held (already checked)."""
    if data_home.is_dir():
        if any(data_home.iterdir()):
            # The old tree keeps a .partial- name so an interruption here is cleaned later.
            old = partial.with_name(partial.name + "-replaced")
            os.replace(data_home, old)
            os.replace(partial, data_home)
            shutil.rmtree(old, ignore_errors=True)
            return
        data_home.rmdir()
    os.replace(partial, data_home)
