"""Data sources. Every source yields the same :class:`~fslcli.datasets.base.Clip` records.

- ``tinysol``: the real TinySOL, read through mirdata's loader;
- ``tinysol-gm``: the offline set rendered from a General MIDI SoundFont, same layout;
- ``folder``: your own data, one subfolder per class.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fslcli.datasets.base import Clip, default_data_home
from fslcli.errors import DataError

DATASETS: tuple[str, ...] = ("tinysol", "tinysol-gm")
DEFAULT_DATASET = "tinysol-gm"


@dataclass(frozen=True)
class DataSource:
    """Where clips come from: a named dataset and its home, or a class-per-folder directory."""

    kind: str
    path: Path

    def describe(self) -> str:
        if self.kind == "folder":
            return f"folder {self.path}"
        return f"{self.kind} at {self.path}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": str(self.path)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataSource:
        """Rebuild from :meth:`to_dict`; a named dataset recorded without a path (a bundled model's)
        lives in its default home on this machine."""
        if data.get("path") is None and data["kind"] in DATASETS:
            return cls(kind=str(data["kind"]), path=default_data_home(str(data["kind"])))
        return cls(kind=str(data["kind"]), path=Path(str(data["path"])))


def resolve_source(
    dataset: str | None,
    data_home: Path | None,
    data_dir: Path | None,
    fallback: DataSource | None = None,
) -> DataSource:
    """Turn ``--dataset/--data-home/--data-dir`` into a source.

    With none given, ``fallback`` (the source recorded in a model) or the default offline
    dataset is used.
    """
    if data_dir is not None:
        if dataset is not None or data_home is not None:
            raise DataError("--data-dir is your own folder; give it alone, without --dataset or --data-home")
        return DataSource("folder", Path(data_dir).expanduser())
    if dataset is None and data_home is None and fallback is not None:
        return fallback
    name = dataset or (fallback.kind if fallback is not None and fallback.kind in DATASETS else DEFAULT_DATASET)
    if name not in DATASETS:
        raise DataError(f"--dataset {name!r} is unknown; choose one of {', '.join(DATASETS)} (or --data-dir DIR)")
    home = Path(data_home).expanduser() if data_home is not None else default_data_home(name)
    return DataSource(name, home)


def load_clips(source: DataSource):  # -> ReadResult
    """Read a source's clips (sorted by path) and the files it skipped, with reasons."""
    if source.kind == "folder":
        from fslcli.datasets.folder import read_folder

        return read_folder(source.path)
    if source.kind in DATASETS:
        from fslcli.datasets.tinysol import read_tinysol

        try:
            return read_tinysol(source.path)
        except DataError as exc:
            if source.kind == "tinysol-gm":
                # The reader names the real dataset's command; the rendered set has its own.
                reason = str(exc).split(". ")[0].rstrip(".").replace("TinySOL data home", "data home")
                raise DataError(
                    f"No rendered dataset in {source.path} ({reason}): run `fsl download tinysol-gm --data-home "
                    f"{source.path}` (offline, about a minute)"
                ) from None
            raise
    raise DataError(f"unknown data source kind {source.kind!r}")


__all__ = ["Clip", "DataSource", "DATASETS", "DEFAULT_DATASET", "resolve_source", "load_clips"]
