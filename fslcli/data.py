"""Data sources made ready for a command: their clips read, decoded into the cache, grouped into
class pools, with what each source's provenance says about shared recordings.

Several sources (``fsl train --data-home A --data-home B``) are read as one: a class name in
both is one class, so its episodes mix the libraries. Each library's source groups stay its
own, and ``Prepared.libraries`` says which library each clip is from (training fits the
whitening with each library's version of a class apart).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from fslcli.config import SplitConfig
from fslcli.datasets import Clip, DataSource, load_clips
from fslcli.datasets.provenance import SharedPair, leaks, read_shared_pairs
from fslcli.errors import DataError
from fslcli.features import WaveCache, open_cache
from fslcli.splits import Pools, default_split_for, make_pools, resolve_split

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Prepared:
    """Clips of one or more sources, decoded into the cache, grouped into pools. ``source`` is
    the first of ``sources``."""

    source: DataSource
    cache: WaveCache
    pools: Pools
    split: SplitConfig
    skipped: list[tuple[str, str]]
    cache_built: bool
    #: One-line notes for the user from reading the data (e.g. an old render's grouping).
    notices: tuple[str, ...] = ()
    sources: tuple[DataSource, ...] = ()
    #: With several sources, each cached clip's source (its position in ``sources``) ``(n_clips,)``.
    libraries: np.ndarray | None = None


def prepare(
    source: DataSource | Sequence[DataSource],
    split: SplitConfig,
    *,
    sample_rate: int,
    cache_dir: Path | None,
    progress: Progress | None = None,
    adapt_split: bool = False,
) -> Prepared:
    """Read a source (or several, as one), open (or build) its cache, and make the class pools.

    ``adapt_split``: for data whose classes are not TinySOL's, derive a default split
    (see :func:`fslcli.splits.default_split_for`). ``train_classes`` None is made explicit
    (see :func:`fslcli.splits.resolve_split`), leaving out classes that share recordings with
    held-out ones in any of the sources.
    """
    sources = (source,) if isinstance(source, DataSource) else tuple(source)
    if not sources:
        raise DataError("no data source given")
    seen = [s.path.resolve() for s in sources]
    twice = next((s for i, s in enumerate(sources) if seen[i] in seen[:i]), None)
    if twice is not None:
        raise DataError(f"{twice.describe()} is given twice; give each data home once")
    reads = [load_clips(s) for s in sources]
    clips = reads[0].clips if len(reads) == 1 else merge_clips([r.clips for r in reads])
    skipped = [(str(p), r) for read in reads for p, r in read.skipped]
    cache, built = open_cache(
        clips,
        sample_rate,
        cache_dir,
        progress=(lambda d, t: progress("Decoding audio into the cache", d, t)) if progress else None,
    )
    skipped += cache.skipped
    if len(cache) == 0:
        where = " and ".join(s.describe() for s in sources)
        raise DataError(f"no usable audio in {where} ({len(skipped)} files skipped)")
    if adapt_split:
        split = default_split_for(cache.labels(), split)
    split, left_out = resolve_split(split, cache.labels(), shared_pairs_in(sources))
    notices = tuple(line for read in reads for line in read.notices)
    if left_out and split.train_classes:
        notices += (
            f"{len(left_out)} class(es) left out of training because they share recordings with test or "
            f"validation classes: {', '.join(left_out)}",
        )
    pools = make_pools(cache.clips, split)
    libraries = None
    if len(sources) > 1:
        of = {str(c.path): k for k, read in enumerate(reads) for c in read.clips}
        libraries = np.array([of[str(c.path)] for c in cache.clips], dtype=np.int64)
    return Prepared(sources[0], cache, pools, split, skipped, built, notices, sources, libraries)


def merge_clips(per_source: Sequence[Sequence[Clip]]) -> list[Clip]:
    """The clips of several sources as one list, each source group prefixed with its source's
    position (two SoundFonts may both name a sample "Flute C4"; they are not one recording).
    Clips without a group keep none."""
    return [
        replace(c, group=None if c.group is None else f"{i}:{c.group}")
        for i, clips in enumerate(per_source)
        for c in clips
    ]


def shared_pairs_of(source: DataSource) -> tuple[str | None, list[SharedPair]]:
    """The sha256 of the SoundFont a render was made from and its instruments that share
    recordings; (None, []) for other data."""
    found = read_shared_pairs(source.path) if source.kind != "folder" else None
    return found if found else (None, [])


def shared_pairs_in(sources: Sequence[DataSource]) -> list[SharedPair]:
    """The pairs of instruments that share recordings in any of ``sources`` (each font's own)."""
    return [pair for source in sources for pair in shared_pairs_of(source)[1]]


def sources_meta(sources: Sequence[DataSource]) -> dict[str, Any]:
    """What a model file records about its training data beside its first source: the sha256 of
    its SoundFont and, with several sources, every source and every font (see
    :class:`fslcli.checkpoint.LoadedModel`)."""
    fonts = [shared_pairs_of(s)[0] for s in sources]
    meta: dict[str, Any] = {"soundfont_sha256": fonts[0]}
    if len(sources) > 1:
        meta["sources"] = [s.to_dict() for s in sources]
        meta["soundfonts"] = fonts
    return meta


def shared_sample_warning(
    source: DataSource,
    model_sources: Sequence[DataSource],
    model_fonts: Sequence[str | None],
    train: list[str],
    test: list[str],
) -> str | None:
    """A line naming the test classes that share recordings with training classes, when a model is
    evaluated on a SoundFont render it was trained on (elsewhere they are independent), else None.

    ``model_fonts``: the sha256 of each SoundFont the model was trained on (None where unknown).
    """
    font, pairs = shared_pairs_of(source)
    known = [f for f in model_fonts if f is not None]
    same = (font is not None and font in known) or (not known and source in model_sources)
    shared = leaks(pairs, train, test) if same else []
    if not shared:
        return None
    roles = {**{c: "test" for c in test}, **{c: "train" for c in train}}
    return (
        f"in this font {'; '.join(p.describe(roles) for p in shared)}: the model heard those recordings in "
        "training, so these test figures are optimistic"
    )
