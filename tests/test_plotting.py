"""Projection, figures and figure files (fslcli.projection, fslcli.plotting)."""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from fslcli import plotting
from fslcli.errors import FslError, OutputError
from fslcli.plotting import (
    CUSTOMDATA_FIELDS,
    PointSet,
    embeddings_figure,
    episode_figure,
    learning_curves_figure,
    write_figure,
)
from fslcli.projection import project

CLASSES = ("Bass Tuba", "Flute", "Violin")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _episode(rng: np.random.Generator, dims: int = 2, shots: int = 2, queries: int = 3) -> PointSet:
    """A 3-way episode plus prototypes; query 0 of every class is predicted wrong."""
    rows: list[tuple[str, str, str, str | None]] = []  # (class, role, path, predicted)
    for k, c in enumerate(CLASSES):
        rows += [(c, "support", f"/d/{c}/s{s}.wav", None) for s in range(shots)]
        rows += [(c, "query", f"/d/{c}/q{q}.wav", c if q else CLASSES[(k + 1) % 3]) for q in range(queries)]
        rows.append((c, "prototype", "", None))
    labels, roles, paths, predicted = (list(col) for col in zip(*rows, strict=True))
    return PointSet(rng.normal(size=(len(rows), dims)), labels, roles, paths, predicted)


def _counts_from_figure(fig) -> Counter:
    """(role, class) -> number of points, read from the traces' customdata."""
    fields = list(CUSTOMDATA_FIELDS)
    counts: Counter = Counter()
    for trace in fig.data:
        assert trace.meta["customdata"] == fields
        for row in trace.customdata:
            # Every point agrees with the trace it sits in.
            assert (row[fields.index("role")], row[fields.index("class")]) == (trace.meta["role"], trace.meta["class"])
            counts[(row[fields.index("role")], row[fields.index("class")])] += 1
        assert len(trace.x) == len(trace.customdata)
    return counts


# --- projection ---------------------------------------------------------------


@pytest.mark.parametrize("method", ["tsne", "pca"])
@pytest.mark.parametrize("dims", [2, 3])
def test_project_shape_and_determinism(rng: np.random.Generator, method: str, dims: int) -> None:
    x = rng.normal(size=(30, 16)).astype(np.float32)
    before = x.copy()

    a = project(x, method, dims, seed=3)
    b = project(x, method, dims, seed=3)

    assert a.shape == (30, dims)
    assert np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(x, before)  # input untouched


@pytest.mark.slow  # numba compiles UMAP on first use (~10-20 s); still runs by default
def test_project_umap(rng: np.random.Generator) -> None:
    pytest.importorskip("umap", reason="umap-learn not installed (pip install 'fslcli[umap]')")
    x = rng.normal(size=(30, 8))

    a = project(x, "umap", 2, seed=0)

    assert a.shape == (30, 2) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, project(x, "umap", 2, seed=0))
    # Too few points for UMAP's spectral start: still works.
    assert project(x[:3], "umap", 3, seed=0).shape == (3, 3)


@pytest.mark.parametrize("method", ["tsne", "pca"])
@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("dims", [2, 3])
def test_project_tiny_inputs(rng: np.random.Generator, method: str, n: int, dims: int) -> None:
    y = project(rng.normal(size=(n, 2)), method, dims, seed=0)
    assert y.shape == (n, dims)
    assert np.isfinite(y).all()


@pytest.mark.parametrize("method", ["tsne", "pca"])
def test_project_identical_points_sit_at_origin(method: str) -> None:
    np.testing.assert_array_equal(project(np.ones((5, 4)), method), np.zeros((5, 2)))


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"method": "isomap"}, r"'isomap'.*tsne, umap, pca"),
        ({"dims": 4}, r"4 dimensions.*2, 3"),
        ({"dims": 1}, r"1 dimensions.*2, 3"),
    ],
)
def test_project_rejects_bad_options(rng: np.random.Generator, kwargs: dict, needle: str) -> None:
    with pytest.raises(FslError, match=needle):
        project(rng.normal(size=(5, 3)), **kwargs)


@pytest.mark.parametrize(
    ("x", "needle"),
    [
        (np.zeros(5), r"shape \(n_points, d\).*\(5,\)"),
        (np.zeros((0, 4)), r"nothing to project"),
        (np.array([[0.0, 1.0], [np.nan, 2.0], [1.0, 1.0]]), r"1 of 3 embeddings contain NaN"),
    ],
)
def test_project_rejects_bad_input(x: np.ndarray, needle: str) -> None:
    with pytest.raises(FslError, match=needle):
        project(x, "pca")


def test_umap_missing_names_the_extra(monkeypatch: pytest.MonkeyPatch, rng: np.random.Generator) -> None:
    monkeypatch.setitem(sys.modules, "umap", None)  # makes `import umap` raise ImportError
    with pytest.raises(FslError, match=re.escape("pip install 'fslcli[umap]'")):
        project(rng.normal(size=(10, 4)), "umap")


# --- point figures --------------------------------------------------------------


@pytest.mark.parametrize("dims", [2, 3])
def test_episode_figure_carries_every_point_with_its_role(rng: np.random.Generator, dims: int) -> None:
    points = _episode(rng, dims=dims)

    fig = episode_figure(points, "5-way episode")

    expected = Counter(zip(points.roles, points.labels, strict=True))
    assert _counts_from_figure(fig) == expected
    assert {type(t).__name__ for t in fig.data} == {"Scatter3d" if dims == 3 else "Scatter"}
    assert fig.layout.title.text == "5-way episode"
    # Every input point appears once, at its own coordinates.
    by_path = {}
    for trace in fig.data:
        zs = trace.z if dims == 3 else [None] * len(trace.x)
        for row, x, y, z in zip(trace.customdata, trace.x, trace.y, zs, strict=True):
            by_path.setdefault(row[0], []).append((x, y, z))
    for i, path in enumerate(points.paths):
        if path:
            assert by_path[path] == [tuple(points.coords[i]) + ((None,) if dims == 2 else ())]


def test_episode_figure_styles_roles_and_classes(rng: np.random.Generator) -> None:
    fig = episode_figure(_episode(rng), "e")
    colour_of: dict[str, set] = {}
    for trace in fig.data:
        role, label = trace.meta["role"], trace.meta["class"]
        colour_of.setdefault(label, set()).add(trace.marker.color)
        symbols = list(trace.marker.symbol)
        if role == "support":
            assert set(symbols) == {"circle"}
        elif role == "query":
            wrong = [row[4] == "wrong" for row in trace.customdata]
            assert symbols == ["x" if w else "diamond" for w in wrong]
        else:
            assert symbols == ["star"] and trace.marker.size > 15 and trace.marker.line.width >= 2
    # One colour per class, different between classes.
    assert all(len(c) == 1 for c in colour_of.values())
    assert len({next(iter(c)) for c in colour_of.values()}) == len(CLASSES)


def test_episode_figure_query_hover_and_prediction(rng: np.random.Generator) -> None:
    fig = episode_figure(_episode(rng), "e")
    queries = [t for t in fig.data if t.meta["role"] == "query"]
    rows = [row for t in queries for row in t.customdata]
    assert sorted(r[4] for r in rows) == ["right"] * 6 + ["wrong"] * 3
    assert all((r[3] == r[1]) == (r[4] == "right") for r in rows)
    text = " ".join(h for t in queries for h in t.hovertext)
    assert "/d/Flute/q0.wav" in text and "predicted: Violin (wrong)" in text
    protos = [t for t in fig.data if t.meta["role"] == "prototype"]
    assert all(row[0] == "" and row[3] == "" for t in protos for row in t.customdata)


def test_3d_prototypes_use_a_scatter3d_symbol(rng: np.random.Generator) -> None:
    fig = episode_figure(_episode(rng, dims=3), "e")
    protos = [t for t in fig.data if t.meta["role"] == "prototype"]
    assert all(list(t.marker.symbol) == ["square"] for t in protos)


def test_colours_are_shared_across_figures(rng: np.random.Generator) -> None:
    colours = plotting.class_colours([*CLASSES, "Oboe"])
    fig = episode_figure(_episode(rng), "e", colours=colours)
    assert all(t.marker.color == colours[t.meta["class"]] for t in fig.data)
    with pytest.raises(FslError, match=r"no colour given for class\(es\) \['Bass Tuba'\]"):
        episode_figure(_episode(rng), "e", colours={"Flute": "red", "Violin": "blue"})


def test_embeddings_figure_greys_train_points(rng: np.random.Generator) -> None:
    labels = ["Oboe"] * 4 + ["Cello"] * 3 + ["Flute"] * 5 + ["Flute"]
    roles = ["train"] * 7 + ["clip"] * 5 + ["prototype"]
    paths = [f"/d/{i}.wav" for i in range(12)] + [""]
    points = PointSet(rng.normal(size=(13, 2)), labels, roles, paths, [None] * 13)

    fig = embeddings_figure(points, "all clips")

    assert _counts_from_figure(fig) == Counter(zip(roles, labels, strict=True))
    train = [t for t in fig.data if t.meta["role"] == "train"]
    coloured = [t for t in fig.data if t.meta["role"] != "train"]
    assert {t.marker.color for t in train} == {plotting._TRAIN_GREY}
    assert [t.showlegend for t in train].count(True) == 1
    assert plotting._TRAIN_GREY not in {t.marker.color for t in coloured}
    assert max(t.marker.size for t in train) < min(t.marker.size for t in coloured)
    # Train-only classes take no colour from the palette.
    assert {t.marker.color for t in coloured} == {plotting.class_colours(["Flute"])["Flute"]}


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"roles": ["support", "shadow"]}, r"unknown point role\(s\) \['shadow'\]"),
        ({"paths": ["a.wav"]}, r"PointSet.paths has 1 entries for 2 points"),
        ({"coords": np.zeros((2, 4))}, r"\(n_points, 2\) or \(n_points, 3\); got \(2, 4\)"),
        ({"coords": np.array([[0.0, 1.0], [np.inf, 0.0]])}, r"NaN or infinity"),
    ],
)
def test_pointset_rejects_inconsistent_input(change: dict, needle: str) -> None:
    fields = {
        "coords": np.zeros((2, 2)),
        "labels": ["a", "b"],
        "roles": ["support", "query"],
        "paths": ["a.wav", "b.wav"],
        "predicted": [None, "a"],
    }
    with pytest.raises(FslError, match=needle):
        PointSet(**{**fields, **change})


# --- learning curves ------------------------------------------------------------


def test_learning_curves_two_subplots_and_gaps() -> None:
    history = [
        {"step": 100, "train_loss": 1.5, "train_acc": 0.4},
        {"step": 200, "train_loss": 1.1, "train_acc": 0.55, "val_loss": 1.3, "val_acc": 0.5},
        {"step": 300, "train_loss": 0.9},
        {"step": 400, "train_loss": 0.8, "train_acc": 0.7, "val_loss": 1.0, "val_acc": 0.6},
    ]

    fig = learning_curves_figure(history)

    traces = {t.meta["metric"]: t for t in fig.data}
    assert set(traces) == {"train_loss", "val_loss", "train_acc", "val_acc"}
    assert list(traces["train_loss"].x) == [100, 200, 300, 400]
    assert list(traces["train_acc"].x) == [100, 200, 400]
    assert list(traces["val_acc"].x) == [200, 400] and list(traces["val_acc"].y) == [0.5, 0.6]
    # loss on the left subplot, accuracy on the right
    assert {traces["train_loss"].xaxis, traces["val_loss"].xaxis} == {"x"}
    assert {traces["train_acc"].xaxis, traces["val_acc"].xaxis} == {"x2"}
    assert sum(bool(t.showlegend) for t in fig.data) == 2  # one legend entry per split


def test_learning_curves_train_only_and_missing_steps() -> None:
    fig = learning_curves_figure([{"train_loss": 2.0}, {"train_loss": 1.0}])
    assert [t.meta["metric"] for t in fig.data] == ["train_loss"]
    assert list(fig.data[0].x) == [0, 1]


@pytest.mark.parametrize("history", [[], [{"step": 1}, {"step": 2, "lr": 0.1}]])
def test_learning_curves_need_some_metric(history: list) -> None:
    with pytest.raises(FslError, match=rf"none of {len(history)} history rows"):
        learning_curves_figure(history)


# --- writing ----------------------------------------------------------------------


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_write_html_is_self_contained(rng: np.random.Generator, tmp_path: Path) -> None:
    out = write_figure(episode_figure(_episode(rng), "e"), tmp_path / "episode.html")

    assert out == tmp_path / "episode.html"
    html = out.read_text(encoding="utf-8")
    # No script is fetched: plotly.js is inlined. (The bundle itself mentions
    # cdn.plot.ly in a topojson URL, so look at <script src> rather than the text.)
    assert re.findall(r"<script[^>]*\bsrc=", html) == []
    assert "Plotly.newPlot" in html and len(html) > 1_000_000
    assert _leftovers(tmp_path) == []
    assert (out.stat().st_mode & 0o777) == 0o666 & ~_umask()


def test_write_accepts_str_and_upper_case_suffix(rng: np.random.Generator, tmp_path: Path) -> None:
    out = write_figure(episode_figure(_episode(rng), "e"), str(tmp_path / "E.HTML"))
    assert out.is_file() and isinstance(out, Path)


def test_write_rejects_unknown_suffix(rng: np.random.Generator, tmp_path: Path) -> None:
    with pytest.raises(FslError, match=r"'\.jpeg'; use one of \.html, \.png, \.svg, \.pdf"):
        write_figure(episode_figure(_episode(rng), "e"), tmp_path / "plot.jpeg")
    assert list(tmp_path.iterdir()) == []


def test_write_missing_folder_is_an_output_error(rng: np.random.Generator, tmp_path: Path) -> None:
    target = tmp_path / "no" / "such" / "plot.html"
    with pytest.raises(OutputError, match=re.escape(str(target))):
        write_figure(episode_figure(_episode(rng), "e"), target)


def test_write_onto_a_folder_is_an_output_error(rng: np.random.Generator, tmp_path: Path) -> None:
    (tmp_path / "plot.html").mkdir()
    with pytest.raises(OutputError, match="it is a folder"):
        write_figure(episode_figure(_episode(rng), "e"), tmp_path / "plot.html")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores folder permissions")
def test_write_unwritable_folder_is_an_output_error(rng: np.random.Generator, tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(OutputError, match=re.escape(str(folder / "plot.html"))):
            write_figure(episode_figure(_episode(rng), "e"), folder / "plot.html")
    finally:
        folder.chmod(0o700)


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_failed_write_keeps_the_old_file(
    rng: np.random.Generator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: BaseException
) -> None:
    target = tmp_path / "plot.html"
    target.write_text("old figure")

    def fail(*args: object) -> None:
        raise failure

    monkeypatch.setattr(plotting.os, "fsync", fail)  # fails after the temp file has data in it
    expected = OutputError if isinstance(failure, OSError) else KeyboardInterrupt
    with pytest.raises(expected, match="No space left" if expected is OutputError else None):
        write_figure(episode_figure(_episode(rng), "e"), target)

    assert target.read_text() == "old figure"
    assert _leftovers(tmp_path) == []


def test_write_replaces_through_a_temp_file_in_the_same_folder(
    rng: np.random.Generator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[Path, Path, str]] = []
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        seen.append((Path(src), Path(dst), Path(src).read_text(encoding="utf-8")[:15]))
        real_replace(src, dst)

    monkeypatch.setattr(plotting.os, "replace", spy)
    target = tmp_path / "plot.html"
    write_figure(episode_figure(_episode(rng), "e"), target)

    [(src, dst, head)] = seen
    assert src.parent == tmp_path and src != target and dst == target
    assert head.lower().startswith("<!doctype html")


# --- image export -------------------------------------------------------------------


def _kaleido_browser() -> str | None:
    """The browser kaleido would use, found the way kaleido finds it, or None."""
    try:
        from choreographer.browsers.chromium import Chromium

        found = Chromium.find_browser(skip_local=False)
    except Exception:  # choreographer's internals moved: fall back to PATH
        found = os.environ.get("BROWSER_PATH") or shutil.which("chromium") or shutil.which("google-chrome")
    return found if found and os.path.isfile(found) and os.access(found, os.X_OK) else None


@pytest.mark.slow  # starts a headless browser (~3 s)
def test_write_png(rng: np.random.Generator, tmp_path: Path) -> None:
    pytest.importorskip("kaleido", reason="kaleido not installed (pip install 'fslcli[image]')")
    if not _kaleido_browser():
        pytest.skip("no Chrome/Chromium for kaleido: apt-get install -y chromium, or set BROWSER_PATH")

    out = write_figure(episode_figure(_episode(rng), "e"), tmp_path / "episode.png")

    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _leftovers(tmp_path) == []


def test_image_without_browser_says_how_to_get_one(
    rng: np.random.Generator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("kaleido", reason="kaleido not installed (pip install 'fslcli[image]')")
    missing = str(tmp_path / "no-chrome")
    monkeypatch.setenv("BROWSER_PATH", missing)
    if _kaleido_browser() is not None:
        pytest.skip("a Chrome downloaded by kaleido/choreographer takes precedence over BROWSER_PATH")

    with pytest.raises(FslError) as info:
        write_figure(episode_figure(_episode(rng), "e"), tmp_path / "episode.svg")

    message = str(info.value)
    assert "\n" not in message
    assert f"BROWSER_PATH={missing!r}" in message
    assert "apt-get install -y chromium" in message and ".html" in message
    assert not (tmp_path / "episode.svg").exists() and _leftovers(tmp_path) == []


@pytest.mark.skipif(os.name != "posix", reason="fake browser is a shell script")
def test_image_with_broken_browser_says_so(
    rng: np.random.Generator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("kaleido", reason="kaleido not installed (pip install 'fslcli[image]')")
    fake = tmp_path / "chrome"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    monkeypatch.setenv("BROWSER_PATH", str(fake))
    if _kaleido_browser() != str(fake):
        pytest.skip("a Chrome downloaded by kaleido/choreographer takes precedence over BROWSER_PATH")

    with pytest.raises(FslError, match=r"failed to start.*apt-get install -y chromium.*\.html"):
        write_figure(episode_figure(_episode(rng), "e"), tmp_path / "episode.pdf")
    assert not (tmp_path / "episode.pdf").exists() and _leftovers(tmp_path) == []


def test_image_without_kaleido_names_the_extra(
    rng: np.random.Generator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "kaleido", None)
    with pytest.raises(FslError, match=re.escape("pip install 'kaleido>=1'")):
        write_figure(episode_figure(_episode(rng), "e"), tmp_path / "episode.pdf")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
