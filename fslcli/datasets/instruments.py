"""TinySOL's 14 instruments: names, families, playing ranges and General MIDI programs.

Labels everywhere are TinySOL's "Instrument (in full)" names, so a model trained on one
TinySOL-shaped source evaluates on another.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Instrument:
    """One TinySOL instrument.

    ``low``/``high`` are the MIDI notes of its range (inclusive) as TinySOL records it;
    ``gm_program`` is the 0-based General MIDI program that renders it, every ``step``
    semitones. A drum sound (``kits`` not empty) is key ``low`` played on each of those drum
    kits (bank 128 presets) instead.
    """

    full: str
    abbr: str
    family: str
    folder: str
    low: int
    high: int
    gm_program: int
    step: int = 1
    kits: tuple[int, ...] = ()


INSTRUMENTS: tuple[Instrument, ...] = (
    Instrument("Bass Tuba", "BTb", "Brass", "Bass_Tuba", 30, 65, 58),
    Instrument("French Horn", "Hn", "Brass", "Horn", 34, 77, 60),
    Instrument("Trombone", "Tbn", "Brass", "Trombone", 34, 72, 57),
    Instrument("Trumpet in C", "TpC", "Brass", "Trumpet_C", 54, 86, 56),
    Instrument("Accordion", "Acc", "Keyboards", "Accordion", 40, 93, 21),
    Instrument("Contrabass", "Cb", "Strings", "Contrabass", 28, 67, 43),
    Instrument("Violin", "Vn", "Strings", "Violin", 55, 100, 40),
    Instrument("Viola", "Va", "Strings", "Viola", 48, 88, 41),
    Instrument("Cello", "Vc", "Strings", "Violoncello", 36, 81, 42),
    Instrument("Bassoon", "Bn", "Winds", "Bassoon", 34, 75, 70),
    Instrument("Clarinet in Bb", "ClBb", "Winds", "Clarinet_Bb", 50, 91, 71),
    Instrument("Flute", "Fl", "Winds", "Flute", 59, 96, 73),
    Instrument("Oboe", "Ob", "Winds", "Oboe", 58, 93, 68),
    Instrument("Alto Saxophone", "ASax", "Winds", "Sax_Alto", 49, 80, 65),
)

BY_NAME: dict[str, Instrument] = {i.full: i for i in INSTRUMENTS}

#: TinySOL's dynamics, with the MIDI velocity used to render each and its "Dynamics ID".
DYNAMICS: tuple[tuple[str, int, int], ...] = (("pp", 40, 0), ("mf", 80, 2), ("ff", 120, 4))

#: Columns of TinySOL's ``annotation/TinySOL_metadata.csv``, in order.
METADATA_COLUMNS: tuple[str, ...] = (
    "Path",
    "Fold",
    "Family",
    "Instrument (abbr.)",
    "Instrument (in full)",
    "Technique (abbr.)",
    "Technique (in full)",
    "Pitch",
    "Pitch ID",
    "Dynamics",
    "Dynamics ID",
    "Instance ID",
    "String ID",
    "Resampled",
)

#: Columns the offline render adds after TinySOL's own: the SoundFont preset and samples that
#: sound the note, and its source group (notes of one instrument that share a recording).
PROVENANCE_COLUMNS: tuple[str, ...] = ("SoundFont Preset", "SoundFont Samples", "Source Group")

_PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def pitch_name(midi: int) -> str:
    """MIDI note number to TinySOL's pitch spelling, e.g. 60 -> "C4"."""
    return f"{_PITCH_CLASSES[midi % 12]}{midi // 12 - 1}"
