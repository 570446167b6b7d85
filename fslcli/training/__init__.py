"""Episodic training: augmentation, the episode dataset, validation and calibration, the
LightningModule, and :func:`fit`, which runs them."""

from fslcli.training.fit import FitResult, fit, preflight, quiet_lightning, read_history

__all__ = ["FitResult", "fit", "preflight", "quiet_lightning", "read_history"]
