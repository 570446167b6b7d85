"""Class splits: validation never sees test classes; bad splits are refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from fslcli.config import DEFAULT_TEST_CLASSES, DEFAULT_TRAIN_CLASSES, SplitConfig
from fslcli.datasets.base import Clip
from fslcli.datasets.folder import read_folder
from fslcli.errors import DataError
from fslcli.splits import default_split_for, group_folds, group_keys, make_pools

ALL = DEFAULT_TRAIN_CLASSES + DEFAULT_TEST_CLASSES


def tinysol_clips(per_class: int = 10) -> list[Clip]:
    """TinySOL-shaped records: every instrument, folds 0..4 in turn."""
    return [Clip(path=Path(f"/x/{c}/{k}.wav"), label=c, fold=k % 5) for c in ALL for k in range(per_class)]


def members(pool: dict, clips: list[Clip]) -> set[int]:
    return {int(i) for ids in pool.values() for i in ids}


def test_default_tinysol_split() -> None:
    clips = tinysol_clips()
    pools = make_pools(clips, SplitConfig(group_by="none"))
    # Without provenance, every class but the test classes trains (sorted).
    assert list(pools.train) == sorted(DEFAULT_TRAIN_CLASSES)
    assert list(pools.val) == sorted(DEFAULT_TRAIN_CLASSES)
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
    pools = make_pools(clips, SplitConfig(val_fold=fold, group_by="none"))
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


def grouped_clips() -> list[Clip]:
    """Training instruments with 1 to 9 source groups of 3 clips each (folds all 0: ignored)."""
    return [
        Clip(path=Path(f"/x/{c}/{g}-{k}.wav"), label=c, fold=0, pitch_id=60 + g, group=f"{c[:3]}-{g}")
        for n, c in enumerate(ALL)
        for g in range(1 + n % 9)
        for k in range(3)
    ]


def test_folds_are_dealt_per_source_group() -> None:
    clips = grouped_clips()
    pools = make_pools(clips, SplitConfig())
    train, val = members(pools.train, clips), members(pools.val, clips)
    assert not train & val
    # No source group is split between training and validation.
    assert not {clips[i].group for i in train} & {clips[i].group for i in val}
    # Only classes with five or more groups give one to validation, and every class keeps training data.
    n_groups = {c: len({x.group for x in clips if x.label == c}) for c in DEFAULT_TRAIN_CLASSES}
    assert set(pools.val) == {c for c, n in n_groups.items() if n >= 5}
    assert all(len(pools.train[c]) >= 3 for c in DEFAULT_TRAIN_CLASSES)
    assert "source groups" in pools.val_description
    # Grouped pools carry each clip's group; equal ids mean the same group.
    assert pools.groups is not None
    assert all(
        (pools.groups[i] == pools.groups[j]) == (a.group == b.group)
        for i, a in enumerate(clips[:30])
        for j, b in enumerate(clips[:30])
    )


def test_group_folds_are_stable_and_cover_every_fold() -> None:
    keys = [f"c::{g}" for g in range(10)]
    folds = group_folds(keys, ["c"] * 10, val_fold=4)
    assert sorted(folds) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert group_folds(list(reversed(keys)), ["c"] * 10, val_fold=4) == list(reversed(folds))
    # Fewer groups than folds: the validation fold is never reached.
    assert 2 not in group_folds(["c::a", "c::b"], ["c", "c"], val_fold=2)


def test_group_by_note_and_none() -> None:
    a = Clip(Path("/x/a.wav"), "V", pitch_id=60, group="V-1")
    b = Clip(Path("/x/b.wav"), "V", pitch_id=60, group="V-2")
    c = Clip(Path("/x/c.wav"), "V", pitch_id=62, group="V-1")
    by = {k: group_keys([a, b, c], k) for k in ("source", "note", "none")}
    assert by["source"][0] == by["source"][2] != by["source"][1]
    assert by["note"][0] == by["note"][1] != by["note"][2]
    assert len(set(by["none"])) == 3
    assert make_pools([a, b, c], SplitConfig(train_classes=("V",), test_classes=(), group_by="none")).groups is None
    with pytest.raises(DataError, match="--group-by 'pitch' is unknown"):
        group_keys([a], "pitch")


def test_a_folder_groups_csv_sets_source_groups(tmp_path: Path) -> None:
    from conftest import write_folder_dataset

    root = write_folder_dataset(tmp_path / "d", per_class=4)
    (root / "groups.csv").write_text("path,group\nBright/bright_00.wav,take1\nBright/bright_01.wav,take1\n")
    read = read_folder(root)
    groups = {c.path.relative_to(root).as_posix(): c.group for c in read.clips}
    assert groups["Bright/bright_00.wav"] == groups["Bright/bright_01.wav"] == "take1"
    assert groups["Bright/bright_02.wav"] == "Bright/bright_02.wav"  # unlisted: its own group
    assert read.notices == (f"14 file(s) of {root} are not in groups.csv: each is its own source group",)
    (root / "groups.csv").write_text("Bright/bright_00.wav\n")
    with pytest.raises(DataError, match="groups.csv line 1: expected 'path,group'"):
        read_folder(root)


def test_training_classes_leave_out_those_sharing_recordings_with_held_out_ones() -> None:
    from fslcli.datasets.provenance import SharedPair
    from fslcli.splits import resolve_split

    labels = ["Violin", "Viola", "Flute", "Piano", "Oboe"]
    pairs = [SharedPair("Violin", "Viola", ("Violin C4 [1]",)), SharedPair("Piano", "Flute", ("x [2]",))]
    split, left_out = resolve_split(SplitConfig(test_classes=("Viola",), val_classes=("Oboe",)), labels, pairs)
    assert split.train_classes == ("Flute", "Piano") and left_out == ["Violin"]
    # Given classes are kept as given.
    given = SplitConfig(train_classes=("Violin",), test_classes=("Viola",))
    assert resolve_split(given, labels, pairs) == (given, [])
