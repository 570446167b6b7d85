"""The offline SoundFont render: layout, determinism, mirdata compatibility, safety."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import tinysoundfont

from fslcli.datasets import mirdata_index, tinysol_gm
from fslcli.datasets.instruments import (
    BY_NAME,
    DYNAMICS,
    INSTRUMENTS,
    METADATA_COLUMNS,
    PROVENANCE_COLUMNS,
    pitch_name,
)
from fslcli.datasets.tinysol_gm import (
    MARKER_NAME,
    RenderReport,
    assign_folds,
    default_soundfont,
    hold_seconds,
    note_rng,
    render_tinysol_gm,
    trim_tail,
)
from fslcli.errors import DownloadError

SMALL = 2  # notes per instrument in the shared render: 14 x 2 x 3 = 84 files
VIOLIN = BY_NAME["Violin"]
# A one-instrument, low-rate render for tests that only need *a* render.
TINY = {"instruments": (VIOLIN,), "max_notes_per_instrument": 1, "sample_rate": 8_000}


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (audio, CSV, index, marker), by relative path."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def read_rows(home: Path) -> list[dict[str, str]]:
    with open(home / "annotation" / "TinySOL_metadata.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> RenderReport:
    home = tmp_path_factory.mktemp("gm") / "tinysol_gm"
    return render_tinysol_gm(home, seed=0, max_notes_per_instrument=SMALL)


def test_renders_all_fourteen_instruments(rendered: RenderReport) -> None:
    assert rendered.reused is False
    assert rendered.per_instrument == {i.full: SMALL * len(DYNAMICS) for i in INSTRUMENTS}
    assert rendered.written == len(INSTRUMENTS) * SMALL * len(DYNAMICS)
    assert rendered.skipped_silent == 0
    wavs = list((rendered.data_home / "audio").rglob("*.wav"))
    assert len(wavs) == rendered.written
    for inst in INSTRUMENTS:
        folder = rendered.data_home / "audio" / inst.family / inst.folder / "ordinario"
        assert len(list(folder.glob(f"{inst.abbr}-ord-*-N-N.wav"))) == SMALL * len(DYNAMICS)
    # max_notes_per_instrument=2 spans the range: the lowest and highest notes.
    tuba = rendered.data_home / "audio/Brass/Bass_Tuba/ordinario"
    assert (tuba / "BTb-ord-F#1-pp-N-N.wav").is_file()
    assert (tuba / f"BTb-ord-{pitch_name(BY_NAME['Bass Tuba'].high)}-ff-N-N.wav").is_file()


def test_files_are_mono_pcm16_and_trimmed(rendered: RenderReport) -> None:
    for wav in (rendered.data_home / "audio").rglob("*.wav"):
        info = sf.info(wav)
        assert (info.samplerate, info.channels, info.subtype, info.format) == (
            44_100,
            1,
            "PCM_16",
            "WAV",
        )
        # Hold is 1.5-3.5 s; release adds at most 1.5 s (plus rounding).
        assert 1.5 <= info.duration <= 5.0 + 1e-3
        audio, _ = sf.read(wav, dtype="float32")
        assert np.abs(audio).max() > 0.01
        assert abs(audio[-1]) < 1e-3  # ends in the fade, no click


def test_metadata_csv_matches_tinysol(rendered: RenderReport) -> None:
    home = rendered.data_home
    with open(home / "annotation" / "TinySOL_metadata.csv", newline="") as f:
        header = next(csv.reader(f))
    assert tuple(header) == METADATA_COLUMNS + PROVENANCE_COLUMNS  # TinySOL's own columns first, unchanged
    rows = read_rows(home)
    assert len(rows) == rendered.written
    assert [r["Path"] for r in rows] == sorted(r["Path"] for r in rows)
    dyn_ids = {name: dyn_id for name, _, dyn_id in DYNAMICS}
    pattern = re.compile(r"^(\w+)/(\w+)/ordinario/([A-Za-z]+)-ord-([A-G]#?-?\d)-(pp|mf|ff)-N-N\.wav$")
    for row in rows:
        match = pattern.match(row["Path"])
        assert match, row["Path"]
        inst = BY_NAME[row["Instrument (in full)"]]
        family, folder, abbr, pitch, dyn = match.groups()
        assert (family, folder, abbr) == (inst.family, inst.folder, inst.abbr)
        assert (row["Family"], row["Instrument (abbr.)"]) == (inst.family, inst.abbr)
        assert (row["Technique (abbr.)"], row["Technique (in full)"]) == (
            "ord",
            "ordinario",
        )
        assert row["Pitch"] == pitch == pitch_name(int(row["Pitch ID"]))
        assert inst.low <= int(row["Pitch ID"]) <= inst.high
        assert row["Dynamics"] == dyn
        assert int(row["Dynamics ID"]) == dyn_ids[dyn]
        assert (row["Instance ID"], row["String ID"], row["Resampled"]) == (
            "0",
            "",
            "FALSE",
        )
        assert (home / "audio" / row["Path"]).is_file()
    for inst in INSTRUMENTS:
        folds = Counter(int(r["Fold"]) for r in rows if r["Instrument (abbr.)"] == inst.abbr)
        assert set(folds) <= set(range(5))
        assert max(folds.values()) - min(folds.values()) <= 1  # 6 files: 2,1,1,1,1
        assert len(folds) == 5


def test_mirdata_tinysol_loader_reads_it(rendered: RenderReport) -> None:
    from mirdata.datasets import tinysol

    home = rendered.data_home
    ds = tinysol.Dataset(data_home=str(home))
    ds.index_path = str(mirdata_index.index_path(home))
    assert len(ds.track_ids) == rendered.written
    missing, bad_checksum = ds.validate(verbose=False)
    assert missing == {"tracks": {}} or not any(missing.values())
    assert not any(bad_checksum.values())
    track = ds.track("BTb-ord-F#1-pp-N-N")
    assert track.instrument_full == "Bass Tuba"
    assert track.instrument_abbr == "BTb"
    assert track.family == "Brass"
    assert track.technique_full == "ordinario"
    assert (track.pitch, track.pitch_id) == ("F#1", 30)
    assert (track.dynamics, track.dynamics_id) == ("pp", 0)
    assert track.split in range(5)
    assert track.is_resampled is False
    # track.audio would decode through librosa (seconds of first-call start-up); the
    # path mirdata resolves and the checksums it validated above are what matter here.
    assert Path(track.audio_path).is_file()
    assert sf.info(track.audio_path).samplerate == 44_100


def test_same_seed_is_byte_identical(rendered: RenderReport, tmp_path: Path) -> None:
    again = render_tinysol_gm(tmp_path / "again", seed=0, max_notes_per_instrument=SMALL)
    first, second = tree_hashes(rendered.data_home), tree_hashes(again.data_home)
    assert "annotation/TinySOL_metadata.csv" in first and MARKER_NAME in first
    assert first == second


def test_note_seeds_do_not_depend_on_what_else_is_rendered(rendered: RenderReport, tmp_path: Path) -> None:
    # Violin alone, listed first instead of seventh: the same Violin files and folds.
    alone = render_tinysol_gm(
        tmp_path / "violin",
        seed=0,
        instruments=(VIOLIN,),
        max_notes_per_instrument=SMALL,
    )
    full = tree_hashes(rendered.data_home)
    for rel, digest in tree_hashes(alone.data_home).items():
        if rel.startswith("audio/"):
            assert full[rel] == digest
    violin_rows = [r for r in read_rows(rendered.data_home) if r["Instrument (abbr.)"] == "Vn"]
    assert read_rows(alone.data_home) == violin_rows


def test_different_seed_gives_different_durations(tmp_path: Path) -> None:
    a = render_tinysol_gm(tmp_path / "a", seed=0, **TINY)
    b = render_tinysol_gm(tmp_path / "b", seed=1, **TINY)
    wavs = sorted(p.relative_to(a.data_home) for p in a.data_home.rglob("*.wav"))
    assert wavs == sorted(p.relative_to(b.data_home) for p in b.data_home.rglob("*.wav"))
    durations_a = [sf.info(a.data_home / w).frames for w in wavs]
    durations_b = [sf.info(b.data_home / w).frames for w in wavs]
    assert durations_a != durations_b
    assert tree_hashes(a.data_home) != tree_hashes(b.data_home)


def test_hold_times_are_seeded_and_in_range() -> None:
    holds = [hold_seconds(note_rng(s, VIOLIN, 60, 2)) for s in range(50)]
    assert all(1.5 <= h <= 3.5 for h in holds)
    assert len(set(holds)) == 50
    assert hold_seconds(note_rng(7, VIOLIN, 60, 2)) == hold_seconds(note_rng(7, VIOLIN, 60, 2))
    assert hold_seconds(note_rng(7, VIOLIN, 60, 2)) != hold_seconds(note_rng(7, VIOLIN, 61, 2))


@pytest.mark.parametrize("n", [0, 1, 4, 5, 6, 13, 40])
def test_assign_folds_is_balanced(n: int) -> None:
    folds = assign_folds(n, np.random.default_rng(0))
    assert len(folds) == n
    counts = [folds.count(f) for f in range(5)]
    assert max(counts) - min(counts) <= 1
    assert folds == assign_folds(n, np.random.default_rng(0))


def test_trim_tail_cuts_silence_and_fades() -> None:
    sr = 1_000
    audio = np.zeros(3 * sr, dtype=np.float32)
    audio[:sr] = 0.5
    trimmed = trim_tail(audio, sr)
    fade = round(tinysol_gm.FADE_SECONDS * sr)
    assert len(trimmed) == sr + fade
    assert trimmed[0] == 0.5 and trimmed[-1] == 0.0


def test_notes_the_font_cannot_sound_are_skipped(tmp_path: Path) -> None:
    # TimGM6mb's Alto Sax (GM 65) has no sample covering E4 (MIDI 64): silent output.
    sax = replace(BY_NAME["Alto Saxophone"], low=63, high=65)
    report = render_tinysol_gm(tmp_path / "sax", instruments=(sax,), sample_rate=8_000)
    assert report.skipped_silent == 3
    assert report.written == 6 == report.per_instrument["Alto Saxophone"]
    names = {p.name for p in report.data_home.rglob("*.wav")}
    assert len(names) == 6
    assert not any("-E4-" in n for n in names)
    assert not any(r["Pitch ID"] == "64" for r in read_rows(report.data_home))


def test_noteon_refused_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    refused = pitch_name(VIOLIN.low)

    class RefusingSynth(tinysoundfont.Synth):
        def noteon(self, chan: int, key: int, velocity: int) -> bool:
            if key == VIOLIN.low:
                return False
            return super().noteon(chan, key, velocity)

    monkeypatch.setattr(tinysoundfont, "Synth", RefusingSynth)
    report = render_tinysol_gm(
        tmp_path / "vn",
        instruments=(VIOLIN,),
        max_notes_per_instrument=2,
        sample_rate=8_000,
    )
    assert (report.written, report.skipped_silent) == (3, 3)
    assert not any(f"-{refused}-" in p.name for p in report.data_home.rglob("*.wav"))


def test_instrument_with_no_audible_note_is_an_error(tmp_path: Path) -> None:
    sax_e4 = replace(BY_NAME["Alto Saxophone"], low=64, high=64)
    with pytest.raises(DownloadError, match="Alto Saxophone"):
        render_tinysol_gm(tmp_path / "none", instruments=(sax_e4,), sample_rate=8_000)
    assert not (tmp_path / "none").exists()
    assert list(tmp_path.iterdir()) == []  # the partial render is gone too


def test_second_call_reuses_a_complete_render(rendered: RenderReport) -> None:
    before = {p: p.stat().st_mtime_ns for p in rendered.data_home.rglob("*")}
    calls: list[tuple[int, int]] = []
    again = render_tinysol_gm(
        rendered.data_home,
        seed=0,
        max_notes_per_instrument=SMALL,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert again.reused is True
    assert (again.written, again.skipped_silent) == (
        rendered.written,
        rendered.skipped_silent,
    )
    assert again.per_instrument == rendered.per_instrument
    assert calls == []
    assert {p: p.stat().st_mtime_ns for p in rendered.data_home.rglob("*")} == before


def test_progress_reports_every_note(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    render_tinysol_gm(tmp_path / "p", progress=lambda d, t: calls.append((d, t)), **TINY)
    assert calls == [(1, 3), (2, 3), (3, 3)]


def test_refuses_a_foreign_folder_without_force(tmp_path: Path) -> None:
    home = tmp_path / "mine"
    home.mkdir()
    (home / "notes.txt").write_text("keep me")
    with pytest.raises(DownloadError, match=r"--force") as err:
        render_tinysol_gm(home, **TINY)
    assert str(home) in str(err.value) and "--data-home" in str(err.value)
    assert (home / "notes.txt").read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]

    report = render_tinysol_gm(home, force=True, **TINY)
    assert report.reused is False
    assert not (home / "notes.txt").exists()
    assert (home / MARKER_NAME).is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]


def test_provenance_columns_are_written_and_read(tmp_path: Path) -> None:
    """Every note names its preset and samples; Viola's samples are the Violin's in TimGM6mb,
    which the report and the result name; the reader gives each clip its source group."""
    from fslcli.datasets.tinysol import read_tinysol

    home = tmp_path / "gm"
    violin, viola = BY_NAME["Violin"], BY_NAME["Viola"]
    report = render_tinysol_gm(home, instruments=(violin, viola), max_notes_per_instrument=12, sample_rate=8_000)
    rows = read_rows(home)
    for row in rows:
        program = BY_NAME[row["Instrument (in full)"]].gm_program
        assert row["SoundFont Preset"].startswith(f"000:{program:03d} ")
        assert row["SoundFont Samples"] and all(
            re.fullmatch(r".+ \[\d+\]", s) for s in row["SoundFont Samples"].split("|")
        )
        assert row["Source Group"].startswith(BY_NAME[row["Instrument (in full)"]].abbr + "-")
    # One note's dynamics share a waveform (no velocity layers): one group; groups follow samples.
    by_note = {}
    for row in rows:
        by_note.setdefault((row["Instrument (in full)"], row["Pitch ID"]), set()).add(row["Source Group"])
    assert all(len(g) == 1 for g in by_note.values())
    samples_of = {}
    for row in rows:
        samples_of.setdefault((row["Instrument (in full)"], row["Source Group"]), set()).update(
            row["SoundFont Samples"].split("|")
        )
    for (inst, g), samples in samples_of.items():
        others = [s for (i, h), s in samples_of.items() if i == inst and h != g]
        assert all(not samples & o for o in others)

    assert [(p.first, p.second) for p in report.shared] == [("Violin", "Viola")]
    saved = json.loads((home / "render_report.json").read_text())
    assert saved["shared"][0]["instruments"] == ["Violin", "Viola"] and saved["shared"][0]["roles"] == ["train", "test"]
    assert saved["instruments"]["Viola"]["source_groups"] == len(
        {r["Source Group"] for r in rows if r["Instrument (abbr.)"] == "Va"}
    )

    read = read_tinysol(home)
    assert read.notices == ()
    groups = {c.path.name: c.group for c in read.clips}
    assert all(groups[Path(r["Path"]).name] == r["Source Group"] for r in rows)


def test_a_render_without_provenance_falls_back_to_notes(tmp_path: Path) -> None:
    from fslcli.datasets.tinysol import read_tinysol

    home = tmp_path / "gm"
    render_tinysol_gm(home, instruments=(VIOLIN,), max_notes_per_instrument=3, sample_rate=8_000)
    csv_path = home / "annotation" / "TinySOL_metadata.csv"
    with open(csv_path, newline="") as f:
        old = [row[: len(METADATA_COLUMNS)] for row in csv.reader(f)]
    with open(csv_path, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(old)
    read = read_tinysol(home)
    assert len(read.notices) == 1 and "fsl download tinysol-gm --data-home" in read.notices[0]
    assert {c.group for c in read.clips} == {f"Violin/{c.pitch_id}" for c in read.clips}
    assert len({c.group for c in read.clips}) == 3


def test_an_older_renderers_output_is_replaced_without_force(tmp_path: Path) -> None:
    home = tmp_path / "gm"
    render_tinysol_gm(home, **TINY)
    marker = json.loads((home / MARKER_NAME).read_text())
    marker["settings"]["renderer_version"] = tinysol_gm.RENDERER_VERSION - 1
    (home / MARKER_NAME).write_text(json.dumps(marker))
    report = render_tinysol_gm(home, **TINY)
    assert not report.reused
    assert json.loads((home / MARKER_NAME).read_text())["settings"]["renderer_version"] == tinysol_gm.RENDERER_VERSION


def test_refuses_a_render_with_other_settings_without_force(tmp_path: Path) -> None:
    home = tmp_path / "gm"
    render_tinysol_gm(home, seed=0, **TINY)
    with pytest.raises(DownloadError, match="different settings"):
        render_tinysol_gm(home, seed=1, **TINY)
    assert json.loads((home / MARKER_NAME).read_text())["settings"]["seed"] == 0
    render_tinysol_gm(home, seed=1, force=True, **TINY)
    assert json.loads((home / MARKER_NAME).read_text())["settings"]["seed"] == 1


def test_an_empty_existing_folder_is_used(tmp_path: Path) -> None:
    home = tmp_path / "empty"
    home.mkdir()
    assert render_tinysol_gm(home, **TINY).written == 3


def test_leftover_partial_is_removed_and_never_trusted(tmp_path: Path) -> None:
    home = tmp_path / "gm"
    # An interrupted render that even got as far as its marker: still not trusted.
    render_tinysol_gm(tmp_path / "donor", **TINY)
    leftover = tmp_path / "gm.partial-dead01"
    (tmp_path / "donor").rename(leftover)
    (leftover / "audio" / "junk.wav").write_bytes(b"not audio")
    report = render_tinysol_gm(home, **TINY)
    assert report.reused is False
    assert not leftover.exists()
    assert not (home / "audio" / "junk.wav").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gm"]


def test_interrupted_render_leaves_nothing_behind(tmp_path: Path) -> None:
    home = tmp_path / "gm"

    def interrupt(done: int, total: int) -> None:
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        render_tinysol_gm(home, progress=interrupt, **TINY)
    assert list(tmp_path.iterdir()) == []
    assert render_tinysol_gm(home, **TINY).reused is False


def test_missing_soundfont_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.sf2"
    with pytest.raises(DownloadError, match=re.escape(str(missing))):
        render_tinysol_gm(tmp_path / "gm", soundfont=missing, **TINY)
    assert not (tmp_path / "gm").exists()


def test_unreadable_soundfont_is_named(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.sf2"
    garbage.write_bytes(b"RIFF not a soundfont" * 10)
    with pytest.raises(DownloadError, match=re.escape(str(garbage))):
        render_tinysol_gm(tmp_path / "gm", soundfont=garbage, **TINY)
    with pytest.raises(DownloadError, match="not a file"):
        render_tinysol_gm(tmp_path / "gm", soundfont=tmp_path, **TINY)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["garbage.sf2"]


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"seed": -1}, "seed -1"),
        ({"seed": 1.5}, "seed 1.5"),
        ({"max_notes_per_instrument": 0}, "max_notes_per_instrument 0"),
        ({"sample_rate": 0}, "sample_rate 0"),
        ({"instruments": ()}, "no instruments"),
    ],
)
def test_bad_arguments_are_named(tmp_path: Path, kwargs: dict, fragment: str) -> None:
    args = {**TINY, **kwargs}
    with pytest.raises(DownloadError, match=re.escape(fragment)):
        render_tinysol_gm(tmp_path / "gm", **args)


def test_default_soundfont_is_the_pretty_midi_font() -> None:
    path = default_soundfont()
    assert path.name == "TimGM6mb.sf2" and path.is_file()
