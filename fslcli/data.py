"""A data source made ready for a command: its clips read, decoded into the cache, grouped into
class pools, with what the source's provenance says about shared recordings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fslcli.config import SplitConfig
from fslcli.datasets import DataSource, load_clips
from fslcli.datasets.provenance import SharedPair, leaks, read_shared_pairs
from fslcli.errors import DataError
from fslcli.features import WaveCache, open_cache
from fslcli.splits import Pools, default_split_for, make_pools, resolve_split

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Prepared:
    """Clips of a source, decoded into the cache, grouped into pools."""

    source: DataSource
    cache: WaveCache
    pools: Pools
    split: SplitConfig
    skipped: list[tuple[str, str]]
    cache_built: bool
    #: One-line notes for the user from reading the data (e.g. an old render's grouping).
    notices: tuple[str, ...] = ()


def prepare(
    source: DataSource,
    split: SplitConfig,
    *,
    sample_rate: int,
    cache_dir: Path | None,
    progress: Progress | None = None,
    adapt_split: bool = False,
) -> Prepared:
    """Read a source, open (or build) its cache, and make the class pools.

    ``adapt_split``: for data whose classes are not TinySOL's, derive a default split
    (see :func:`fslcli.splits.default_split_for`). ``train_classes`` None is made explicit
    (see :func:`fslcli.splits.resolve_split`), leaving out classes that share recordings with
    held-out ones.
    """
    read = load_clips(source)
    skipped = [(str(p), r) for p, r in read.skipped]
    cache, built = open_cache(
        read.clips,
        sample_rate,
        cache_dir,
        progress=(lambda d, t: progress("Decoding audio into the cache", d, t)) if progress else None,
    )
    skipped += cache.skipped
    if len(cache) == 0:
        raise DataError(f"no usable audio in {source.describe()} ({len(skipped)} files skipped)")
    if adapt_split:
        split = default_split_for(cache.labels(), split)
    split, left_out = resolve_split(split, cache.labels(), shared_pairs_of(source)[1])
    notices = read.notices
    if left_out and split.train_classes:
        notices += (
            f"{len(left_out)} class(es) left out of training because they share recordings with test or "
            f"validation classes: {', '.join(left_out)}",
        )
    return Prepared(source, cache, make_pools(cache.clips, split), split, skipped, built, notices)


def shared_pairs_of(source: DataSource) -> tuple[str | None, list[SharedPair]]:
    """The sha256 of the SoundFont a render was made from and its instruments that share
    recordings; (None, []) for other data."""
    found = read_shared_pairs(source.path) if source.kind != "folder" else None
    return found if found else (None, [])


def shared_sample_warning(
    source: DataSource, model_source: DataSource, model_font: str | None, train: list[str], test: list[str]
) -> str | None:
    """A line naming the test classes that share recordings with training classes, when a model is
    evaluated on the SoundFont render it was trained on (elsewhere they are independent), else None."""
    font, pairs = shared_pairs_of(source)
    same = (font is not None and font == model_font) or (model_font is None and source == model_source)
    shared = leaks(pairs, train, test) if same else []
    if not shared:
        return None
    roles = {**{c: "test" for c in test}, **{c: "train" for c in train}}
    return (
        f"in this font {'; '.join(p.describe(roles) for p in shared)}: the model heard those recordings in "
        "training, so these test figures are optimistic"
    )
