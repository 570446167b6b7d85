"""Which torch device a command runs on."""

from __future__ import annotations

#: ``--accelerator`` choices: one spelling per device.
ACCELERATORS: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")


def device_for(accelerator: str = "auto") -> str:
    """The torch device an accelerator setting means here: CUDA or MPS where asked and present, else CPU."""
    import torch

    if accelerator in ("auto", "cuda") and torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if accelerator in ("auto", "mps") and mps is not None and mps.is_available():
        return "mps"
    return "cpu"
