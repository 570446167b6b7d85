"""Few-shot sound event detection: merging, streaming, event tables, ``fsl detect``."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import SR, make_tiny_net, synth_tone
from typer.testing import CliRunner

from fslcli.cli import app
from fslcli.config import DetectConfig
from fslcli.detection import (
    Event,
    Scan,
    Timeline,
    median_smooth,
    merge_events,
    snap_onsets,
    timeline_events,
    window_probabilities,
)
from fslcli.embedding import cut, embed_windows
from fslcli.errors import DataError, OutputError
from fslcli.event_tables import (
    RAVEN_COLUMNS,
    audacity_labels,
    output_format,
    raven_table,
    read_examples,
    write_events,
)
from fslcli.streaming import FrameEnergy, WindowEmbedder, n_windows, read_blocks, read_segment

REC = Path("rec.wav")


def flat(text: str) -> str:
    return " ".join(text.split())


# --- smoothing and merging on known score sequences --------------------------------------------


def test_median_smooth_removes_spikes_and_fills_gaps() -> None:
    x = np.array([0, 0, 1, 0, 0, 1, 1, 0, 1, 1, 0, 0], dtype=np.float32)[:, None]
    y = median_smooth(x, 3)[:, 0]
    # The lone window (2) is dropped, the one-window gap (7) filled, the edges repeat.
    assert y.tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0]
    assert median_smooth(x, 1).tolist() == x.tolist()
    assert median_smooth(x, 4).shape == x.shape  # an even size is made odd
    rng = np.random.default_rng(0)
    long = rng.random((1000, 3)).astype(np.float32)
    np.testing.assert_array_equal(median_smooth(long, 9, rows=64), median_smooth(long, 9))  # chunked alike


def test_threshold_and_contiguous_windows_make_one_event_in_seconds() -> None:
    # hop 0.25 s, 1-s windows: window k covers k/4 .. k/4 + 1 and speaks for its centre's hop.
    p = np.array([0.1, 0.2, 0.6, 0.9, 0.7, 0.5, 0.2, 0.1, 0.1, 0.1], dtype=np.float32)[:, None]
    (e,) = merge_events(p, ["Oboe"], path=REC, hop=0.25, window=1.0, duration=3.25, threshold=0.5, min_duration=0.0)
    # Windows 2..5: from window 2's centre (1.0 s) minus half a hop to window 5's centre (1.75 s) plus half a hop.
    assert (e.onset, e.offset, e.label) == (0.875, 1.875, "Oboe")
    assert e.score == pytest.approx(np.mean([0.6, 0.9, 0.7, 0.5]), abs=1e-4)
    assert e.path == REC


def test_min_duration_drops_short_runs_and_edges_reach_the_ends() -> None:
    p = np.zeros((12, 2), dtype=np.float32)
    p[0:3, 0] = 0.9  # at the start: from 0 s
    p[6, 0] = 0.9  # one window: 0.25 s long
    p[9:12, 1] = 0.8  # at the end: to the recording's end
    events = merge_events(p, ["A", "B"], path=REC, hop=0.25, window=1.0, duration=3.9, threshold=0.5, min_duration=0.3)
    assert [(e.label, e.onset, e.offset) for e in events] == [("A", 0.0, 1.125), ("B", 2.625, 3.9)]
    kept = merge_events(p, ["A", "B"], path=REC, hop=0.25, window=1.0, duration=3.9, threshold=0.5, min_duration=0.0)
    assert ("A", 1.875, 2.125) in [(e.label, e.onset, e.offset) for e in kept]


def test_threshold_is_inclusive_and_classes_overlap() -> None:
    p = np.array([[0.5, 0.0], [0.5, 0.6], [0.0, 0.6]], dtype=np.float32)
    events = merge_events(p, ["A", "B"], path=REC, hop=0.5, window=1.0, duration=2.0, threshold=0.5, min_duration=0)
    assert [(e.label, e.onset, e.offset) for e in events] == [("A", 0.0, 1.25), ("B", 0.75, 2.0)]


def test_snap_moves_an_onset_to_the_energy_rise_and_keeps_it_after_the_previous_event() -> None:
    frame = 0.016
    energy = np.full(500, -60.0, dtype=np.float32)
    energy[200:300] = -20.0  # a sound from frame 200 (3.2 s)
    energy[400:450] = -25.0  # another from frame 400 (6.4 s)
    events = [Event(REC, 3.5, 4.8, "A", 0.9), Event(REC, 6.0, 7.0, "A", 0.8), Event(REC, 1.0, 2.0, "B", 0.7)]
    snapped = snap_onsets(events, energy, frame, radius=0.75)
    assert [(e.label, e.onset) for e in snapped] == [("B", 1.0), ("A", 3.2), ("A", 6.4)]  # B has no rise nearby
    # Too far away, or leaving less than min_duration: unchanged or dropped.
    assert snap_onsets(events, energy, frame, radius=0.1)[1].onset == 3.5
    short = snap_onsets([Event(REC, 2.7, 3.3, "A", 0.9)], energy, frame, radius=0.75, min_duration=0.2)
    assert short == []  # the onset moved to 3.2 s, leaving 0.1 s


def _scan(logits: np.ndarray, annotated: np.ndarray | None = None) -> Scan:
    n = len(logits)
    return Scan(
        path=REC,
        duration=(n - 1) * 0.25 + 1.0,
        hop=4000,
        window=16000,
        sample_rate=16000,
        logits=logits.astype(np.float32),
        annotated=np.zeros(n, dtype=bool) if annotated is None else annotated,
        energy=np.zeros(0, np.float32),
        energy_frame=256,
    )


def test_window_probabilities_find_separable_events() -> None:
    """Windows near class A's or B's prototype in known places, the rest far from both (as a
    recording's windows are from examples recorded elsewhere): standardised against the
    recording's background, each class's events come out where they are, and nothing else."""
    n = 400
    rng = np.random.default_rng(0)
    logits = -2.0 + 0.05 * rng.standard_normal((n, 2))  # every window far from both prototypes
    truth = {"A": [(100, 140), (250, 300)], "B": [(180, 220)]}
    for label, runs in truth.items():
        for a, b in runs:
            logits[a:b, 0 if label == "A" else 1] = -1.0 + 0.05 * rng.standard_normal(b - a)
    settings = DetectConfig()
    probs = window_probabilities(_scan(logits), settings)
    assert probs.shape == (n, 2) and np.all((probs >= 0) & (probs <= 1))
    tl = Timeline(REC, (n - 1) * 0.25 + 1.0, 0.25, 1.0, median_smooth(probs, 7))
    events = timeline_events(tl, ["A", "B"], settings)
    expected = sorted((a, b, label) for label, runs in truth.items() for a, b in runs)
    assert [e.label for e in events] == [label for _, _, label in expected]
    for e, (a, b, _) in zip(events, expected, strict=True):
        # Run a..b-1 spans a's centre minus half a hop to (b-1)'s centre plus half a hop.
        assert e.onset == pytest.approx(a * 0.25 + 0.5 - 0.125, abs=0.3)
        assert e.offset == pytest.approx((b - 1) * 0.25 + 0.5 + 0.125, abs=0.3)


def test_annotated_windows_stay_out_of_the_background() -> None:
    """Windows of annotated examples are strongly A; kept in the background they would raise its
    mean and spread for A, and the weaker A windows elsewhere would no longer stand out."""
    n = 200
    rng = np.random.default_rng(1)
    logits = -2.0 + 0.05 * rng.standard_normal((n, 2))
    logits[:60, 0] = -0.5  # the annotated examples
    logits[120:140] = (-1.2, -2.2)  # A elsewhere, weaker
    annotated = np.zeros(n, dtype=bool)
    annotated[:60] = True
    settings = DetectConfig(background_share=0.9)
    with_examples = window_probabilities(_scan(logits, annotated), settings)[120:140, 0]
    without = window_probabilities(_scan(logits), settings)[120:140, 0]
    assert with_examples.min() > 0.9 > without.max()


# --- streaming ------------------------------------------------------------------------------------------------


def _recording(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    notes = [synth_tone(rng, t, 0.7) for t in ["Bright", "Dark", "Odd", "Noisy"] * int(seconds // 2.8 + 1)]
    x = np.concatenate(notes)[: int(seconds * SR)]
    return (x + 0.01 * rng.standard_normal(len(x))).astype(np.float32)


def _stream(embedder, audio: np.ndarray, block: int) -> torch.Tensor:
    out = []
    for s in range(0, len(audio), block):
        out += embedder.feed(audio[s : s + block])
    out += embedder.close()
    return torch.cat(out)


def test_window_embedder_embeds_each_window_as_embed_windows_does() -> None:
    net = make_tiny_net()
    audio = _recording(3.0)
    got = _stream(WindowEmbedder(net, hop=1000, batch=7), audio, block=2222)
    excerpt = net.audio.excerpt_samples
    starts = list(range(0, len(audio) - excerpt + 1, 1000))
    wins = cut(audio, starts, excerpt)
    torch.testing.assert_close(got, embed_windows(net, wins, np.arange(len(starts)), len(starts)))


@pytest.mark.parametrize(("hop", "expected"), [(None, 4000), (0.25, 4000), (0.1, 1600), (0.5, 8000), (0.0001, 2)])
def test_hop_defaults_to_a_quarter_excerpt(hop: float | None, expected: int) -> None:
    from fslcli.detection import hop_samples

    assert hop_samples(make_tiny_net(excerpt_seconds=1.0), hop) == expected


def test_window_embedder_memory_does_not_grow_with_the_recording() -> None:
    embedder = WindowEmbedder(make_tiny_net(), hop=1000, batch=16)
    longest = 0
    for _ in range(200):  # 100 s in half-second blocks
        embedder.feed(np.zeros(SR // 2, dtype=np.float32))
        longest = max(longest, len(embedder._buf))
    # About one batch of windows plus a block, never the recording.
    assert longest < 16 * 1000 + SR


def test_read_blocks_resamples_as_a_stream(tmp_path: Path) -> None:
    import soxr

    rng = np.random.default_rng(0)
    x = (0.3 * rng.standard_normal(44_100 * 3)).astype(np.float32)
    stereo = np.stack([x, x], axis=1)
    path = tmp_path / "a.flac"
    sf.write(path, stereo, 44_100, subtype="PCM_24")
    blocks = list(read_blocks(path, SR, block_seconds=0.37))
    assert len(blocks) > 5
    got = np.concatenate(blocks)
    whole = soxr.resample(sf.read(path, dtype="float32")[0].mean(axis=1), 44_100, SR)
    assert abs(len(got) - len(whole)) <= 2
    m = min(len(got), len(whole))
    assert np.abs(got[:m] - whole[:m]).max() < 0.02
    seg = read_segment(path, SR, 1.0, 1.5)
    assert abs(len(seg) - SR // 2) <= 2


def test_frame_energy_in_decibels() -> None:
    fe = FrameEnergy(256)
    fe.feed(np.full(300, 0.1, np.float32))
    fe.feed(np.full(300, 0.1, np.float32))
    np.testing.assert_allclose(fe.result(), [-20.0, -20.0], atol=1e-3)


# --- event tables ----------------------------------------------------------------------------------

EVENTS = [
    Event(Path("/data/r1.wav"), 0.5, 1.75, "Oboe", 0.91),
    Event(Path("/data/r1.wav"), 2.0, 3.125, "Bass\tTuba", 0.5),
]


def test_csv_reads_back_with_dictreader(tmp_path: Path) -> None:
    path = write_events(tmp_path / "ev.csv", EVENTS, n_recordings=1, low_hz=0, high_hz=8000)
    rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    assert [r["label"] for r in rows] == ["Oboe", "Bass\tTuba"]
    assert rows[0] == {"path": "/data/r1.wav", "onset": "0.500", "offset": "1.750", "label": "Oboe", "score": "0.9100"}


def test_audacity_label_track(tmp_path: Path) -> None:
    path = write_events(tmp_path / "labels.txt", EVENTS, n_recordings=1, low_hz=0, high_hz=8000)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines == audacity_labels(EVENTS).splitlines()
    parsed = [line.split("\t") for line in lines]
    assert all(len(p) == 3 for p in parsed)  # a tab in a label cannot add a field
    assert [(float(a), float(b), c) for a, b, c in parsed] == [(0.5, 1.75, "Oboe"), (2.0, 3.125, "Bass Tuba")]


def test_raven_selection_table(tmp_path: Path) -> None:
    path = write_events(tmp_path / "r1.selections.txt", EVENTS, n_recordings=1, low_hz=0, high_hz=8000)
    text = path.read_text(encoding="utf-8")
    assert text == raven_table(EVENTS, 0, 8000)
    rows = list(csv.DictReader(io.StringIO(text), delimiter="\t"))
    assert list(rows[0]) == list(RAVEN_COLUMNS)
    assert text.splitlines()[0].startswith(
        "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)"
    )
    assert [r["Selection"] for r in rows] == ["1", "2"]
    assert rows[1]["View"] == "Spectrogram 1" and rows[1]["Channel"] == "1"
    assert float(rows[1]["Begin Time (s)"]) == 2.0 and float(rows[1]["End Time (s)"]) == 3.125
    assert float(rows[1]["High Freq (Hz)"]) == 8000.0 and rows[1]["Label"] == "Bass Tuba"


def test_output_format_is_checked_before_any_work(tmp_path: Path) -> None:
    assert output_format(tmp_path / "a.CSV", 3) == "csv"
    assert output_format(tmp_path / "a.selections.txt", 1) == "raven"
    with pytest.raises(OutputError, match=r"unknown format \.json.*\.csv, \.txt"):
        output_format(tmp_path / "a.json", 1)
    with pytest.raises(OutputError, match="describes one recording and 2 were given"):
        output_format(tmp_path / "a.txt", 2)


def _wav(path: Path, seconds: float, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, _recording(seconds, seed), SR, subtype="PCM_16")
    return path


def _examples(path: Path, rows: list[str]) -> Path:
    path.write_text("path,start,end,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_examples_are_read_relative_to_their_file(tmp_path: Path) -> None:
    _wav(tmp_path / "rec.wav", 10.0)
    ex = read_examples(_examples(tmp_path / "ex.csv", ["rec.wav,1.0,2.0,Oboe", "rec.wav,4,5.5,Horn"]))
    assert [(e.path, e.start, e.end, e.label, e.line) for e in ex] == [
        (tmp_path / "rec.wav", 1.0, 2.0, "Oboe", 2),
        (tmp_path / "rec.wav", 4.0, 5.5, "Horn", 3),
    ]


def test_examples_outside_their_recording_or_overlapping_are_refused_by_line(tmp_path: Path) -> None:
    _wav(tmp_path / "rec.wav", 10.0)
    rows = [
        "rec.wav,1.0,2.0,Oboe",  # line 2: fine
        "rec.wav,9.5,12.0,Oboe",  # line 3: past the end
        "rec.wav,1.2,2.2,Oboe",  # line 4: overlaps line 2 by 0.8 s
        "rec.wav,5,4,Oboe",  # line 5: not a span
        "missing.wav,1,2,Oboe",  # line 6: no such recording
        "rec.wav,x,2,Oboe",  # line 7: not a number
    ]
    with pytest.raises(DataError) as info:
        read_examples(_examples(tmp_path / "ex.csv", rows))
    msg = str(info.value)
    assert "\n" not in msg
    assert "line 3: 9.5 s to 12 s lies outside rec.wav (10.00 s long)" in msg
    assert "line 5:" in msg and "line 6: missing.wav" in msg and "line 7:" in msg
    assert "lines 2 and 4 overlap by 0.80 s" in msg and msg.endswith("fix or remove those rows")
    many = [f"rec.wav,{20 + k},{21 + k},Oboe" for k in range(8)]
    with pytest.raises(DataError, match=r"\(and 3 more\); fix or remove those rows"):
        read_examples(_examples(tmp_path / "many.csv", many))
    with pytest.raises(DataError, match="lines 2 and 3 overlap by 0.80 s"):
        read_examples(_examples(tmp_path / "ex2.csv", ["rec.wav,1.0,2.0,Oboe", "rec.wav,1.2,2.2,Horn"]))
    # A small overlap is fine.
    assert len(read_examples(_examples(tmp_path / "ok.csv", ["rec.wav,1.0,2.0,A", "rec.wav,1.9,3.0,B"]))) == 2


def test_examples_need_the_four_columns(tmp_path: Path) -> None:
    (tmp_path / "ex.csv").write_text("file,start,end,label\nrec.wav,1,2,A\n", encoding="utf-8")
    with pytest.raises(DataError, match="no column path"):
        read_examples(tmp_path / "ex.csv")


# --- the timeline figure ---------------------------------------------------------------------------


def test_timeline_figure_draws_events_by_class(tmp_path: Path) -> None:
    from fslcli.plotting import timeline_figure, write_figure

    spec = np.random.default_rng(0).standard_normal((8, 40)).astype(np.float32)
    tl = Timeline(Path("/data/r1.wav"), 4.0, 0.128, 1.0, np.zeros((24, 2)), spec, 0.1)
    fig = timeline_figure([tl], EVENTS, ["Oboe", "Bass\tTuba"], np.geomspace(100, 8000, 8))
    bars = [t for t in fig.data if t.type == "bar"]
    assert [t.meta["class"] for t in bars] == ["Oboe", "Bass\tTuba"]
    assert [list(row) for row in bars[0].customdata] == [[0.5, 1.75, 0.91]]
    assert list(bars[0].base) == [0.5] and list(bars[0].x) == [1.25]
    assert [t.type for t in fig.data].count("heatmap") == 1
    (rows,) = [t for t in fig.data if t.type == "scatter"]
    assert list(rows.y) == ["Oboe", "Bass\tTuba"]  # every class has its row, with or without events
    html = write_figure(fig, tmp_path / "t.html").read_text(encoding="utf-8")
    assert re.findall(r"<script[^>]*\bsrc=", html) == [] and "Plotly.newPlot" in html  # plotly.js inlined


# --- fsl detect ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def detect_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 12-s recording of "Bright" and "Dark" tones at known times over faint noise, support
    folders of each, a short file and a damaged one."""
    root = tmp_path_factory.mktemp("detect")
    rng = np.random.default_rng(7)
    audio = (0.002 * rng.standard_normal(12 * SR)).astype(np.float32)
    truth = [(1.0, "Bright"), (4.0, "Dark"), (7.0, "Bright"), (9.5, "Dark")]
    for t, name in truth:
        note = synth_tone(rng, name, 1.5)
        audio[int(t * SR) : int(t * SR) + len(note)] += note
    sf.write(root / "rec.wav", audio, SR, subtype="PCM_16")
    for name in ("Bright", "Dark"):
        for k in range(3):
            (root / "support" / name).mkdir(parents=True, exist_ok=True)
            sf.write(root / "support" / name / f"{k}.wav", synth_tone(rng, name, 1.0), SR, subtype="PCM_16")
    sf.write(root / "short.wav", synth_tone(rng, "Dark", 0.4), SR)
    (root / "broken.wav").write_bytes(b"RIFF\x00\x00garbage" * 10)
    return {"root": root, "rec": root / "rec.wav", "support": root / "support", "truth": truth}


def test_detect_end_to_end(trained_model: Path, detect_data: dict, tmp_path: Path) -> None:
    out = tmp_path / "events.csv"
    plot = tmp_path / "timeline.html"
    args = [
        "detect",
        str(trained_model),
        str(detect_data["rec"]),
        str(detect_data["root"] / "broken.wav"),
        "--support",
        str(detect_data["support"]),
        "--out",
        str(out),
        "--plot",
        str(plot),
        "--threshold",
        "0.4",
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "skipped" in res.output and "broken.wav" in res.output and "1 file(s) skipped" in flat(res.output)
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    duration = 12.0
    for r in rows:
        assert Path(r["path"]) == detect_data["rec"]
        assert r["label"] in ("Bright", "Dark")
        assert 0.0 <= float(r["onset"]) < float(r["offset"]) <= duration
        assert float(r["offset"]) - float(r["onset"]) >= DetectConfig().min_duration - 1e-6
        assert 0.0 <= float(r["score"]) <= 1.0
    html = plot.read_text(encoding="utf-8")
    assert re.findall(r"<script[^>]*\bsrc=", html) == [] and "Plotly.newPlot" in html

    res = CliRunner().invoke(app, [*args[:3], "--support", str(detect_data["support"]), "--threshold", "0.4", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["classes"] == ["Bright", "Dark"] and summary["shots"] == {"Bright": 3, "Dark": 3}
    (rec,) = summary["recordings"]
    assert rec["duration"] == pytest.approx(duration, abs=0.01)
    assert summary["settings"]["hop"] == pytest.approx(0.25)
    assert rec["windows"] == n_windows(12 * SR, SR, 4000)
    assert [(e["onset"], e["offset"], e["label"]) for e in summary["events"]] == [
        (float(r["onset"]), float(r["offset"]), r["label"]) for r in rows
    ]


def test_detect_with_examples_inside_the_recording(trained_model: Path, detect_data: dict, tmp_path: Path) -> None:
    ex = _examples(
        tmp_path / "ex.csv",
        [f"{detect_data['rec']},1.0,2.5,Bright", f"{detect_data['rec']},4.0,5.5,Dark"],
    )
    out = tmp_path / "rec.selections.txt"
    res = CliRunner().invoke(app, ["detect", str(trained_model), "--examples", str(ex), "--out", str(out)])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8")), delimiter="\t"))
    assert all(r["Label"] in ("Bright", "Dark") and float(r["Begin Time (s)"]) >= 0 for r in rows)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--out", "{tmp}/events.json"], "unknown format .json"),
        (["--threshold", "1.5"], "--threshold 1.5: use a probability between 0 and 1"),
        (["--hop", "0.75"], "--hop 0.75: use more than 0 and at most half"),
    ],
)
def test_detect_refuses_bad_options_before_writing(
    trained_model: Path, detect_data: dict, tmp_path: Path, extra: list[str], message: str
) -> None:
    extra = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    res = CliRunner().invoke(
        app, ["detect", str(trained_model), str(detect_data["rec"]), "--support", str(detect_data["support"]), *extra]
    )
    assert res.exit_code == 1 and message in flat(res.output)
    assert not list(tmp_path.iterdir())


def test_detect_one_line_errors(trained_model: Path, detect_data: dict, tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["detect", str(trained_model)]
    # Only a recording shorter than one window: one line, nothing written.
    out = tmp_path / "e.csv"
    res = runner.invoke(
        app,
        [*base, str(detect_data["root"] / "short.wav"), "--support", str(detect_data["support"]), "--out", str(out)],
    )
    assert res.exit_code == 1, res.output
    assert "shorter than one window (0.40 s; the model's windows are 1 s)" in flat(res.output)
    assert not out.exists()
    # A support class without a usable example.
    bad = tmp_path / "support"
    (bad / "Bright").mkdir(parents=True)
    (bad / "Dark").mkdir()
    sf.write(bad / "Bright" / "a.wav", synth_tone(np.random.default_rng(0), "Bright", 1.0), SR)
    (bad / "Dark" / "b.wav").write_bytes(b"not audio at all" * 4)
    res = runner.invoke(app, [*base, str(detect_data["rec"]), "--support", str(bad)])
    assert res.exit_code == 1
    (line,) = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert "class 'Dark' has no usable example (not decodable as audio" in line
    # Both or neither of --support and --examples.
    res = runner.invoke(app, [*base, str(detect_data["rec"])])
    assert res.exit_code == 1 and "not neither" in flat(res.output)
    # No recording and no --examples to name them: the usage shown is detect's own.
    res = runner.invoke(app, [*base, "--support", str(detect_data["support"])])
    assert res.exit_code == 1
    assert "give audio files or folders after MODEL, e.g. fsl detect --support examples/ recording.wav" in flat(
        res.output
    )
    # An examples file pointing outside its recording names the row.
    ex = _examples(tmp_path / "ex.csv", [f"{detect_data['rec']},11.5,13.0,Bright"])
    res = runner.invoke(app, [*base, "--examples", str(ex)])
    assert res.exit_code == 1 and "line 2: 11.5 s to 13 s lies outside" in flat(res.output)


def test_detect_with_the_tutorial_backbone_skips_short_recordings(tmp_path: Path, detect_data: dict) -> None:
    """Any backbone detects (the tutorial's GroupNorm too), a window every quarter excerpt."""
    from fslcli.detection import detect, support_from_folder

    net = make_tiny_net(excerpt_seconds=1.0, backbone="tutorial")
    support = support_from_folder(net, detect_data["support"])
    res = detect(net, [detect_data["rec"], detect_data["root"] / "short.wav"], support)
    assert res.hop == 0.25
    (tl,) = res.timelines
    assert tl.probabilities.shape == (n_windows(12 * SR, SR, 4000), 2)
    assert [p.name for p, _ in res.skipped] == ["short.wav"]
    assert all(0 <= e.onset < e.offset <= 12.0 for e in res.events)
