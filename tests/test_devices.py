"""Which torch device a command runs on."""

from __future__ import annotations

import pytest
import torch

from fslcli.devices import ACCELERATORS, device_for


def test_one_spelling_per_device() -> None:
    assert ACCELERATORS == ("auto", "cpu", "cuda", "mps")


def test_cpu_is_always_the_cpu() -> None:
    assert device_for("cpu") == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_asked_for_but_absent_falls_back_to_the_cpu() -> None:
    assert device_for("cuda") == "cpu"
    mps = getattr(torch.backends, "mps", None)
    assert device_for("auto") == ("mps" if mps is not None and mps.is_available() else "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_cuda_is_picked_when_present() -> None:
    assert device_for("auto") == device_for("cuda") == "cuda"
