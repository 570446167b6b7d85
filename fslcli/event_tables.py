"""Event tables on disk: the examples ``fsl detect`` reads, the events it writes.

Written formats, chosen by the file name's suffix (times in seconds from the recording's start):

* ``.csv``: columns ``path, onset, offset, label, score`` (one row per event, any recordings);
* ``.txt``: an Audacity label track, ``onset<TAB>offset<TAB>label`` per line (one recording);
* ``.selections.txt``: a Raven Pro selection table, tab-separated, with Raven's columns
  ``Selection, View, Channel, Begin Time (s), End Time (s), Low Freq (Hz), High Freq (Hz)``
  and then ``Label`` and ``Score`` (one recording).

Every file is written whole or not at all (:func:`fslcli.atomic.atomic_write`).

The examples file (``--examples``) is a CSV with a header and the columns ``path, start, end,
label``: each row marks one example event inside a recording (a relative path is read from the
CSV's folder). Rows that point outside their recording, or overlap another example of the same
recording by more than half the shorter one, are refused, naming their lines.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from fslcli.atomic import atomic_write
from fslcli.detection import Event, ExampleEvent
from fslcli.errors import DataError, OutputError
from fslcli.features import DecodeError

#: Written formats by suffix (the longer suffix first: a selection table also ends in .txt).
FORMATS: dict[str, str] = {".selections.txt": "raven", ".csv": "csv", ".txt": "audacity"}
#: Formats that describe a single recording.
ONE_RECORDING = ("audacity", "raven")
CSV_COLUMNS = ("path", "onset", "offset", "label", "score")
RAVEN_COLUMNS = (
    "Selection",
    "View",
    "Channel",
    "Begin Time (s)",
    "End Time (s)",
    "Low Freq (Hz)",
    "High Freq (Hz)",
    "Label",
    "Score",
)
EXAMPLE_COLUMNS = ("path", "start", "end", "label")
#: Problems named in one error message.
MAX_NAMED = 5


def output_format(path: Path, n_recordings: int) -> str:
    """The format ``--out path`` asks for, checked before anything runs: "csv", "audacity" or
    "raven". Raises :class:`OutputError` for another suffix, or a one-recording format asked
    for several recordings."""
    name = Path(path).name.lower()
    fmt = next((f for suffix, f in FORMATS.items() if name.endswith(suffix)), None)
    if fmt is None:
        raise OutputError(
            f"--out {path}: unknown format {Path(path).suffix or '(none)'}; use .csv, .txt (an Audacity label "
            "track) or .selections.txt (a Raven selection table)"
        )
    if fmt in ONE_RECORDING and n_recordings > 1:
        kind = "an Audacity label track" if fmt == "audacity" else "a Raven selection table"
        raise OutputError(
            f"--out {path}: {kind} describes one recording and {n_recordings} were given; "
            "detect one recording at a time, or write .csv"
        )
    return fmt


def events_csv(events: Sequence[Event]) -> str:
    """The CSV text: a header, then one row per event."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_COLUMNS)
    for e in events:
        w.writerow([str(e.path), f"{e.onset:.3f}", f"{e.offset:.3f}", e.label, f"{e.score:.4f}"])
    return buf.getvalue()


def audacity_labels(events: Sequence[Event]) -> str:
    """An Audacity label track: ``onset<TAB>offset<TAB>label`` lines (File > Import > Labels)."""
    return "".join(f"{e.onset:.6f}\t{e.offset:.6f}\t{_one_field(e.label)}\n" for e in events)


def raven_table(events: Sequence[Event], low_hz: float, high_hz: float) -> str:
    """A Raven Pro selection table (File > Open Selection Table): selections numbered from 1 on
    the first spectrogram view and channel, each spanning ``low_hz`` to ``high_hz``."""
    lines = ["\t".join(RAVEN_COLUMNS)]
    for k, e in enumerate(events, start=1):
        row = [str(k), "Spectrogram 1", "1", f"{e.onset:.6f}", f"{e.offset:.6f}", f"{low_hz:.1f}", f"{high_hz:.1f}"]
        lines.append("\t".join([*row, _one_field(e.label), f"{e.score:.4f}"]))
    return "\n".join(lines) + "\n"


def _one_field(text: str) -> str:
    """A label that cannot break a tab-separated line."""
    return " ".join(text.replace("\t", " ").split())


def write_events(path: Path, events: Sequence[Event], *, n_recordings: int, low_hz: float, high_hz: float) -> Path:
    """Write ``events`` to ``path`` in the format its suffix names (:func:`output_format`), atomically."""
    fmt = output_format(path, n_recordings)
    if fmt == "csv":
        text = events_csv(events)
    elif fmt == "audacity":
        text = audacity_labels(events)
    else:
        text = raven_table(events, low_hz, high_hz)
    return atomic_write(Path(path), lambda f: f.write(text.encode("utf-8")))


# --- examples ------------------------------------------------------------------------------


def read_examples(path: Path, *, min_overlap_share: float = 0.5) -> list[ExampleEvent]:
    """The example events of an ``--examples`` CSV, checked against their recordings.

    Raises :class:`DataError` naming up to :data:`MAX_NAMED` bad lines: a missing column, a
    time that is not a number, an end not after its start, a recording that cannot be read,
    an example beyond its recording's end, two examples of one recording overlapping by more
    than ``min_overlap_share`` of the shorter one.
    """
    from fslcli.streaming import audio_info

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise DataError(f"--examples {path}: cannot read it ({exc.strerror or exc}); give a CSV file") from None
    reader = csv.DictReader(io.StringIO(text))
    columns = {c.strip().lower(): c for c in (reader.fieldnames or [])}
    missing = [c for c in EXAMPLE_COLUMNS if c not in columns]
    if missing:
        raise DataError(
            f"--examples {path}: no column {', '.join(missing)}; the header must name {', '.join(EXAMPLE_COLUMNS)}"
        )
    problems: list[str] = []
    examples: list[ExampleEvent] = []
    lengths: dict[Path, float | str] = {}
    for row in reader:
        line = reader.line_num
        get = {c: (row.get(columns[c]) or "").strip() for c in EXAMPLE_COLUMNS}
        if not any(get.values()):
            continue
        try:
            start, end = float(get["start"]), float(get["end"])
        except ValueError:
            problems.append(f"line {line}: start {get['start']!r} and end {get['end']!r} must be seconds")
            continue
        if not get["label"]:
            problems.append(f"line {line}: no label")
            continue
        if not 0 <= start < end:
            problems.append(f"line {line}: {start:g} s to {end:g} s is not a span (0 <= start < end)")
            continue
        rec = Path(get["path"])
        rec = rec if rec.is_absolute() else path.parent / rec
        if rec not in lengths:
            try:
                lengths[rec] = audio_info(rec).seconds
            except DecodeError as exc:
                lengths[rec] = str(exc)
            except OSError as exc:
                lengths[rec] = f"cannot be read ({exc.strerror or exc})"
        length = lengths[rec]
        if isinstance(length, str):
            problems.append(f"line {line}: {get['path']} {length}")
            continue
        if end > length + 1e-3:
            problems.append(f"line {line}: {start:g} s to {end:g} s lies outside {get['path']} ({length:.2f} s long)")
            continue
        examples.append(ExampleEvent(rec, start, end, get["label"], line))
    by_recording: dict[Path, list[ExampleEvent]] = {}
    for ex in examples:
        by_recording.setdefault(ex.path, []).append(ex)
    for group in by_recording.values():
        group = sorted(group, key=lambda e: e.start)
        for i, a in enumerate(group):
            for b in group[i + 1 :]:
                if b.start >= a.end:
                    break
                overlap = min(a.end, b.end) - b.start
                if overlap > min_overlap_share * min(a.end - a.start, b.end - b.start):
                    problems.append(
                        f"lines {a.line} and {b.line} overlap by {overlap:.2f} s, more than half the shorter example"
                    )
    if problems:
        more = f" (and {len(problems) - MAX_NAMED} more)" if len(problems) > MAX_NAMED else ""
        raise DataError(f"--examples {path}: {'; '.join(problems[:MAX_NAMED])}{more}; fix or remove those rows")
    if not examples:
        raise DataError(f"--examples {path}: no example rows; add rows of {', '.join(EXAMPLE_COLUMNS)}")
    return examples
