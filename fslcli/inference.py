"""Predictions for your own recordings: classes given by a few examples each.

Support and query files are embedded as :mod:`fslcli.embedding` says (every window across a
file by default) and compared as :mod:`fslcli.scoring` compares an episode.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fslcli.atomic import atomic_write
from fslcli.datasets.base import AUDIO_EXTENSIONS
from fslcli.embedding import ALL, Windows, embed_files
from fslcli.errors import DataError, FslError
from fslcli.model import ProtoNet
from fslcli.scoring import compare


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


def support_set(support_dir: Path, min_classes: int = 2) -> tuple[list[Path], list[str]]:
    """Files and labels of a support folder (one subfolder per class), with audio in at least
    ``min_classes`` subfolders (``fsl detect`` needs one: its background comes from the recording)."""
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
    if len(set(labels)) < min_classes:
        raise DataError(
            f"--support {support_dir} needs at least {min_classes} class subfolder{'s' if min_classes > 1 else ''} "
            f"with audio, found {len(set(labels))}; put each class's examples in its own subfolder"
        )
    return files, labels


def calibrate_threshold(emb: torch.Tensor, labels: Sequence[str]) -> float:
    """Leave-one-out rejection threshold on the support set ``emb`` ``(n, dim)`` (in the
    comparison space).

    Each support clip (of a class with at least two) is scored against its class prototype
    computed without it; the threshold is the largest such squared distance, so every held-out
    support example would be accepted.
    """
    lab = np.asarray(labels)
    dists = []
    for k in range(len(lab)):
        same = np.flatnonzero((lab == lab[k]) & (np.arange(len(lab)) != k))
        if len(same) == 0:
            continue
        dists.append(float(-ProtoNet.logits(emb[k : k + 1], emb[same].mean(dim=0, keepdim=True))[0, 0]))
    if not dists:
        raise DataError("--reject needs a class with at least 2 support recordings to calibrate its threshold")
    return float(np.max(dists))


@torch.no_grad()
def predict(
    net: ProtoNet,
    support_dir: Path,
    queries: Sequence[Path],
    *,
    top_k: int = 2,
    reject: bool = False,
    windows: Windows = ALL,
    device: torch.device | str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> PredictResult:
    """Classify query recordings against prototypes built from a support folder."""
    files, labels = support_set(support_dir)
    sup = embed_files(net, files, windows=windows, device=device, progress=progress)
    qry = embed_files(net, collect_audio(queries), windows=windows, device=device, progress=progress)
    lab_of = dict(zip(files, labels, strict=True))
    sup_labels = [lab_of[p] for p in sup.paths]
    classes = sorted(set(sup_labels))
    if len(classes) < 2:
        raise DataError(f"--support {support_dir}: fewer than 2 classes have decodable audio")
    class_idx = torch.as_tensor([classes.index(lbl) for lbl in sup_labels])
    scored = compare(net, torch.from_numpy(sup.embeddings), class_idx, torch.from_numpy(qry.embeddings), len(classes))
    threshold = calibrate_threshold(scored.support, sup_labels) if reject else None
    probs = torch.softmax(scored.logits, dim=-1)
    roots = [Path(q) for q in queries if Path(q).is_dir()]
    out = []
    for row, path in enumerate(qry.paths):
        order = torch.argsort(probs[row], descending=True).tolist()
        dist = float(-scored.logits[row, order[0]])
        out.append(
            Prediction(
                path=path,
                predicted="unknown" if threshold is not None and dist > threshold else classes[order[0]],
                probability=float(probs[row, order[0]]),
                runner_up=classes[order[1]],
                runner_up_probability=float(probs[row, order[1]]),
                top_k=[(classes[i], float(probs[row, i])) for i in order[: max(1, top_k)]],
                distance=dist,
                true_class=_true_class(path, roots, set(classes)) if path not in lab_of else None,
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


#: Formats ``fsl embed --out`` writes, by suffix.
EMBEDDING_FORMATS: tuple[str, ...] = (".npz", ".csv", ".parquet")


def check_embeddings_path(path: Path) -> None:
    """Refuse an output whose suffix names no format, before any work."""
    if Path(path).suffix.lower() not in EMBEDDING_FORMATS:
        raise FslError(
            f"--out {path}: unknown format {Path(path).suffix or '(none)'}; use {', '.join(EMBEDDING_FORMATS)}"
        )


def write_embeddings(path: Path, embeddings: np.ndarray, paths: list[str], labels: list[str]) -> None:
    """Write embeddings by suffix, atomically.

    ``.npz``: arrays ``embeddings``, ``paths`` and ``labels`` (strings; no object arrays).
    ``.csv`` and ``.parquet`` (needs pyarrow): columns ``path``, ``label``, ``e0``..``eN``.
    """
    path = Path(path)
    check_embeddings_path(path)
    suffix = path.suffix.lower()
    cols = [f"e{k}" for k in range(embeddings.shape[1])]
    if suffix == ".npz":
        arrays = {
            "embeddings": embeddings.astype(np.float32),
            "paths": np.asarray(paths, dtype=str),
            "labels": np.asarray(labels, dtype=str),
        }
        atomic_write(path, lambda f: np.savez(f, **arrays))
    elif suffix == ".csv":
        import csv
        import io

        def write_csv(f) -> None:
            text = io.TextIOWrapper(f, encoding="utf-8", newline="")
            w = csv.writer(text)
            w.writerow(["path", "label", *cols])
            for p, lab, row in zip(paths, labels, embeddings, strict=True):
                w.writerow([p, lab, *(f"{v:.7g}" for v in row)])
            text.flush()
            text.detach()

        atomic_write(path, write_csv)
    elif suffix == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise FslError("parquet output needs pyarrow: pip install 'fslcli[parquet]'") from None
        table = pa.table({"path": paths, "label": labels, **{c: embeddings[:, k] for k, c in enumerate(cols)}})
        atomic_write(path, lambda f: pq.write_table(table, f))
