"""Fit: check what a run needs, train with a Lightning Trainer, keep the best checkpoint by
validation accuracy and write ``run_dir/model.pt``, ``history.jsonl`` and the learning curves.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fslcli.config import RunConfig
from fslcli.datasets import DataSource
from fslcli.devices import device_for
from fslcli.episodes import Pool, check_pool
from fslcli.errors import FslError
from fslcli.features import WaveCache
from fslcli.training.module import ProtoLit, build_net, train_episode_config
from fslcli.training.validation import make_val_data, split_val_config, val_episode_config

HISTORY_FILE = "history.jsonl"
OPTIMIZERS: tuple[str, ...] = ("adamw", "adam")
PRECISIONS: tuple[str, ...] = ("32", "16-mixed", "bf16-mixed")
#: Lightning's warnings that do not concern the user.
_QUIET = (
    ".*does not have many workers.*",
    ".*litlogger.*",
    ".*weights_only.*",
    ".*LeafSpec.*",
    ".*TensorBoard.*",
    ".*tensorboardX.*",
    ".*The number of training batches.*",
    ".*Checkpoint directory.*exists and is not empty.*",
    ".*You're resuming from a checkpoint that ended.*",
    ".*Precision.*is not supported by the model summary.*",
    ".*GPU available but not used.*",
    ".*TPU available but not used.*",
    ".*srun.*",
    ".*Trying to infer the `batch_size`.*",
)


def quiet_lightning() -> None:
    """Silence Lightning's tips, adverts and warnings that do not concern the user (call it after
    importing Lightning too: its ``__init__`` resets its loggers to INFO)."""
    os.environ.setdefault("POSSIBLE_USER_WARNINGS", "off")
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for pattern in _QUIET:
        warnings.filterwarnings("ignore", message=pattern)


@dataclass(frozen=True)
class FitResult:
    run_dir: Path
    model_path: Path | None
    best_val_acc: float | None
    best_step: int | None
    seconds: float
    steps: int
    is_global_zero: bool


def resolve_accelerator(accelerator: str, precision: str) -> str:
    """Check the precision can run on the chosen device; returns the device Lightning will use."""
    acc = device_for("auto") if accelerator == "auto" else accelerator
    if acc == "cuda" and not torch.cuda.is_available():
        raise FslError(f"--accelerator {accelerator}: no CUDA GPU is visible; use --accelerator cpu or auto")
    if acc == "mps" and device_for("mps") != "mps":
        raise FslError("--accelerator mps: Apple's MPS is not available here; use --accelerator cpu or auto")
    if precision not in PRECISIONS:
        raise FslError(f"--precision {precision!r} is unknown; choose one of {', '.join(PRECISIONS)}")
    if precision == "16-mixed" and acc == "cpu":
        raise FslError("--precision 16-mixed needs a CUDA or MPS GPU; on the CPU use 32 or bf16-mixed")
    if precision == "bf16-mixed" and acc == "cuda" and not torch.cuda.is_bf16_supported():
        raise FslError("--precision bf16-mixed: this GPU has no bfloat16 support; use 16-mixed or 32")
    return acc


def preflight(config: RunConfig, train_pool: Pool, val_pool: Pool, *, groups: np.ndarray | None = None) -> str:
    """Refuse what training could not do (optimizer, device, precision, episode shapes) before
    any work starts; returns the device Lightning will use."""
    if config.train.optimizer not in OPTIMIZERS:
        raise FslError(f"optimizer {config.train.optimizer!r} is unknown; choose one of {', '.join(OPTIMIZERS)}")
    accelerator = resolve_accelerator(config.train.accelerator, config.train.precision)
    if len(train_pool) < 2:
        raise FslError(
            f"training needs at least 2 classes; found {len(train_pool)} ({', '.join(train_pool) or 'none'}); "
            "add classes or change --train-classes"
        )
    check_pool(train_pool, train_episode_config(config, len(train_pool)), what="training episodes")
    if config.split.val_classes:
        val_episode_config(val_pool, groups)
    else:
        split_val_config(train_pool, val_pool)
    return accelerator


def _checkpoints(ckpt_dir: Path) -> tuple[Any, Any]:
    """The best checkpoint by validation (``best.ckpt``) and the last one (``last.ckpt``, for resuming).

    Both are saved at validation end: saved at train-epoch end, a run resumed "on epoch end"
    counts that block twice and stops one block early. ``last`` is its own unmonitored callback:
    Lightning >= 2.6 refreshes a monitored callback's last checkpoint only when it improves.
    """
    from pytorch_lightning.callbacks import ModelCheckpoint

    common = {"dirpath": ckpt_dir, "save_top_k": 1, "enable_version_counter": False, "save_on_train_epoch_end": False}
    best = ModelCheckpoint(filename="best", monitor="val_select", mode="max", **common)
    return best, ModelCheckpoint(filename="last", monitor=None, **common)


def _trainer(config: RunConfig, run_dir: Path, accelerator: str, callbacks: list[Any]) -> Any:
    import pytorch_lightning as pl
    from pytorch_lightning.loggers import TensorBoardLogger

    tc = config.train
    strategy: Any = "auto"
    if tc.devices * tc.num_nodes > 1:
        from pytorch_lightning.strategies import DDPStrategy

        strategy = DDPStrategy(process_group_backend="gloo") if accelerator == "cpu" else "ddp"
    return pl.Trainer(
        accelerator=accelerator,
        devices=tc.devices,
        num_nodes=tc.num_nodes,
        strategy=strategy,
        precision=tc.precision,
        # No max_steps: the block sampler ends the last (possibly shorter) block exactly at
        # tc.steps, so that block is validated like the others.
        max_steps=-1,
        max_epochs=math.ceil(tc.steps / tc.val_every),
        check_val_every_n_epoch=1,
        num_sanity_val_steps=0,
        logger=TensorBoardLogger(str(run_dir), name="tensorboard", version="", default_hp_metric=False),
        log_every_n_steps=max(1, min(10, tc.val_every // 5)),
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        deterministic=False,
        benchmark=False,
        default_root_dir=str(run_dir),
    )


def fit(
    config: RunConfig,
    cache: WaveCache,
    *,
    train_pool: Pool,
    val_pool: Pool,
    source: DataSource,
    run_dir: Path,
    groups: np.ndarray | None = None,
    libraries: np.ndarray | None = None,
    resume: bool = False,
    progress: Callable[[dict[str, Any]], None] | None = None,
    extra_meta: dict[str, Any] | None = None,
) -> FitResult:
    """Train, keep the best checkpoint by validation accuracy, and write ``run_dir/model.pt``.

    ``groups``: each clip's source group (``Pools.groups``), which keeps the support and queries
    of validation episodes on held-out classes apart. ``libraries``: each clip's sample library
    when training on several (``Prepared.libraries``; see :func:`make_val_data`).
    """
    quiet_lightning()
    import pytorch_lightning  # noqa: F401  (its import resets the loggers quieted above)

    quiet_lightning()
    from fslcli.checkpoint import save_model

    accelerator = preflight(config, train_pool, val_pool, groups=groups)
    val = make_val_data(cache, config, train_pool=train_pool, val_pool=val_pool, groups=groups, libraries=libraries)
    lit = ProtoLit(config, cache, train_pool, val)
    best, last = _checkpoints(run_dir / "checkpoints")
    previous = _previous_seconds(run_dir) if resume else 0.0
    t0 = time.perf_counter()
    trainer = _trainer(config, run_dir, accelerator, [best, last, _history_callback(run_dir, progress, t0 - previous)])
    _fit_or_interrupt(trainer, lit, str(run_dir / "checkpoints" / "last.ckpt") if resume else None)
    seconds = time.perf_counter() - t0
    if not trainer.is_global_zero:
        return FitResult(run_dir, None, None, None, seconds, int(trainer.global_step), False)
    state = torch.load(
        best.best_model_path or str(run_dir / "checkpoints" / "last.ckpt"), map_location="cpu", weights_only=True
    )
    net = build_net(config, config.train.seed)
    net.load_state_dict({k[4:]: v for k, v in state["state_dict"].items() if k.startswith("net.")})
    best_step = int(state.get("global_step", 0))
    best_acc = _best_val_acc(run_dir, best_step)
    meta = {
        "best_val_acc": best_acc,
        "best_step": best_step,
        "steps": int(trainer.global_step),
        "train_seconds": round(previous + seconds, 2),
        **(extra_meta or {}),
    }
    model_path = run_dir / "model.pt"
    save_model(model_path, net, config, source, meta)
    _write_learning_curves(run_dir)
    return FitResult(run_dir, model_path, best_acc, best_step, seconds, int(trainer.global_step), True)


def _fit_or_interrupt(trainer: Any, lit: Any, ckpt_path: str | None) -> None:
    """``trainer.fit``, with Ctrl-C surfacing as :class:`KeyboardInterrupt`.

    Lightning catches Ctrl-C itself: it stops, ignores SIGINT from then on and calls
    ``sys.exit(1)`` (older versions return normally). Either way the caller must learn the run
    was interrupted (no model.pt is written; the CLI prints how to resume), and the process gets
    its Ctrl-C handler back.
    """
    import signal
    import threading

    main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGINT) if main else None
    try:
        trainer.fit(lit, ckpt_path=ckpt_path)
    except SystemExit:
        # Also Lightning's SIGTERMException (a SystemExit): it finishes the step, then raises.
        if not trainer.interrupted:
            raise
    finally:
        if main and handler is not None:
            signal.signal(signal.SIGINT, handler)
    if trainer.interrupted:
        raise KeyboardInterrupt


def _history_callback(run_dir: Path, progress: Callable[[dict[str, Any]], None] | None, t0: float) -> Any:
    import pytorch_lightning as pl

    class History(pl.Callback):
        """One row per validation block in history.jsonl (step, the block's mean training loss and
        accuracy, validation accuracy and loss, wall time), and progress events."""

        def __init__(self) -> None:
            self.losses: list[float] = []
            self.accs: list[float] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            loss = float(outputs["loss"] if isinstance(outputs, dict) else outputs)
            self.losses.append(loss)
            self.accs.append(pl_module.last_train_acc)
            if progress is not None and trainer.is_global_zero:
                progress({"event": "step", "step": int(trainer.global_step), "loss": loss})

        # Lightning validates at the end of each block, before on_train_epoch_end.
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            # No steps since the last row: a resumed run re-ending the block its checkpoint closed.
            if trainer.is_global_zero and self.losses:
                row: dict[str, Any] = {
                    "step": int(trainer.global_step),
                    "seconds": round(time.perf_counter() - t0, 2),
                    "train_loss": float(np.mean(self.losses)),
                    "train_acc": float(np.nanmean(self.accs)),
                }
                row.update(
                    {
                        k: float(trainer.callback_metrics[k])
                        for k in ("val_loss", "val_acc")
                        if k in trainer.callback_metrics
                    }
                )
                with open(run_dir / HISTORY_FILE, "a", encoding="utf-8") as f:
                    f.write(json.dumps(row) + "\n")
                if progress is not None:
                    progress({"event": "val", **row})
            self.losses, self.accs = [], []

    return History()


def _best_val_acc(run_dir: Path, step: int) -> float | None:
    """The validation accuracy history.jsonl recorded for ``step`` (the best checkpoint's)."""
    rows = [r for r in read_history(run_dir) if r.get("step") == step and "val_acc" in r]
    return float(rows[-1]["val_acc"]) if rows else None


def _previous_seconds(run_dir: Path) -> float:
    rows = read_history(run_dir)
    return float(rows[-1]["seconds"]) if rows else 0.0


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of a run's history.jsonl (unreadable lines skipped)."""
    path = Path(run_dir) / HISTORY_FILE
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _write_learning_curves(run_dir: Path) -> None:
    rows = read_history(run_dir)
    if rows:
        from fslcli.plotting import learning_curves_figure, write_figure

        write_figure(learning_curves_figure(rows), run_dir / "learning_curves.html")
