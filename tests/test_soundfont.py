"""Reading which SoundFont samples sound a note, finding copies of a recording, source groups."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import soxr

from fslcli.datasets.provenance import SharedPair, leaks, shared_pairs, source_groups
from fslcli.datasets.soundfont import duplicate_samples, parse_soundfont, read_soundfont
from fslcli.datasets.tinysol_gm import default_soundfont
from fslcli.errors import DownloadError

KEY_RANGE, VEL_RANGE, INSTRUMENT, SAMPLE_ID = 43, 44, 41, 53


def _chunk(cid: bytes, body: bytes) -> bytes:
    return cid + struct.pack("<I", len(body)) + body + (b"\0" if len(body) % 2 else b"")


def _zones(zones: list[list[tuple[int, int, int]]]) -> tuple[bytes, bytes, list[int]]:
    """bag and gen chunk bodies for zone lists; returns (bags, gens, first bag of each list)."""
    bags, gens, firsts, n_gen = b"", b"", [], 0
    for zone_list in zones:
        firsts.append(len(bags) // 4)
        for gen in zone_list:
            bags += struct.pack("<HH", n_gen, 0)
            for op, lo, hi in gen if isinstance(gen, list) else [gen]:
                gens += struct.pack("<HBB", op, lo, hi)
                n_gen += 1
    bags += struct.pack("<HH", n_gen, 0)
    gens += struct.pack("<HBB", 0, 0, 0)
    return bags, gens, firsts


def build_sf2(samples: list[tuple[str, np.ndarray, int]], instruments: list[list[list]], presets: list[tuple]) -> bytes:
    """A minimal SoundFont: ``samples`` (name, float audio, rate); ``instruments`` as zone lists of
    generator lists; ``presets`` as (name, program, zone list)."""
    data, shdr = b"", b""
    for name, audio, rate in samples:
        start = len(data) // 2
        data += (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes() + b"\0" * 92  # 46 zero words
        end = start + len(audio)
        shdr += struct.pack("<20s5IbbHH", name.encode(), start, end, start, end, rate, 60, 0, 0, 1)
    shdr += struct.pack("<20s5IbbHH", b"EOS", 0, 0, 0, 0, 0, 0, 0, 0, 0)
    ibag, igen, ifirst = _zones(instruments)
    inst = b"".join(struct.pack("<20sH", f"inst{i}".encode(), f) for i, f in enumerate(ifirst))
    inst += struct.pack("<20sH", b"EOI", len(ibag) // 4 - 1)
    pbag, pgen, pfirst = _zones([zones for _, _, zones in presets])
    phdr = b"".join(
        struct.pack("<20sHHHIII", name.encode(), program, 0, f, 0, 0, 0)
        for (name, program, _), f in zip(presets, pfirst, strict=True)
    )
    phdr += struct.pack("<20sHHHIII", b"EOP", 0, 0, len(pbag) // 4 - 1, 0, 0, 0)
    pdta = b"pdta" + b"".join(
        _chunk(c, b)
        for c, b in (
            (b"phdr", phdr),
            (b"pbag", pbag),
            (b"pmod", b"\0" * 10),
            (b"pgen", pgen),
            (b"inst", inst),
            (b"ibag", ibag),
            (b"imod", b"\0" * 10),
            (b"igen", igen),
            (b"shdr", shdr),
        )
    )
    body = b"sfbk" + _chunk(b"LIST", b"INFO" + _chunk(b"ifil", struct.pack("<HH", 2, 1)))
    body += _chunk(b"LIST", b"sdta" + _chunk(b"smpl", data)) + _chunk(b"LIST", pdta)
    return _chunk(b"RIFF", body)


def tone(seed: int, seconds: float = 0.3, rate: int = 22_050) -> np.ndarray:
    """A noisy decaying tone, unlike any other seed's."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    x = np.sin(2 * np.pi * rng.uniform(100, 400) * t) + 0.5 * rng.standard_normal(len(t))
    return (0.5 * x * np.exp(-3 * t) / np.abs(x).max()).astype(np.float32)


@pytest.fixture(scope="module")
def font() -> bytes:
    """Two presets. "Strings" (program 40): a global zone limiting velocity to 1-100, low keys
    play sample A, high keys B. "Viola" (program 41): keys up to 59 play a resampled copy of A
    (sample C), and every key also layers sample D."""
    a, b, d = tone(1), tone(2), tone(4)
    c = soxr.resample(a, 22_050, 44_100).astype(np.float32)
    samples = [("A", a, 22_050), ("B", b, 22_050), ("C", c, 44_100), ("D", d, 22_050)]
    instruments = [
        [[(VEL_RANGE, 1, 100)], [(KEY_RANGE, 0, 59), (SAMPLE_ID, 0, 0)], [(KEY_RANGE, 60, 127), (SAMPLE_ID, 1, 0)]],
        [[(KEY_RANGE, 0, 59), (SAMPLE_ID, 2, 0)], [(SAMPLE_ID, 3, 0)]],
    ]
    presets = [("Strings", 40, [[(INSTRUMENT, 0, 0)]]), ("Viola", 41, [[(KEY_RANGE, 0, 127), (INSTRUMENT, 1, 0)]])]
    return build_sf2(samples, instruments, presets)


def test_samples_follow_key_and_velocity_ranges(font: bytes) -> None:
    sf = parse_soundfont(font)
    assert sf.preset_name(0, 40) == "Strings"
    assert sf.samples(0, 40, 48, 80) == ("A [0]",)
    assert sf.samples(0, 40, 72, 80) == ("B [1]",)
    # The global zone's velocity range holds for zones that set none.
    assert sf.samples(0, 40, 72, 110) == ()
    assert sf.samples(0, 41, 48, 110) == ("C [2]", "D [3]")
    assert sf.samples(0, 41, 72, 110) == ("D [3]",)
    assert sf.samples(0, 99, 60, 80) == ()


def test_a_resampled_copy_is_the_same_recording(font: bytes) -> None:
    sf = parse_soundfont(font)
    assert duplicate_samples(sf, [0, 1, 2, 3]) == {0: 0, 1: 1, 2: 0, 3: 3}


def test_not_a_soundfont_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "x.sf2"
    bad.write_bytes(b"RIFF\0\0\0\0WAVE")
    with pytest.raises(DownloadError, match="x.sf2 is not a readable"):
        read_soundfont(bad)


def test_timgm6mb_viola_plays_the_violin_and_the_horn_the_tuba() -> None:
    """The shipped font's known overlaps are found from the font itself, not from names."""
    sf = read_soundfont(default_soundfont())

    def used(program: int, low: int, high: int) -> set[int]:
        return {i for key in range(low, high + 1) for v in (40, 80, 120) for i in sf.sample_indices(0, program, key, v)}

    violin, viola, horn, tuba = used(40, 55, 100), used(41, 48, 88), used(60, 34, 77), used(58, 30, 65)
    assert viola <= violin
    canon = duplicate_samples(sf, sorted(horn | tuba))
    assert {canon[i] for i in horn} & {canon[i] for i in tuba}
    assert not horn & tuba  # by header alone they look unrelated


def test_source_groups_join_notes_through_shared_recordings() -> None:
    # notes 0-1 share 5; 2 shares 7 with 3, which shares 8 with 4; 5 stands alone
    assert source_groups([(5,), (5, 6), (7,), (7, 8), (8,), (9,)]) == [0, 0, 1, 1, 1, 2]
    assert source_groups([]) == []


def test_shared_pairs_and_which_cross_the_split() -> None:
    pairs = shared_pairs({"Violin": {1, 2}, "Viola": {2, 3}, "Flute": {4}}, {1: "a", 2: "b", 3: "c", 4: "d"})
    assert pairs == [SharedPair("Violin", "Viola", ("b",))]
    assert pairs[0].describe({"Violin": "train", "Viola": "test"}) == "Violin (train) and Viola (test) share 1 sample"
    assert leaks(pairs, train=["Violin"], test=["Viola"]) == pairs
    assert leaks(pairs, train=["Violin", "Viola"], test=["Flute"]) == []
