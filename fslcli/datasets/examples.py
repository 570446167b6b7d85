"""A small example set to try ``fsl predict`` on, rendered by fsl itself (never downloaded).

TinySOL's five test instruments rendered from the General MIDI font that ships with
pretty_midi: ``support/<instrument>/`` holds a few notes of each (the examples a user would give)
and ``queries/<instrument>/`` other notes, from recordings (SoundFont samples) that none of its
support notes uses, so no query is a copy of an example. ``all/<instrument>/`` holds both, for
``fsl plot-episode --data-dir``.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fslcli.config import DEFAULT_TEST_CLASSES
from fslcli.errors import DownloadError

#: Notes rendered per instrument (evenly over its range, at pp, mf and ff) to draw the examples from.
NOTES_PER_INSTRUMENT = 12


@dataclass(frozen=True)
class ExamplesReport:
    home: Path
    classes: list[str]
    support: int
    queries: int


def render_examples(home: Path, *, per_class: int = 5, seed: int = 0, force: bool = False) -> ExamplesReport:
    """Render the example set into ``home`` (``support/``, ``queries/``, ``all/``), ``per_class``
    support and query files per instrument, chosen with ``seed``.

    Raises:
        DownloadError: ``home`` holds something else and ``force`` is False.
    """
    from fslcli.datasets.instruments import BY_NAME
    from fslcli.datasets.tinysol import read_tinysol
    from fslcli.datasets.tinysol_gm import render_tinysol_gm
    from fslcli.episodes import grouped_draw

    home = Path(home).expanduser()
    if home.exists() and any(home.iterdir()) and not force:
        raise DownloadError(f"{home} is not empty; pass --force to replace it, or choose another --data-home")
    instruments = tuple(BY_NAME[c] for c in DEFAULT_TEST_CLASSES)
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix="fsl-examples-") as tmp:
        render_tinysol_gm(
            Path(tmp) / "render", seed=seed, instruments=instruments, max_notes_per_instrument=NOTES_PER_INSTRUMENT
        )
        clips = read_tinysol(Path(tmp) / "render").clips
        staged = Path(tmp) / "examples"
        for label in DEFAULT_TEST_CLASSES:
            mine = [c for c in clips if c.label == label]
            groups = np.unique([c.group for c in mine], return_inverse=True)[1]
            support, queries = grouped_draw(groups, per_class, per_class, rng)
            for role, picks in (("support", support), ("queries", queries)):
                for k in picks:
                    for folder in (role, "all"):
                        target = staged / folder / label / mine[int(k)].path.name
                        target.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(mine[int(k)].path, target)
        if home.exists():
            shutil.rmtree(home)
        home.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staged), home)
    return ExamplesReport(home, list(DEFAULT_TEST_CLASSES), per_class, per_class)
