"""Plotly figures of embeddings, episodes, learning curves and detected events.

The figure builders are pure: projected coordinates and labels in, a
:class:`plotly.graph_objects.Figure` out, no file I/O and no randomness.
:func:`write_figure` is the one place that touches the disk.

Every scatter trace holds the points of one ``(role, class)`` pair. Its
``meta`` says which (``{"role": ..., "class": ..., "customdata": CUSTOMDATA_FIELDS}``)
and its ``customdata`` has one row per point with the fields named in
:data:`CUSTOMDATA_FIELDS`, so the figure -- in Python or in the written HTML --
can be read back to learn which point is which.

Prototypes are the class means of the support embeddings (Snell et al., 2017),
projected together with the clips so they land among them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fslcli.atomic import atomic_write
from fslcli.errors import FslError, OutputError

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from fslcli.detection import Event, Timeline

#: Point roles, in drawing order (later roles are drawn on top).
ROLES: tuple[str, ...] = ("train", "clip", "support", "query", "prototype")
#: Columns of each trace's ``customdata`` rows.
CUSTOMDATA_FIELDS: tuple[str, ...] = ("file", "class", "role", "predicted", "correct")
#: Most events of one recording shaded over its spectrogram in :func:`timeline_figure`.
MAX_SPANS = 400
#: File suffixes :func:`write_figure` can write.
FORMATS: tuple[str, ...] = (".html", ".png", ".svg", ".pdf")

# Marker shapes per role. Scatter3d has no star, so 3-D prototypes are squares.
_SYMBOLS_2D = {"train": "circle", "clip": "circle", "support": "circle", "query": "diamond", "prototype": "star"}
_SYMBOLS_3D = {**_SYMBOLS_2D, "prototype": "square"}
_WRONG_QUERY_SYMBOL = "x"
_SIZES_2D = {"train": 5, "clip": 7, "support": 9, "query": 10, "prototype": 20}
_SIZES_3D = {"train": 3, "clip": 4, "support": 5, "query": 6, "prototype": 11}
_OUTLINE = "#1f1f1f"
_TRAIN_GREY = "#c8c8c8"
_CURVE_COLOURS = {"train": "#1f77b4", "val": "#ff7f0e"}
_CURVE_NAMES = {"train": "train", "val": "validation"}


@dataclass(frozen=True)
class PointSet:
    """Projected points and what each one is.

    Attributes:
        coords: projected coordinates, shape ``(n_points, 2)`` or ``(n_points, 3)``.
        labels: class of each point, length ``n_points``.
        roles: role of each point, one of :data:`ROLES`.
        paths: audio file of each point (``""`` for prototypes).
        predicted: predicted class of each query point, ``None`` for the others
            (and for queries that were not classified).

    Raises:
        FslError: when the sequences disagree in length with ``coords``, the
            coordinates are not 2-D or 3-D and finite, or a role is unknown.
    """

    coords: np.ndarray
    labels: Sequence[str]
    roles: Sequence[str]
    paths: Sequence[str]
    predicted: Sequence[str | None]

    def __post_init__(self) -> None:
        coords = np.asarray(self.coords)
        if coords.ndim != 2 or coords.shape[1] not in (2, 3):
            raise FslError(
                f"plot coordinates must have shape (n_points, 2) or (n_points, 3); got "
                f"{coords.shape}. Project the embeddings with dims=2 or dims=3 first."
            )
        if not np.all(np.isfinite(coords)):
            raise FslError("plot coordinates contain NaN or infinity; check the projection input")
        n = coords.shape[0]
        for name in ("labels", "roles", "paths", "predicted"):
            if len(getattr(self, name)) != n:
                raise FslError(
                    f"PointSet.{name} has {len(getattr(self, name))} entries for {n} points; "
                    "give one entry per row of coords"
                )
        unknown = sorted({r for r in self.roles if r not in ROLES})
        if unknown:
            raise FslError(f"unknown point role(s) {unknown}; use one of {', '.join(ROLES)}")


def class_colours(labels: Sequence[str]) -> dict[str, str]:
    """Give every class a colour, in sorted class order.

    Pass the result to :func:`episode_figure` / :func:`embeddings_figure` as
    ``colours=`` to keep a class the same colour across figures that show
    different subsets of classes.

    Args:
        labels: class names (repeats are fine).

    Returns:
        ``{class: "#rrggbb"}``; colours repeat only beyond 36 classes.
    """
    from plotly.colors import qualitative

    palette = list(qualitative.Plotly) + list(qualitative.Alphabet)
    return {c: palette[i % len(palette)] for i, c in enumerate(sorted(set(labels)))}


def episode_figure(points: PointSet, title: str, *, colours: Mapping[str, str] | None = None) -> go.Figure:
    """Scatter an episode's support, query and prototype embeddings.

    Classes are told apart by colour, roles by marker: support circles, query
    diamonds (an ``x`` where the prediction is wrong), prototypes as large stars
    (squares in 3-D) with a dark outline. Hovering shows file, class, role and,
    for queries, the predicted class and whether it was right.

    Args:
        points: the projected points (2-D gives ``Scatter``, 3-D ``Scatter3d``).
        title: figure title.
        colours: ``{class: colour}``; defaults to :func:`class_colours` of the
            classes in ``points``.

    Returns:
        The figure, one trace per ``(role, class)``; see the module docstring.
    """
    return _scatter_figure(points, title, colours, grey_train=False)


def embeddings_figure(points: PointSet, title: str, *, colours: Mapping[str, str] | None = None) -> go.Figure:
    """Scatter every clip's embedding and the class prototypes.

    Points with role ``"train"`` are drawn small and light grey as context (one
    legend entry for all of them); the others are coloured by class.

    Args:
        points: the projected points.
        title: figure title.
        colours: ``{class: colour}``; defaults to :func:`class_colours` of the
            non-train classes in ``points``.

    Returns:
        The figure, one trace per ``(role, class)``; see the module docstring.
    """
    return _scatter_figure(points, title, colours, grey_train=True)


def learning_curves_figure(history: Sequence[Mapping[str, float]]) -> go.Figure:
    """Plot loss and accuracy against training step, for train and validation.

    Args:
        history: logged rows such as ``{"step": 100, "train_loss": 1.2,
            "train_acc": 0.55, "val_loss": 1.4, "val_acc": 0.5}``. Any key may
            be missing from a row; a row without ``"step"`` is placed at its
            index in ``history``.

    Returns:
        A figure with two subplots (loss, accuracy), each with a line for train
        and for validation where those were logged. Each trace's ``meta`` is
        ``{"metric": "<split>_<loss|acc>"}``.

    Raises:
        FslError: when no row has any of the four metrics.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Accuracy"))
    drawn: set[str] = set()
    for col, quantity in ((1, "loss"), (2, "acc")):
        for split in ("train", "val"):
            key = f"{split}_{quantity}"
            steps: list[float] = []
            values: list[float] = []
            for i, row in enumerate(history):
                value = row.get(key)
                if value is None:
                    continue
                steps.append(float(row.get("step", i)))
                values.append(float(value))
            if not values:
                continue
            fig.add_trace(
                go.Scatter(
                    x=steps,
                    y=values,
                    name=_CURVE_NAMES[split],
                    legendgroup=split,
                    showlegend=split not in drawn,
                    mode="lines+markers" if len(values) <= 50 else "lines",
                    line={"color": _CURVE_COLOURS[split], "dash": "solid" if split == "train" else "dash"},
                    meta={"metric": key},
                    hovertemplate=f"{_CURVE_NAMES[split]} {quantity}: %{{y:.4g}}<br>step %{{x}}<extra></extra>",
                ),
                row=1,
                col=col,
            )
            drawn.add(split)
    if not drawn:
        raise FslError(
            f"no learning curves to plot: none of {len(history)} history rows has "
            "train_loss, train_acc, val_loss or val_acc; train for at least one logging interval"
        )
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text="loss", row=1, col=1, rangemode="tozero")
    fig.update_yaxes(title_text="accuracy", row=1, col=2, rangemode="tozero")
    fig.update_layout(title="Learning curves", template="plotly_white", hovermode="x unified")
    return fig


def timeline_figure(
    timelines: Sequence[Timeline],
    events: Sequence[Event],
    classes: Sequence[str],
    band_hz: np.ndarray,
    *,
    colours: Mapping[str, str] | None = None,
) -> go.Figure:
    """Each recording's spectrogram above its detected events, one row per class.

    Args:
        timelines: per recording, its duration and coarse log-mel ``spectrogram``
            ``(n_bands, columns)``, one column every ``spectrogram_step`` seconds (a
            recording without one gets an empty panel).
        events: the detected events; each is drawn as a bar from onset to offset in its
            class's row of its recording's panel, with its times and score on hover.
        classes: the rows, top to bottom.
        band_hz: centre frequency of each spectrogram band, ``(n_bands,)``.
        colours: ``{class: colour}``; defaults to :func:`class_colours` of ``classes``.

    Returns:
        A figure with two rows per recording sharing their time axis. Event traces carry
        ``meta={"class": ..., "recording": ...}`` and one ``customdata`` row
        ``[onset, offset, score]`` per event.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if not timelines:
        raise FslError("no recording to draw a timeline of; detect events in at least one recording")
    colours = dict(colours) if colours is not None else class_colours(classes)
    n = len(timelines)
    titles = [t for tl in timelines for t in (Path(tl.path).name, "")]
    fig = make_subplots(
        rows=2 * n,
        cols=1,
        row_heights=[0.65, 0.35] * n,
        vertical_spacing=min(0.08, 0.3 / n),
        subplot_titles=titles,
    )
    in_legend: set[str] = set()
    for k, tl in enumerate(timelines):
        spec_row, event_row = 2 * k + 1, 2 * k + 2
        if tl.spectrogram is not None and tl.spectrogram.size:
            cols = tl.spectrogram.shape[1]
            fig.add_trace(
                go.Heatmap(
                    z=tl.spectrogram,
                    x=(np.arange(cols) + 0.5) * tl.spectrogram_step,
                    y=np.asarray(band_hz, dtype=np.float64),
                    colorscale="Greys",
                    reversescale=True,
                    showscale=False,
                    hovertemplate="%{x:.2f} s, %{y:.0f} Hz<extra></extra>",
                    name="spectrogram",
                ),
                row=spec_row,
                col=1,
            )
        mine = [e for e in events if Path(e.path) == Path(tl.path)]
        # An invisible point per class, so that a class without events still has its row.
        fig.add_trace(
            go.Scatter(
                x=[0.0] * len(classes),
                y=list(classes),
                mode="markers",
                marker={"opacity": 0},
                hoverinfo="skip",
                showlegend=False,
                meta={"rows": True},
            ),
            row=event_row,
            col=1,
        )
        for label in classes:
            own = [e for e in mine if e.label == label]
            fig.add_trace(
                go.Bar(
                    x=[e.offset - e.onset for e in own],
                    base=[e.onset for e in own],
                    y=[label] * len(own),
                    orientation="h",
                    marker={"color": colours.get(label, _TRAIN_GREY)},
                    name=label,
                    legendgroup=label,
                    showlegend=label not in in_legend,
                    customdata=[[e.onset, e.offset, e.score] for e in own],
                    meta={"class": label, "recording": str(tl.path)},
                    hovertemplate=(
                        f"{label}<br>%{{customdata[0]:.2f}} s to %{{customdata[1]:.2f}} s"
                        "<br>score %{customdata[2]:.2f}<extra></extra>"
                    ),
                ),
                row=event_row,
                col=1,
            )
            in_legend.add(label)
            # Faint spans over the spectrogram too, so events line up with what they are (not
            # for thousands of events: each span is a shape the browser redraws on every zoom).
            for e in own if len(mine) <= MAX_SPANS else ():
                fig.add_vrect(
                    x0=e.onset,
                    x1=e.offset,
                    fillcolor=colours.get(label, _TRAIN_GREY),
                    opacity=0.12,
                    line_width=0,
                    row=spec_row,
                    col=1,
                )
        fig.update_yaxes(type="log", title_text="Hz", row=spec_row, col=1)
        fig.update_yaxes(categoryorder="array", categoryarray=list(classes)[::-1], row=event_row, col=1)
        fig.update_xaxes(range=[0, tl.duration], row=spec_row, col=1)
        fig.update_xaxes(range=[0, tl.duration], matches=f"x{2 * k + 1 if k else ''}", row=event_row, col=1)
        fig.update_xaxes(title_text="time (s)", row=event_row, col=1)
    fig.update_layout(
        title="Detected events",
        template="plotly_white",
        barmode="overlay",
        height=max(450, 420 * n),
        legend={"title": {"text": "class"}},
    )
    return fig


def write_figure(fig: go.Figure, path: Path | str) -> Path:
    """Write a figure to ``path``, the format chosen by its suffix.

    ``.html`` is a self-contained page (plotly.js inlined, opens offline).
    ``.png``, ``.svg`` and ``.pdf`` are rendered by kaleido, which drives a
    Chrome or Chromium found on ``PATH`` or named by ``BROWSER_PATH``; MathJax is
    left out, so rendering never reaches for the network.

    The file is written to a temporary name in the same folder and moved into
    place, so ``path`` is either the complete new file or untouched.

    Args:
        fig: the figure.
        path: where to write; the folder must exist.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        FslError: unsupported suffix, or no usable browser for image export.
        OutputError: the folder is missing or not writable, or ``path`` is a folder.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise FslError(
            f"cannot write a figure to {str(path)!r}: unsupported suffix {path.suffix!r}; "
            f"use one of {', '.join(FORMATS)}"
        )
    parent = path.parent
    if not parent.is_dir():
        raise OutputError(f"cannot write {str(path)!r}: folder {str(parent)!r} does not exist; create it first")
    if path.is_dir():
        raise OutputError(f"cannot write {str(path)!r}: it is a folder; give a file name")

    data = _html_bytes(fig, path.stem) if suffix == ".html" else _image_bytes(fig, suffix[1:], path)
    _write_atomic(path, data)
    return path


# --- scatter figures ---------------------------------------------------------


def _scatter_figure(points: PointSet, title: str, colours: Mapping[str, str] | None, *, grey_train: bool) -> go.Figure:
    """Build the one-trace-per-(role, class) scatter shared by the two point figures."""
    import plotly.graph_objects as go

    coords = np.asarray(points.coords, dtype=np.float64)
    is_3d = coords.shape[1] == 3
    labels = [str(label) for label in points.labels]
    roles = list(points.roles)
    if colours is None:
        colours = class_colours(
            [lab for lab, r in zip(labels, roles, strict=True) if not (grey_train and r == "train")]
        )
    missing = sorted(
        {lab for lab, r in zip(labels, roles, strict=True) if lab not in colours and not (grey_train and r == "train")}
    )
    if missing:
        raise FslError(f"no colour given for class(es) {missing}; add them to colours=")

    groups: dict[tuple[str, str], list[int]] = {}
    for i, key in enumerate(zip(roles, labels, strict=True)):
        groups.setdefault(key, []).append(i)

    fig = go.Figure()
    train_in_legend = False
    # Roles in drawing order (prototypes on top), classes alphabetically.
    for role, label in sorted(groups, key=lambda k: (ROLES.index(k[0]), k[1])):
        # Wrong queries last, so the legend shows the trace's usual marker.
        idx = sorted(groups[role, label], key=lambda i: _is_wrong(points.predicted[i], label))
        grey = grey_train and role == "train"
        trace_kwargs = _trace_style(role, label, idx, points, colours, is_3d, grey)
        if grey:
            trace_kwargs.update(
                name="clips (grey)",
                legendgroup="train",
                legendgrouptitle_text="training classes",
                showlegend=not train_in_legend,
            )
            train_in_legend = True
        xyz = {"x": coords[idx, 0], "y": coords[idx, 1]}
        if is_3d:
            fig.add_trace(go.Scatter3d(z=coords[idx, 2], **xyz, **trace_kwargs))
        else:
            fig.add_trace(go.Scatter(**xyz, **trace_kwargs))

    fig.update_layout(
        title=title,
        template="plotly_white",
        legend={"groupclick": "toggleitem", "itemsizing": "constant"},
    )
    if is_3d:
        fig.update_layout(scene={"xaxis_title": "dim 1", "yaxis_title": "dim 2", "zaxis_title": "dim 3"})
    else:
        # Equal scales: distances in the projection look like distances.
        fig.update_xaxes(title_text="dim 1")
        fig.update_yaxes(title_text="dim 2", scaleanchor="x", scaleratio=1)
    return fig


def _trace_style(
    role: str,
    label: str,
    idx: list[int],
    points: PointSet,
    colours: Mapping[str, str],
    is_3d: bool,
    grey: bool,
) -> dict:
    """Keyword arguments (everything but coordinates) of one (role, class) trace."""
    rows: list[list[str]] = []
    hover: list[str] = []
    symbols: list[str] = []
    base_symbol = (_SYMBOLS_3D if is_3d else _SYMBOLS_2D)[role]
    for i in idx:
        path = str(points.paths[i])
        predicted = points.predicted[i]
        correct = "" if predicted is None else ("wrong" if _is_wrong(predicted, label) else "right")
        rows.append([path, label, role, "" if predicted is None else str(predicted), correct])
        text = f"<b>{label}</b><br>role: {role}"
        if path:
            text += f"<br>file: {path}"
        if predicted is not None:
            text += f"<br>predicted: {predicted} ({correct})"
        hover.append(text)
        symbols.append(_WRONG_QUERY_SYMBOL if correct == "wrong" else base_symbol)

    size = (_SIZES_3D if is_3d else _SIZES_2D)[role]
    colour = _TRAIN_GREY if grey else colours[label]
    if role == "prototype":
        line = {"color": _OUTLINE, "width": 2}
    elif grey:
        line = {"width": 0}
    else:
        line = {"color": "white", "width": 0.5}
    marker = {"color": colour, "size": size, "symbol": symbols, "line": line, "opacity": 0.6 if grey else 0.9}
    return {
        "mode": "markers",
        "name": role,
        "legendgroup": label,
        "legendgrouptitle_text": label,
        "marker": marker,
        "customdata": rows,
        "hovertext": hover,
        "hovertemplate": "%{hovertext}<extra></extra>",
        "meta": {"role": role, "class": label, "customdata": list(CUSTOMDATA_FIELDS)},
    }


def _is_wrong(predicted: str | None, label: str) -> bool:
    """Whether a point has a prediction and it is not its class."""
    return predicted is not None and str(predicted) != label


# --- writing -------------------------------------------------------------------


def _html_bytes(fig: go.Figure, name: str) -> bytes:
    """A self-contained HTML page: plotly.js inlined, no CDN, no MathJax."""
    html = fig.to_html(
        include_plotlyjs=True,
        include_mathjax=False,
        full_html=True,
        config={"displaylogo": False, "toImageButtonOptions": {"filename": name}},
    )
    return html.encode("utf-8")


def _image_bytes(fig: go.Figure, fmt: str, path: Path) -> bytes:
    """Render a static image with kaleido, turning a missing browser into an FslError."""
    try:
        import kaleido
        from choreographer.errors import BrowserFailedError, ChromeNotFoundError
    except ImportError:
        raise FslError(
            f"writing {str(path)!r} needs kaleido for image export: pip install 'kaleido>=1', or write .html instead"
        ) from None
    import plotly.io as pio

    width = fig.layout.width or pio.defaults.default_width
    height = fig.layout.height or pio.defaults.default_height
    browser = os.environ.get("BROWSER_PATH")
    where = f"BROWSER_PATH={browser!r}" if browser else "PATH"
    try:
        # kaleido directly rather than fig.to_image: plotly cannot switch off
        # kaleido's default MathJax script, which is fetched from a CDN.
        return kaleido.calc_fig_sync(
            fig.to_dict(),
            opts={"format": fmt, "width": width, "height": height, "scale": 1},
            kopts={"mathjax": False},
        )
    except ChromeNotFoundError:
        raise FslError(
            f"writing {str(path)!r} needs Chrome or Chromium and none was found on {where}; "
            "install one (Debian/Ubuntu: apt-get install -y chromium), set BROWSER_PATH to "
            "its executable, or write .html instead"
        ) from None
    except BrowserFailedError as err:
        raise FslError(
            f"writing {str(path)!r}: the browser found on {where} failed to start "
            f"({type(err).__name__}); install a working Chromium (apt-get install -y chromium), "
            "set BROWSER_PATH to it, or write .html instead"
        ) from None


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``."""
    atomic_write(path, lambda f: f.write(data))
