"""Class splits: validation never sees test classes; bad splits are refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from fslcli.config import DEFAULT_TEST_CLASSES, DEFAULT_TRAIN_CLASSES, SplitConfig
from fslcli.datasets.base import Clip
from fslcli.datasets.folder import read_folder
from fslcli.errors import DataError
from fslcli.splits import default_split_for, make_pools

ALL = DEFAULT_TRAIN_CLASSES + DEFAULT_TEST_CLASSES


def tinysol_clips(per_class: int = 10) -> list[Clip]:
    """TinySOL-shaped records: every instrument, folds 0..4 in turn."""
    return [Clip(path=Path(f"/x/{c}/{k}.wav"), label=c, fold=k % 5) for c in ALL for k in range(per_class)]


def members(pool: dict, clips: list[Clip]) -> set[int]:
    return {int(i) for ids in pool.values() for i in ids}


def test_default_tinysol_split() -> None:
    clips = tinysol_clips()
    pools = make_pools(clips, SplitConfig())
    assert list(pools.train) == list(DEFAULT_TRAIN_CLASSES)
    assert list(pools.val) == list(DEFAULT_TRAIN_CLASSES)
    assert list(pools.test) == list(DEFAULT_TEST_CLASSES)
    assert all(clips[i].fold != 4 for i in members(pools.train, clips))
    assert all(clips[i].fold == 4 for i in members(pools.val, clips))
    assert all(len(v) == 8 for v in pools.train.values()) and all(len(v) == 2 for v in pools.val.values())
    assert all(len(v) == 10 for v in pools.test.values())  # test classes keep every fold
    assert not members(pools.val, clips) & members(pools.test, clips)
    assert "fold 4" in pools.val_description


@pytest.mark.parametrize("fold", [0, 2])
def test_val_fold_is_configurable(fold: int) -> None:
    clips = tinysol_clips()
    pools = make_pools(clips, SplitConfig(val_fold=fold))
    assert all(clips[i].fold == fold for i in members(pools.val, clips))
    assert f"fold {fold}" in pools.val_description


def test_val_classes_hold_out_whole_classes() -> None:
    clips = tinysol_clips()
    split = SplitConfig(train_classes=DEFAULT_TRAIN_CLASSES[:-2], val_classes=DEFAULT_TRAIN_CLASSES[-2:])
    pools = make_pools(clips, split)
    assert list(pools.val) == list(DEFAULT_TRAIN_CLASSES[-2:])
    assert all(len(v) == 10 for v in pools.val.values())  # every recording of a validation class
    assert all(len(v) == 10 for v in pools.train.values())  # no fold held out of the training classes
    assert not set(pools.train) & set(pools.val)
    assert "held-out classes" in pools.val_description


@pytest.mark.parametrize(
    ("split", "needle"),
    [
        (SplitConfig(train_classes=("Violin", "Oboe"), test_classes=("Oboe",)), r"\['Oboe'\].*both"),
        (
            SplitConfig(train_classes=("Violin",), val_classes=("Bassoon",), test_classes=("Bassoon",)),
            r"\['Bassoon'\].*both",
        ),
        (
            SplitConfig(train_classes=("Violin", "Oboe"), val_classes=("Oboe",), test_classes=("Viola",)),
            r"--train-classes and --val-classes",
        ),
        (
            SplitConfig(train_classes=("Violin", "Kazoo"), test_classes=("Viola",)),
            r"--train-classes: 'Kazoo' not found.*classes present: Accordion",
        ),
        (SplitConfig(train_classes=("Violin",), test_classes=("Theremin",)), r"--test-classes: 'Theremin' not found"),
        (
            SplitConfig(train_classes=("Violin",), test_classes=("Viola",), val_classes=("Ukulele",)),
            r"--val-classes: 'Ukulele'",
        ),
    ],
)
def test_bad_splits_are_refused_by_name(split: SplitConfig, needle: str) -> None:
    with pytest.raises(DataError, match=needle):
        make_pools(tinysol_clips(2), split)


def test_default_split_keeps_tinysol_split() -> None:
    base = SplitConfig()
    assert default_split_for([c.label for c in tinysol_clips(1)], base) is base


def test_default_split_for_folder_data(folder_data: Path) -> None:
    clips = read_folder(folder_data).clips
    split = default_split_for([c.label for c in clips], SplitConfig())
    assert split.train_classes == ("Bright", "Dark", "Noisy")  # sorted; the last third tests
    assert split.test_classes == ("Odd",)
    assert split.val_classes == ()
    pools = make_pools(clips, split)
    assert list(pools.test) == ["Odd"] and len(pools.test["Odd"]) == 10
    assert sum(len(v) for v in pools.train.values()) + sum(len(v) for v in pools.val.values()) == 30


@pytest.mark.parametrize(("n", "n_test"), [(2, 1), (6, 2), (9, 3)])
def test_default_split_for_unknown_classes_tests_on_a_third(n: int, n_test: int) -> None:
    labels = [f"k{i}" for i in range(n)] * 3
    split = default_split_for(labels, SplitConfig())
    assert len(split.test_classes) == n_test
    assert set(split.train_classes) | set(split.test_classes) == set(labels)
    assert not set(split.train_classes) & set(split.test_classes)
