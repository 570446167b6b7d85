"""Embeddings and predictions for your own recordings.

Recordings of any length: longer than the model's excerpt, they are embedded over
sliding windows (half-excerpt hop) and averaged; shorter ones are zero-padded. With
``windows=N``, a recording is embedded as ``fsl eval`` embeds a clip instead: from N
windows, the first at its onset (suits single notes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fslcli.datasets.base import AUDIO_EXTENSIONS
from fslcli.errors import DataError
from fslcli.evaluation import clip_window_starts, embed_windows
from fslcli.features import DecodeError, decode_audio
from fslcli.model import ProtoNet

#: At most this many windows per recording (evenly spaced), so an hour-long file stays cheap.
MAX_WINDOWS = 32


def collect_audio(inputs: Sequence[Path]) -> list[Path]:
    """Files given directly, plus audio files found (recursively) in folders given."""
    out: list[Path] = []
    for p in inputs:
        p = Path(p)
        if p.is_dir():
            out.extend(
                sorted(
                    f
                    for f in p.rglob("*")
                    if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS and not f.name.startswith(".")
                )
            )
        elif p.is_file():
            out.append(p)
        else:
            raise DataError(f"{p} does not exist; give audio files or folders")
    if not out:
        raise DataError(f"no audio files found in {', '.join(str(p) for p in inputs)}")
    return out


def sliding_windows(audio: np.ndarray, excerpt: int, max_windows: int = MAX_WINDOWS) -> np.ndarray:
    """``(n_windows, excerpt)`` windows with half-excerpt hop; short audio is zero-padded."""
    n = len(audio)
    if n <= excerpt:
        out = np.zeros((1, excerpt), dtype=np.float32)
        out[0, :n] = audio
        return out
    hop = max(1, excerpt // 2)
    starts = list(range(0, n - excerpt + 1, hop))
    if starts[-1] != n - excerpt:
        starts.append(n - excerpt)
    if len(starts) > max_windows:
        starts = [starts[int(round(k))] for k in np.linspace(0, len(starts) - 1, max_windows)]
    return np.stack([audio[s : s + excerpt] for s in starts]).astype(np.float32)


def onset_windows(audio: np.ndarray, excerpt: int, n_windows: int, sample_rate: int) -> np.ndarray:
    """``(k, excerpt)`` windows as ``fsl eval`` takes them (k <= ``n_windows``): the first at the
    onset, the rest spread to the end; short audio is zero-padded."""
    if len(audio) <= excerpt:
        return sliding_windows(audio, excerpt)
    starts = clip_window_starts(audio, excerpt, n_windows, sample_rate)
    return np.stack([audio[s : s + excerpt] for s in starts]).astype(np.float32)


@dataclass(frozen=True)
class Embedded:
    """Embeddings ``(n, dim)`` of the files that decoded, and those skipped with reasons."""

    embeddings: np.ndarray
    paths: list[Path]
    skipped: list[tuple[Path, str]]


def embed_files(
    net: ProtoNet,
    paths: Sequence[Path],
    device: torch.device | str = "cpu",
    batch_size: int = 128,
    progress: Callable[[int, int], None] | None = None,
    windows: int | None = None,
    finish: bool = True,
) -> Embedded:
    """Decode each file once and embed it, in batches: the mean over its sliding windows, or
    with ``windows``, over that many windows from its onset (:func:`onset_windows`).
    ``finish=False`` keeps the backbone embeddings (see :func:`embed_windows`)."""
    sr, excerpt = net.audio.sample_rate, net.audio.excerpt_samples
    kept: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    chunks: list[np.ndarray] = []
    buf_w: list[np.ndarray] = []
    buf_o: list[int] = []

    def flush() -> None:
        if buf_w:
            wins = np.concatenate(buf_w)
            owners = np.asarray(buf_o) - buf_o[0]
            n_items = int(owners.max()) + 1
            chunks.append(embed_windows(net, wins, owners, n_items, batch_size, device, finish=finish).numpy())
            buf_w.clear()
            buf_o.clear()

    n_windows_in_buf = 0
    for done, path in enumerate(paths, start=1):
        try:
            audio = decode_audio(path, sr)
        except DecodeError as exc:
            skipped.append((Path(path), str(exc)))
            continue
        except OSError as exc:
            skipped.append((Path(path), f"cannot read ({exc.strerror or exc})"))
            continue
        wins = sliding_windows(audio, excerpt) if windows is None else onset_windows(audio, excerpt, windows, sr)
        buf_w.append(wins)
        buf_o.extend([len(kept)] * len(wins))
        kept.append(Path(path))
        n_windows_in_buf += len(wins)
        if n_windows_in_buf >= batch_size * 4:
            flush()
            n_windows_in_buf = 0
        if progress is not None:
            progress(done, len(paths))
    flush()
    emb = np.concatenate(chunks) if chunks else np.zeros((0, net.dim), dtype=np.float32)
    return Embedded(emb.astype(np.float32), kept, skipped)


@dataclass(frozen=True)
class Prediction:
    path: Path
    predicted: str
    probability: float
    runner_up: str | None
    runner_up_probability: float | None
    top_k: list[tuple[str, float]]
    distance: float
    true_class: str | None


@dataclass(frozen=True)
class PredictResult:
    classes: list[str]
    predictions: list[Prediction]
    skipped: list[tuple[Path, str]]
    threshold: float | None


def support_set(support_dir: Path) -> tuple[list[Path], list[str]]:
    """Files and labels of a support folder (one subfolder per class)."""
    support_dir = Path(support_dir)
    if not support_dir.is_dir():
        raise DataError(
            f"--support {support_dir} is not a folder; give a folder with one subfolder of examples per class"
        )
    files, labels = [], []
    for d in sorted(p for p in support_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found = collect_audio([d]) if any(d.iterdir()) else []
        files.extend(found)
        labels.extend([d.name] * len(found))
    if len(set(labels)) < 2:
        raise DataError(
            f"--support {support_dir} needs at least 2 class subfolders with audio, found {len(set(labels))}; "
            "put each class's examples in its own subfolder"
        )
    return files, labels


def calibrate_threshold(net: ProtoNet, emb: torch.Tensor, labels: Sequence[str]) -> float:
    """Leave-one-out rejection threshold on the support set.

    Each support clip (of a class with at least two) is scored against its class prototype
    computed without it; the threshold is the largest such distance (in the model's
    distance, as a negative logit), so every held-out support example would be accepted.
    """
    lab = np.asarray(labels)
    dists = []
    for k in range(len(lab)):
        same = np.flatnonzero((lab == lab[k]) & (np.arange(len(lab)) != k))
        if len(same) == 0:
            continue
        proto = emb[same].mean(dim=0, keepdim=True)
        dists.append(float(-net.logits(emb[k : k + 1], proto)[0, 0]))
    if not dists:
        raise DataError("--reject needs a class with at least 2 support recordings to calibrate its threshold")
    return float(np.max(dists))


@torch.no_grad()
def predict(
    net: ProtoNet,
    support_dir: Path,
    queries: Sequence[Path],
    top_k: int = 2,
    reject: bool = False,
    device: torch.device | str = "cpu",
    progress: Callable[[int, int], None] | None = None,
    windows: int | None = None,
) -> PredictResult:
    """Classify query recordings against prototypes built from a support folder (``windows``:
    see :func:`embed_files`)."""
    files, labels = support_set(support_dir)
    query_files = collect_audio(queries)
    sup = embed_files(net, files, device=device, progress=progress, windows=windows, finish=False)
    lab_of = dict(zip(files, labels, strict=True))
    sup_labels = [lab_of[p] for p in sup.paths]
    classes = sorted(set(sup_labels))
    if len(classes) < 2:
        raise DataError(f"--support {support_dir}: fewer than 2 classes have decodable audio")
    qry = embed_files(net, query_files, device=device, progress=progress, windows=windows, finish=False)
    # The support set and queries in the space the model compares them in (which may adapt to the support set).
    class_idx = torch.as_tensor([classes.index(lbl) for lbl in sup_labels])
    s_emb, q_emb = net.finish_episode(torch.from_numpy(sup.embeddings), torch.from_numpy(qry.embeddings), class_idx)
    protos = torch.stack([s_emb[class_idx == k].mean(0) for k in range(len(classes))])
    threshold = calibrate_threshold(net, s_emb, sup_labels) if reject else None
    logits = net.logits(q_emb, protos) if len(q_emb) else torch.zeros(0, len(classes))
    probs = torch.softmax(logits, dim=-1)
    query_roots = [Path(q) for q in queries if Path(q).is_dir()]
    out = []
    for row, path in enumerate(qry.paths):
        order = torch.argsort(probs[row], descending=True).tolist()
        best = order[0]
        dist = float(-logits[row, best])
        predicted = classes[best]
        if threshold is not None and dist > threshold:
            predicted = "unknown"
        true = _true_class(path, query_roots, set(classes)) if path not in lab_of else None
        out.append(
            Prediction(
                path=path,
                predicted=predicted,
                probability=float(probs[row, best]),
                runner_up=classes[order[1]] if len(order) > 1 else None,
                runner_up_probability=float(probs[row, order[1]]) if len(order) > 1 else None,
                top_k=[(classes[i], float(probs[row, i])) for i in order[: max(1, top_k)]],
                distance=dist,
                true_class=true,
            )
        )
    return PredictResult(classes, out, sup.skipped + qry.skipped, threshold)


def _true_class(path: Path, roots: Sequence[Path], classes: set[str]) -> str | None:
    """The class a query folder names: the first subfolder under a query root, if it is a support class."""
    for root in roots:
        try:
            rel = path.relative_to(root)
        except ValueError:
            continue
        if len(rel.parts) > 1 and rel.parts[0] in classes:
            return rel.parts[0]
    return None
