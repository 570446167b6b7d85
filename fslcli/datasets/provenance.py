"""Where a rendered note comes from: the SoundFont samples that sound it, its source group,
and which instruments of a font play the same recordings.

A SoundFont instrument is a few recordings (samples) transposed across the keyboard, and one
preset may play another's samples (TimGM6mb's Viola plays its Violin's). Two rendered notes
that share a recording are not independent examples, so:

- a *source group* is one instrument's notes joined by shared recordings: the connected
  components of the graph whose edges are "these two notes sound a common sample";
- a *shared pair* is two instruments that sound a common recording. A test instrument that
  shares recordings with a training instrument is not unseen in that font.

Samples are compared as recordings: copies found by :func:`~fslcli.datasets.soundfont.duplicate_samples`
count as one sample.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The render's provenance report, inside its data home.
REPORT_NAME = "render_report.json"


@dataclass(frozen=True)
class SharedPair:
    """Two instruments of one font that sound common recordings (``samples``: labels of one copy each)."""

    first: str
    second: str
    samples: tuple[str, ...]

    def describe(self, roles: Mapping[str, str]) -> str:
        """``"Viola (test) and Violin (train) share 6 samples"``."""
        a, b = (f"{n} ({roles[n]})" if n in roles else n for n in (self.first, self.second))
        return f"{a} and {b} share {len(self.samples)} sample{'s' if len(self.samples) != 1 else ''}"


def source_groups(note_samples: Sequence[Sequence[int]]) -> list[int]:
    """One instrument's notes, each given by the recordings (canonical sample indices) that sound
    it -> each note's source group, numbered 0.. in order of first appearance.

    Notes that share a recording, directly or through other notes, are in one group.
    """
    parent = list(range(len(note_samples)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_note: dict[int, int] = {}
    for note, samples in enumerate(note_samples):
        for s in samples:
            other = first_note.setdefault(int(s), note)
            ra, rb = root(other), root(note)
            parent[max(ra, rb)] = min(ra, rb)
    numbers: dict[int, int] = {}
    return [numbers.setdefault(root(i), len(numbers)) for i in range(len(note_samples))]


def shared_pairs(recordings: Mapping[str, set[int]], label: Mapping[int, str]) -> list[SharedPair]:
    """Every pair of instruments whose recordings (canonical sample indices) overlap, in the
    order of ``recordings``; ``label`` names a sample for people."""
    names = list(recordings)
    pairs = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            common = recordings[a] & recordings[b]
            if common:
                pairs.append(SharedPair(a, b, tuple(label[s] for s in sorted(common))))
    return pairs


def write_report(path: Path, report: dict[str, Any]) -> None:
    path.write_text(json.dumps(report, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def read_shared_pairs(data_home: Path) -> tuple[str | None, list[SharedPair]] | None:
    """The font's sha256 and its shared pairs from a render's report, or None when the data home
    has no (readable) report: the real TinySOL, or a render made before reports existed."""
    try:
        report = json.loads((Path(data_home) / REPORT_NAME).read_text(encoding="utf-8"))
        pairs = [SharedPair(p["instruments"][0], p["instruments"][1], tuple(p["samples"])) for p in report["shared"]]
        return report.get("soundfont_sha256"), pairs
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


def leaks(pairs: Sequence[SharedPair], train: Sequence[str], test: Sequence[str]) -> list[SharedPair]:
    """The pairs that join a training class and a test class."""
    tr, te = set(train), set(test)
    return [p for p in pairs if (p.first in tr and p.second in te) or (p.first in te and p.second in tr)]
