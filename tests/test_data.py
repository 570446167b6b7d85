"""A data source made ready for a command: read, cached, split into pools, and what its
provenance says about recordings shared between classes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fslcli.config import SplitConfig
from fslcli.data import prepare, shared_pairs_of, shared_sample_warning
from fslcli.datasets import DataSource
from fslcli.errors import DataError


def test_a_render_leaves_out_training_classes_that_share_test_recordings(gm_home: Path, tmp_path: Path) -> None:
    source = DataSource("tinysol-gm", gm_home)
    prep = prepare(source, SplitConfig(), sample_rate=16_000, cache_dir=tmp_path / "cache")
    # TimGM6mb's Viola plays the Violin's samples and its Bass Tuba the French Horn's (test: Viola, Bass Tuba).
    assert prep.split.train_classes is not None and not {"Violin", "French Horn"} & set(prep.split.train_classes)
    assert any("left out of training" in n and "French Horn, Violin" in n for n in prep.notices)
    assert list(prep.pools.train) == list(prep.split.train_classes)
    assert list(prep.pools.test) == list(SplitConfig().test_classes)
    assert prep.cache_built and len(prep.cache) == 14 * 5 * 3 and prep.skipped == []
    again = prepare(source, SplitConfig(), sample_rate=16_000, cache_dir=tmp_path / "cache")
    assert not again.cache_built and again.split == prep.split  # the cache is reused
    font, pairs = shared_pairs_of(source)
    assert font is not None and {frozenset((p.first, p.second)) for p in pairs} >= {
        frozenset(("Violin", "Viola")),
        frozenset(("French Horn", "Bass Tuba")),
    }


def test_given_training_classes_are_kept(gm_home: Path, tmp_path: Path) -> None:
    split = SplitConfig(train_classes=("Violin", "Flute"), test_classes=("Viola", "Oboe"))
    prep = prepare(DataSource("tinysol-gm", gm_home), split, sample_rate=16_000, cache_dir=tmp_path / "cache")
    assert prep.split == split and list(prep.pools.train) == ["Violin", "Flute"] and prep.notices == ()


def test_folder_data_gets_a_split_of_its_own_classes(folder_data: Path, tmp_path: Path) -> None:
    source = DataSource("folder", folder_data)
    prep = prepare(source, SplitConfig(), sample_rate=16_000, cache_dir=tmp_path / "cache", adapt_split=True)
    assert prep.split.train_classes == ("Bright", "Dark", "Noisy") and prep.split.test_classes == ("Odd",)
    assert shared_pairs_of(source) == (None, [])
    with pytest.raises(DataError, match="--test-classes: 'Bassoon'"):  # TinySOL's classes are not there
        prepare(source, SplitConfig(), sample_rate=16_000, cache_dir=tmp_path / "cache")


def test_no_usable_audio_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "d" / "A").mkdir(parents=True)
    (tmp_path / "d" / "A" / "x.wav").write_bytes(b"not audio")
    with pytest.raises(DataError, match=r"no usable audio in .* \(1 files skipped\)"):
        prepare(DataSource("folder", tmp_path / "d"), SplitConfig(), sample_rate=16_000, cache_dir=tmp_path / "c")


def test_shared_sample_warning_only_in_the_training_font(tmp_path: Path) -> None:
    home = tmp_path / "gm"
    home.mkdir()
    report = {"soundfont_sha256": "abc", "shared": [{"instruments": ["Violin", "Viola"], "samples": ["Violin C4 [1]"]}]}
    (home / "render_report.json").write_text(json.dumps(report))
    source = DataSource("tinysol-gm", home)
    train, test = ["Violin", "Flute"], ["Viola", "Bassoon"]
    line = shared_sample_warning(source, [source], ["abc"], train, test)
    assert line is not None and "Violin (train) and Viola (test) share 1 sample" in line and "optimistic" in line
    # A model file that records no font: the same data is taken as the same font.
    assert shared_sample_warning(source, [source], [None], train, test) == line
    # A model trained on two fonts, this one among them.
    other = DataSource("tinysol-gm", tmp_path / "x")
    assert shared_sample_warning(source, [other, source], ["other", "abc"], train, test) == line
    # Another font (the model never heard its violin), other classes, or other data: nothing to say.
    assert shared_sample_warning(source, [source], ["other"], train, test) is None
    assert shared_sample_warning(source, [other], [None], train, test) is None
    assert shared_sample_warning(source, [source], ["abc"], ["Flute"], test) is None
    assert shared_sample_warning(DataSource("folder", home), [source], [None], train, test) is None


def test_several_sources_are_read_as_one(gm_home: Path, tmp_path: Path) -> None:
    """Two libraries: one class per name, each library's recordings its own source groups."""
    copy = tmp_path / "another-library"
    shutil.copytree(gm_home, copy)
    first, second = DataSource("tinysol-gm", gm_home), DataSource("tinysol-gm", copy)
    one = prepare(first, SplitConfig(), sample_rate=16_000, cache_dir=tmp_path / "cache")
    both = prepare([first, second], SplitConfig(), sample_rate=16_000, cache_dir=tmp_path / "cache")
    assert both.sources == (first, second) and both.source == first and one.libraries is None
    in_copy = np.array([copy in c.path.parents for c in both.cache.clips])
    assert both.libraries is not None and np.array_equal(both.libraries, in_copy.astype(np.int64))
    assert len(both.cache) == 2 * len(one.cache)
    assert both.split == one.split and list(both.pools.train) == list(one.pools.train)

    def every(prep, label: str) -> np.ndarray:  # validation takes a fold of the recordings: count both roles
        return np.concatenate([prep.pools.train[label], prep.pools.val.get(label, np.array([], dtype=np.int64))])

    for label in both.pools.train:
        idx = every(both, label)
        assert len(idx) == 2 * len(every(one, label))
        # The same sample in two libraries is two recordings: no source group spans both.
        in_copy = np.array([copy in both.cache.clips[i].path.parents for i in idx])
        first_groups, copy_groups = set(both.pools.groups[idx[~in_copy]]), set(both.pools.groups[idx[in_copy]])
        assert in_copy.sum() == len(idx) // 2 and not first_groups & copy_groups
        assert len(first_groups) == len(copy_groups) == len(set(one.pools.groups[every(one, label)]))
    with pytest.raises(DataError, match="is given twice; give each data home once"):
        prepare([first, DataSource("tinysol-gm", gm_home / ".")], SplitConfig(), sample_rate=16_000, cache_dir=None)
