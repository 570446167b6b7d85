"""Class splits: which clips train, validate and test.

Validation never touches the test classes: by default it uses held-out recordings (one
fold) of the training classes; with ``val_classes`` it holds out whole classes instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fslcli.config import SplitConfig
from fslcli.datasets.base import Clip
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


def default_split_for(labels: Sequence[str], base: SplitConfig) -> SplitConfig:
    """The split to use on data whose classes may not be TinySOL's.

    TinySOL-shaped data keeps ``base``. Other data (a ``--data-dir``) with classes unknown
    to ``base`` tests on the last ~third of its classes (sorted) and trains on the rest.
    """
    present = sorted(set(labels))
    wanted = set(base.train_classes) | set(base.test_classes) | set(base.val_classes)
    if wanted & set(present) and set(base.train_classes) <= set(present) and set(base.test_classes) <= set(present):
        return base
    n_test = max(1, len(present) // 3)
    return SplitConfig(
        train_classes=tuple(present[:-n_test]),
        test_classes=tuple(present[-n_test:]),
        val_classes=(),
        val_fold=base.val_fold,
    )


def make_pools(clips: Sequence[Clip], split: SplitConfig) -> Pools:
    """Group the clips into train / validation / test pools, checking the split is sound."""
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
    test = make_pool(labels, classes=split.test_classes)
    if split.val_classes:
        train = make_pool(labels, classes=split.train_classes)
        val = make_pool(labels, classes=split.val_classes)
        desc = f"held-out classes {', '.join(split.val_classes)}"
    else:
        folds = [c.fold for c in clips]
        train_idx = [i for i, f in enumerate(folds) if f != split.val_fold]
        val_idx = [i for i, f in enumerate(folds) if f == split.val_fold]
        train = make_pool(labels, train_idx, classes=split.train_classes)
        val = make_pool(labels, val_idx, classes=split.train_classes)
        desc = f"held-out recordings (fold {split.val_fold}) of the training classes"
    return Pools(train=train, val=val, test=test, val_description=desc)
