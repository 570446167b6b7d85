"""The rest of a General MIDI font: its other 114 programs and its drum sounds, as training classes.

TinySOL's 14 instruments use 14 of General MIDI's 128 programs. A GM font also plays the other
114 (pianos, guitars, synths, sound effects, ...) and, on its drum kits (bank 128), 47 percussion
sounds. Rendered beside TinySOL's instruments they give a model many more kinds of sound to learn
from. Labels are General MIDI's names (the same in every font); each program is played from C2
to C7 every :data:`STEP` semitones, each drum sound once on every standard kit the font has.
"""

from __future__ import annotations

from fslcli.datasets.instruments import INSTRUMENTS, Instrument

#: General MIDI 1's program names, 0-based.
PROGRAMS: tuple[str, ...] = (
    # Piano
    "Acoustic Grand Piano", "Bright Acoustic Piano", "Electric Grand Piano", "Honky-tonk Piano",
    "Electric Piano 1", "Electric Piano 2", "Harpsichord", "Clavinet",
    # Chromatic percussion
    "Celesta", "Glockenspiel", "Music Box", "Vibraphone", "Marimba", "Xylophone", "Tubular Bells", "Dulcimer",
    # Organ
    "Drawbar Organ", "Percussive Organ", "Rock Organ", "Church Organ", "Reed Organ", "Accordion", "Harmonica",
    "Tango Accordion",
    # Guitar
    "Acoustic Guitar (nylon)", "Acoustic Guitar (steel)", "Electric Guitar (jazz)", "Electric Guitar (clean)",
    "Electric Guitar (muted)", "Overdriven Guitar", "Distortion Guitar", "Guitar Harmonics",
    # Bass
    "Acoustic Bass", "Electric Bass (finger)", "Electric Bass (pick)", "Fretless Bass", "Slap Bass 1",
    "Slap Bass 2", "Synth Bass 1", "Synth Bass 2",
    # Strings
    "Violin", "Viola", "Cello", "Contrabass", "Tremolo Strings", "Pizzicato Strings", "Orchestral Harp", "Timpani",
    # Ensemble
    "String Ensemble 1", "String Ensemble 2", "Synth Strings 1", "Synth Strings 2", "Choir Aahs", "Voice Oohs",
    "Synth Voice", "Orchestra Hit",
    # Brass
    "Trumpet", "Trombone", "Tuba", "Muted Trumpet", "French Horn", "Brass Section", "Synth Brass 1", "Synth Brass 2",
    # Reed
    "Soprano Sax", "Alto Sax", "Tenor Sax", "Baritone Sax", "Oboe", "English Horn", "Bassoon", "Clarinet",
    # Pipe
    "Piccolo", "Flute", "Recorder", "Pan Flute", "Blown Bottle", "Shakuhachi", "Whistle", "Ocarina",
    # Synth lead
    "Lead 1 (square)", "Lead 2 (sawtooth)", "Lead 3 (calliope)", "Lead 4 (chiff)", "Lead 5 (charang)",
    "Lead 6 (voice)", "Lead 7 (fifths)", "Lead 8 (bass + lead)",
    # Synth pad
    "Pad 1 (new age)", "Pad 2 (warm)", "Pad 3 (polysynth)", "Pad 4 (choir)", "Pad 5 (bowed)", "Pad 6 (metallic)",
    "Pad 7 (halo)", "Pad 8 (sweep)",
    # Synth effects
    "FX 1 (rain)", "FX 2 (soundtrack)", "FX 3 (crystal)", "FX 4 (atmosphere)", "FX 5 (brightness)",
    "FX 6 (goblins)", "FX 7 (echoes)", "FX 8 (sci-fi)",
    # Ethnic
    "Sitar", "Banjo", "Shamisen", "Koto", "Kalimba", "Bagpipe", "Fiddle", "Shanai",
    # Percussive
    "Tinkle Bell", "Agogo", "Steel Drums", "Woodblock", "Taiko Drum", "Melodic Tom", "Synth Drum", "Reverse Cymbal",
    # Sound effects
    "Guitar Fret Noise", "Breath Noise", "Seashore", "Bird Tweet", "Telephone Ring", "Helicopter", "Applause",
    "Gunshot",
)  # fmt: skip

#: General MIDI's sixteen program families, eight programs each.
FAMILIES: tuple[str, ...] = (
    "Piano", "Chromatic Percussion", "Organ", "Guitar", "Bass", "Strings", "Ensemble", "Brass", "Reed", "Pipe",
    "Synth Lead", "Synth Pad", "Synth Effects", "Ethnic", "Percussive", "Sound Effects",
)  # fmt: skip

#: General MIDI's percussion map: key -> sound, on channel 10 (bank 128 in a SoundFont).
DRUM_SOUNDS: dict[int, str] = dict(
    enumerate(
        (
            "Acoustic Bass Drum", "Bass Drum 1", "Side Stick", "Acoustic Snare", "Hand Clap", "Electric Snare",
            "Low Floor Tom", "Closed Hi-Hat", "High Floor Tom", "Pedal Hi-Hat", "Low Tom", "Open Hi-Hat",
            "Low-Mid Tom", "Hi-Mid Tom", "Crash Cymbal 1", "High Tom", "Ride Cymbal 1", "Chinese Cymbal", "Ride Bell",
            "Tambourine", "Splash Cymbal", "Cowbell", "Crash Cymbal 2", "Vibraslap", "Ride Cymbal 2", "Hi Bongo",
            "Low Bongo", "Mute Hi Conga", "Open Hi Conga", "Low Conga", "High Timbale", "Low Timbale", "High Agogo",
            "Low Agogo", "Cabasa", "Maracas", "Short Whistle", "Long Whistle", "Short Guiro", "Long Guiro", "Claves",
            "Hi Wood Block", "Low Wood Block", "Mute Cuica", "Open Cuica", "Mute Triangle", "Open Triangle",
        ),
        start=35,
    )
)  # fmt: skip

#: The GS standard kits (bank 128 presets) a drum sound is played on, where the font has them:
#: Standard, Room, Power, Electronic, TR-808, Jazz, Brush, Orchestra.
KITS: tuple[int, ...] = (0, 8, 16, 24, 25, 32, 40, 48)
DRUM_BANK = 128
#: Programs other than TinySOL's are played from C2 to C7 every this many semitones.
LOW, HIGH, STEP = 36, 96, 3


def _folder(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name).strip("_")


def extra_instruments() -> tuple[Instrument, ...]:
    """Every GM program TinySOL's instruments do not use, then every GM drum sound."""
    taken = {i.gm_program for i in INSTRUMENTS}
    melodic = tuple(
        Instrument(name, f"GM{p:03d}", f"GM_{_folder(FAMILIES[p // 8])}", _folder(name), LOW, HIGH, p, step=STEP)
        for p, name in enumerate(PROGRAMS)
        if p not in taken
    )
    drums = tuple(
        Instrument(name, f"DR{key:03d}", "GM_Drums", _folder(name), key, key, KITS[0], kits=KITS)
        for key, name in DRUM_SOUNDS.items()
    )
    return melodic + drums


#: TinySOL's 14 instruments, then every other GM program and drum sound.
ALL_INSTRUMENTS: tuple[Instrument, ...] = INSTRUMENTS + extra_instruments()
