"""Models that ship inside the package (``<name>.pt``), used when a command is given no MODEL
and there is no run of the user's own. ``make pretrained`` rebuilds them from scratch; each file
records its recipe (data, seed, steps, fslcli commit) and its figures on held-out libraries."""

from __future__ import annotations

from pathlib import Path

#: The folder of the bundled model files.
FOLDER = Path(__file__).parent
#: The model used when no MODEL is given and there is no run.
DEFAULT = "default"


def bundled() -> list[Path]:
    """The bundled model files, by name."""
    return sorted(FOLDER.glob("*.pt"))


def bundled_model(name: str = DEFAULT) -> Path | None:
    """The bundled model ``name``, or None when this installation has none."""
    path = FOLDER / f"{name}.pt"
    return path if path.is_file() else None
