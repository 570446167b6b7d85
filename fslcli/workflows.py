"""The operations behind each command: one call per command, typed results, no printing.

The CLI parses options, calls one function here and renders what comes back.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fslcli.atomic import atomic_write
from fslcli.config import EpisodeConfig, RunConfig, SplitConfig
from fslcli.datasets import DataSource, load_clips
from fslcli.errors import DataError, FslError
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
    sample_rate: int,
    cache_dir: Path | None,
    progress: Progress | None = None,
    adapt_split: bool = False,
) -> Prepared:
    """Read a source, open (or build) its cache, and make the class pools.

    ``adapt_split``: for data whose classes are not TinySOL's, derive a default split
    (see :func:`fslcli.splits.default_split_for`).
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
    split, left_out = resolve_split(split, cache.labels(), shared_pairs_of(source))
    notices = read.notices
    if left_out and split.train_classes:
        notices += (
            f"{len(left_out)} class(es) left out of training because they share recordings with test or "
            f"validation classes: {', '.join(left_out)}",
        )
    pools = make_pools(cache.clips, split)
    return Prepared(source, cache, pools, split, skipped, built, notices)


def shared_pairs_of(source: DataSource) -> list[Any]:
    """The instruments of a render that share recordings (none for other data)."""
    from fslcli.datasets.provenance import read_shared_pairs

    found = read_shared_pairs(source.path) if source.kind != "folder" else None
    return found[1] if found else []


def soundfont_of(source: DataSource) -> str | None:
    """The sha256 of the SoundFont an offline render was made from, or None (other data)."""
    from fslcli.datasets.provenance import read_shared_pairs

    found = read_shared_pairs(source.path) if source.kind != "folder" else None
    return found[0] if found else None


def shared_sample_warning(
    source: DataSource, model_source: DataSource, model_meta: dict[str, Any], train: list[str], test: list[str]
) -> str | None:
    """A line naming the test classes that share recordings with training classes, when a model is
    evaluated on the SoundFont render it was trained on (elsewhere they are independent), else None."""
    from fslcli.datasets.provenance import leaks, read_shared_pairs

    found = read_shared_pairs(source.path) if source.kind != "folder" else None
    if not found:
        return None
    font, pairs = found
    trained_font = model_meta.get("soundfont_sha256")
    same = (font is not None and font == trained_font) or (trained_font is None and source == model_source)
    shared = leaks(pairs, train, test) if same else []
    if not shared:
        return None
    roles = {**{c: "test" for c in test}, **{c: "train" for c in train}}
    return (
        f"in this font {'; '.join(p.describe(roles) for p in shared)}: the model heard those recordings in "
        "training, so these test figures are optimistic"
    )


# --- train -----------------------------------------------------------------------------


def check_run_dir(run_dir: Path, force: bool) -> None:
    """Refuse a non-empty run folder unless ``force``."""
    if run_dir.exists() and not run_dir.is_dir():
        raise FslError(f"--out {run_dir} is a file; give a folder for the run")
    if run_dir.is_dir() and any(run_dir.iterdir()) and not force:
        raise FslError(
            f"--out {run_dir} is not empty; pass --force to write into it, or --resume {run_dir} to continue it"
        )
    # The nearest existing ancestor must be a folder, or creating the run folder fails late.
    ancestor = next((p for p in Path(run_dir).absolute().parents if p.exists()), None)
    if ancestor is not None and not ancestor.is_dir():
        raise FslError(f"--out {run_dir}: {ancestor} is a file, so no folder can be made there; choose another --out")


def save_run_file(run_dir: Path, config: RunConfig, source: DataSource) -> None:
    payload = {"settings": config.to_dict(), "source": source.to_dict()}
    (run_dir / "run.json").write_text(json.dumps(payload, indent=2), encoding="utf-8")


def load_run_file(run_dir: Path) -> tuple[RunConfig, DataSource]:
    path = Path(run_dir) / "run.json"
    if not path.is_file():
        raise FslError(f"--resume {run_dir}: no run.json there; give the folder of a run started with `fsl train`")
    data = json.loads(path.read_text(encoding="utf-8"))
    return RunConfig.from_dict(data["settings"]), DataSource.from_dict(data["source"])


# --- eval ------------------------------------------------------------------------------


def device_for(accelerator: str = "auto") -> str:
    import torch

    if accelerator in ("auto", "cuda", "gpu") and torch.cuda.is_available():
        return "cuda"
    if (
        accelerator in ("auto", "mps")
        and getattr(torch.backends, "mps", None) is not None
        and torch.backends.mps.is_available()
    ):
        return "mps"
    return "cpu"


def eval_summary(
    result: Any, cfg: EpisodeConfig, seed: int, loaded: Any, source: DataSource, n_windows: int, group_by: str
) -> dict[str, Any]:
    """The JSON object of ``fsl eval --json``."""
    return {
        "mean_accuracy": result.mean_accuracy,
        "ci95_half_width": result.ci95_half_width,
        "episodes": result.episodes,
        "settings": {
            "ways": cfg.ways,
            "shots": cfg.shots,
            "queries": cfg.queries,
            "seed": seed,
            "group_by": group_by,
            "eval_windows": n_windows,
            "eval_shifts": loaded.net.config.eval_shifts,
            "eval_pitch_shifts": list(loaded.net.config.eval_pitch_shifts),
            "support_cov_weight": loaded.net.config.support_cov_weight,
            "dataset": source.to_dict(),
            "test_classes": result.classes,
        },
        "checkpoint": {"path": str(loaded.path), "sha256": loaded.sha256},
        "per_class": result.per_class,
        "confusion": {"classes": result.classes, "matrix": result.confusion.tolist()},
        "clips_embedded": result.clips_embedded,
    }


def write_npz_atomic(path: Path, **arrays: np.ndarray) -> None:
    """``np.savez`` to a temporary file then rename; no partial file under the final name."""
    atomic_write(path, lambda f: np.savez(f, **arrays))


def write_embeddings(path: Path, embeddings: np.ndarray, paths: list[str], labels: list[str]) -> None:
    """Write embeddings by suffix, atomically.

    ``.npz``: arrays ``embeddings``, ``paths`` and ``labels`` (strings; no object arrays).
    ``.csv`` and ``.parquet`` (needs pyarrow): columns ``path``, ``label``, ``e0``..``eN``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    cols = [f"e{k}" for k in range(embeddings.shape[1])]
    if suffix == ".npz":
        write_npz_atomic(
            path,
            embeddings=embeddings.astype(np.float32),
            paths=np.asarray(paths, dtype=str),
            labels=np.asarray(labels, dtype=str),
        )
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
    else:
        raise FslError(f"--out {path}: unknown format {suffix or '(none)'}; use .npz, .csv or .parquet")
