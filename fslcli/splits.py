"""Class splits: which clips train, validate and test, and each clip's source group.

Validation never touches the test classes: by default it uses held-out recordings (one
fold) of the training classes; with ``val_classes`` it holds out whole classes instead.
Folds are dealt per source group (``SplitConfig.group_by``), so no held-out clip shares a
recording with a training clip.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from fslcli.config import SplitConfig
from fslcli.datasets.base import Clip
from fslcli.datasets.provenance import SharedPair
from fslcli.episodes import make_pool
from fslcli.errors import DataError


@dataclass(frozen=True)
class Pools:
    """Clip indices (into the cache's clip list) per class for each role."""

    train: dict[str, np.ndarray]
    val: dict[str, np.ndarray]
    test: dict[str, np.ndarray]
    #: How validation was made, for the screen: "fold 4 of the training classes" or "classes ...".
    val_description: str
    #: Each clip's source group ``(n_clips,)`` (equal ids: shared recording), or None with
    #: ``group_by`` "none": episodes then draw clips freely.
    groups: np.ndarray | None = None


GROUP_BY: tuple[str, ...] = ("source", "note", "none")
#: Folds that validation folds are dealt into (TinySOL's five).
N_FOLDS = 5


def group_keys(clips: Sequence[Clip], by: str) -> list[str]:
    """Each clip's source group as a string, unique across classes (see ``SplitConfig.group_by``).

    "source" falls back to the note, then to the file, where a source records no group.
    """
    if by not in GROUP_BY:
        raise DataError(f"--group-by {by!r} is unknown; choose one of {', '.join(GROUP_BY)}")

    def key(c: Clip) -> str:
        if by == "source" and c.group is not None:
            own = c.group
        elif by != "none" and c.pitch_id is not None:
            own = f"note {c.pitch_id}"
        else:
            own = f"file {c.path}"
        return f"{c.label}::{own}"

    return [key(c) for c in clips]


def group_folds(keys: Sequence[str], labels: Sequence[str], val_fold: int, n_folds: int = N_FOLDS) -> list[int]:
    """A fold per clip, dealt per source group: each class's groups, in an order fixed by their
    names' hashes, go to folds ``val_fold + 1, val_fold + 2, ...`` (mod ``n_folds``), so the
    validation fold is reached only by a class with at least ``n_folds`` groups and no class
    loses all its training recordings."""
    by_class: dict[str, set[str]] = {}
    for k, lab in zip(keys, labels, strict=True):
        by_class.setdefault(lab, set()).add(k)
    fold_of: dict[str, int] = {}
    for names in by_class.values():
        ordered = sorted(names, key=lambda k: hashlib.sha256(k.encode("utf-8")).hexdigest())
        for pos, k in enumerate(ordered):
            fold_of[k] = (val_fold + 1 + pos) % n_folds
    return [fold_of[k] for k in keys]


def default_split_for(labels: Sequence[str], base: SplitConfig) -> SplitConfig:
    """The split to use on data whose classes may not be TinySOL's.

    TinySOL-shaped data keeps ``base``. Other data (a ``--data-dir``) with classes unknown
    to ``base`` tests on the last ~third of its classes (sorted) and trains on the rest.
    """
    present = sorted(set(labels))
    train = set(base.train_classes or ())
    wanted = train | set(base.test_classes) | set(base.val_classes)
    if wanted & set(present) and train <= set(present) and set(base.test_classes) <= set(present):
        return base
    n_test = max(1, len(present) // 3)
    return SplitConfig(
        train_classes=tuple(present[:-n_test]),
        test_classes=tuple(present[-n_test:]),
        val_classes=(),
        val_fold=base.val_fold,
    )


def resolve_split(
    split: SplitConfig, labels: Sequence[str], pairs: Sequence[SharedPair] = ()
) -> tuple[SplitConfig, list[str]]:
    """The split with ``train_classes`` None made explicit: every class of the data but the test
    and validation classes and those that share recordings with them (``pairs``, from a render's
    provenance); returns it and the classes left out for sharing, sorted."""
    if split.train_classes is not None:
        return split, []
    held = set(split.test_classes) | set(split.val_classes)
    sharing = {p.first for p in pairs if p.second in held} | {p.second for p in pairs if p.first in held}
    present = sorted(set(labels) - held)
    return replace(split, train_classes=tuple(c for c in present if c not in sharing)), [
        c for c in present if c in sharing
    ]


def make_pools(clips: Sequence[Clip], split: SplitConfig) -> Pools:
    """Group the clips into train / validation / test pools, checking the split is sound
    (``train_classes`` None: see :func:`resolve_split`, without provenance)."""
    split = resolve_split(split, [c.label for c in clips])[0]
    assert split.train_classes is not None
    labels = [c.label for c in clips]
    present = set(labels)
    overlap = (set(split.train_classes) | set(split.val_classes)) & set(split.test_classes)
    if overlap:
        raise DataError(
            f"classes {sorted(overlap)} are in both the training/validation and the test split; a class may be in one only"
        )
    if set(split.train_classes) & set(split.val_classes):
        raise DataError(
            f"classes {sorted(set(split.train_classes) & set(split.val_classes))} are in both --train-classes and --val-classes"
        )
    for role, names in (
        ("--train-classes", split.train_classes),
        ("--test-classes", split.test_classes),
        ("--val-classes", split.val_classes),
    ):
        missing = [n for n in names if n not in present]
        if missing:
            raise DataError(
                f"{role}: {', '.join(repr(m) for m in missing)} not found in the data; classes present: {', '.join(sorted(present))}"
            )
    keys = group_keys(clips, split.group_by)
    groups = None if split.group_by == "none" else np.unique(keys, return_inverse=True)[1].astype(np.int64)
    test = make_pool(labels, classes=split.test_classes)
    if split.val_classes:
        train = make_pool(labels, classes=split.train_classes)
        val = make_pool(labels, classes=split.val_classes)
        desc = f"held-out classes {', '.join(split.val_classes)}"
    else:
        if groups is None:
            folds = [c.fold for c in clips]
            unit = "recordings"
        else:
            folds = group_folds(keys, labels, split.val_fold)
            unit = "source groups" if split.group_by == "source" else "notes"
        train_idx = [i for i, f in enumerate(folds) if f != split.val_fold]
        val_idx = [i for i, f in enumerate(folds) if f == split.val_fold]
        train = make_pool(labels, train_idx, classes=split.train_classes)
        val = {c: ids for c, ids in make_pool(labels, val_idx, classes=split.train_classes).items() if len(ids)}
        desc = f"held-out {unit} (fold {split.val_fold}) of {len(val)} training classes"
    return Pools(train=train, val=val, test=test, val_description=desc, groups=groups)
