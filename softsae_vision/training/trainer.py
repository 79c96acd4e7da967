"""The training loop: any activation source in, a finished SAE run directory out.

A run directory holds ``config.json`` (status "running" until the last step, then "complete"),
``metrics.jsonl`` (the training curve), ``checkpoint/state.pt`` (everything needed to resume:
model, optimiser, step, dead-latent counters, RNG) and, once finished, ``sae.safetensors``.
Resuming from a checkpoint replays the same batches and the same arithmetic, so an interrupted
run ends with the same weights as an uninterrupted one. One process at a time trains into a run
directory (a lock held for the whole run); the folder rules live in :mod:`.run_dir`.

Non-finite values are caught without a host sync per step: each step folds "the batch / the
loss was not finite" into device-side flags, read only at log and checkpoint boundaries, where
the weights are checked too. A non-finite checkpoint is never written, and a run that diverged
is never marked complete.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from softsae_vision._io import folder_lock, write_json_atomic, write_text_atomic
from softsae_vision.data.arrays import ArraySource
from softsae_vision.data.source import ActivationSource
from softsae_vision.devices import resolve_device
from softsae_vision.errors import SoftSAEError
from softsae_vision.sae.base import CONFIG_FILE, BaseSAE, StepContext, load_sae, state_mismatch
from softsae_vision.sae.soft import SoftSAE
from softsae_vision.training import schedules
from softsae_vision.training.config import TrainConfig
from softsae_vision.training.evaluate import k_hat_summary
from softsae_vision.training.losses import auxk_loss, squared_error
from softsae_vision.training.run_dir import (
    CHECKPOINT_FILE,
    METRICS_FILE,
    RunStart,
    prepare_run_dir,
    save_checkpoint,
)

log = logging.getLogger(__name__)

CALIBRATION_ROWS = 16384
PROGRESS_EVERY_S = 30.0
"""Seconds between plain progress lines (when no progress bar is shown)."""


class TrainingDivergedError(SoftSAEError):
    """Training produced NaN or inf (or was fed them); the run is left unfinished."""


@dataclass
class TrainResult:
    sae: BaseSAE
    run_dir: Path | None
    final_metrics: dict[str, float]
    steps_run: int = 0
    """Optimiser steps taken by this call (0 when the run had already finished)."""
    seconds: float = 0.0
    """Wall time of this call."""
    already_complete: bool = False
    """The run directory held a finished run; nothing was trained."""


class _IterableSource:
    """Adapts a plain iterable of (B, d) batches to the source protocol (no exact resume)."""

    def __init__(self, batches: Iterable[torch.Tensor]):
        self._it = iter(batches)
        first = next(self._it, None)
        if first is None:
            raise SoftSAEError("the batch iterator is empty")
        self._head = [torch.as_tensor(first)]
        self.d = int(self._head[0].shape[-1])

    def __len__(self) -> int:
        return 0

    def sample(self, n: int, seed: int) -> torch.Tensor:
        rows = sum(len(b) for b in self._head)
        while rows < n:
            nxt = next(self._it, None)
            if nxt is None:
                break
            self._head.append(torch.as_tensor(nxt))
            rows += len(nxt)
        return torch.cat(self._head)[:n].float()

    def batches(self, batch_size: int, seed: int, start: int = 0) -> Iterator[torch.Tensor]:
        stream = self._chain()
        for _ in range(start):
            next(stream, None)
        yield from stream

    def _chain(self) -> Iterator[torch.Tensor]:
        yield from self._head
        yield from self._it

    def describe(self) -> dict[str, Any]:
        return {"kind": "iterator"}


def as_source(data: ActivationSource | Iterable[torch.Tensor] | torch.Tensor) -> Any:
    """Accept a source, an (N, d) tensor/array, or any iterable of (B, d) batches."""
    if isinstance(data, ActivationSource):
        return data
    if isinstance(data, torch.Tensor) or hasattr(data, "__array__"):
        return ArraySource(data)
    return _IterableSource(data)


def _check_batch(batch: torch.Tensor, d: int, step: int) -> torch.Tensor:
    """Shape check (metadata only, no sync); finiteness is folded into the trainer's flags."""
    if batch.ndim != 2 or batch.shape[1] != d:
        raise SoftSAEError(
            f"batch at step {step} has shape {tuple(batch.shape)}, expected (B, {d})"
        )
    return batch


def _check_finite_rows(rows_ND: torch.Tensor) -> torch.Tensor:
    if not torch.isfinite(rows_ND).all():
        raise SoftSAEError(
            "the data contain NaN or inf values (in the sample drawn to fit the normalisation); "
            "clean the activations"
        )
    return rows_ND


class Trainer:
    """Owns the optimiser, schedules and bookkeeping for one SAE."""

    def __init__(self, sae: BaseSAE, cfg: TrainConfig, device: torch.device) -> None:
        self.sae, self.cfg, self.device = sae.to(device), cfg, device
        self.opt = torch.optim.Adam(sae.param_groups(), lr=cfg.lr, betas=cfg.adam_betas)
        self.k_aux = cfg.k_aux or max(1, sae.d_in // 2)
        self.dead_threshold = cfg.resolve_dead_threshold()
        self.since_fired_F = torch.zeros(sae.n_latents, dtype=torch.long, device=device)
        self.step = 0
        self.calibrated = False
        # Set on device when a batch / the loss is not finite; read at log/checkpoint boundaries.
        self.bad_data = torch.zeros((), dtype=torch.bool, device=device)
        self.bad_loss = torch.zeros((), dtype=torch.bool, device=device)
        k = getattr(sae, "k", 0.0)
        k_max = getattr(sae, "k_max", k)
        self.k_start = k_max if cfg.k_anneal_from == "k_max" else float(sae.d_in)

    # ------------------------------------------------------------ one step
    def context(self, step: int) -> StepContext:
        return StepContext(
            phase=schedules.phase(step, self.cfg),
            alpha=schedules.alpha(step, self.cfg),
            k_target=schedules.k_target(step, self.cfg, getattr(self.sae, "k", 0.0), self.k_start),
        )

    def train_step(self, x_BD: torch.Tensor) -> dict[str, float]:
        sae, cfg = self.sae, self.cfg
        ctx = self.context(self.step)
        lr = cfg.lr * schedules.lr_factor(self.step, cfg)
        for group in self.opt.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        xn_BD = sae.normalize(x_BD)
        out = sae.train_output(xn_BD, ctx)
        mse = squared_error(out.x_hat, xn_BD)
        recon = out.recon_loss if out.recon_loss is not None else mse
        dead_F = self.since_fired_F >= self.dead_threshold
        aux = (
            auxk_loss(xn_BD - out.x_hat, out.pre_acts, dead_F, sae.W_dec, self.k_aux)
            if cfg.aux_coeff > 0
            else mse.new_zeros(())
        )
        loss = recon + cfg.aux_coeff * aux + sum(out.extra_losses.values())
        self.bad_data.logical_or_(~torch.isfinite(x_BD).all())
        self.bad_loss.logical_or_(~torch.isfinite(loss.detach()))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        sae.project_decoder_grad()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), cfg.grad_clip)
        self.opt.step()
        sae.normalize_decoder()

        with torch.no_grad():
            fired_F = (out.codes != 0).any(0)
            self.since_fired_F += x_BD.shape[0]
            self.since_fired_F[fired_F] = 0
            l0_B = (out.codes != 0).sum(-1).float()
        self.step += 1
        stats = {
            "loss": loss.item(),
            "mse": mse.item(),
            "aux": aux.item(),
            "l0_mean": l0_B.mean().item(),
            "l0_std": l0_B.std().item() if len(l0_B) > 1 else 0.0,
            "dead_frac": dead_F.float().mean().item(),
            "lr": lr,
            "alpha": ctx.alpha,
            "k_target": ctx.k_target,
            "phase": ctx.phase,
        }
        stats.update({f"loss_{name}": v.item() for name, v in out.extra_losses.items()})
        if out.k_hat is not None:
            stats.update(k_hat_summary(out.k_hat))
        return stats

    @torch.no_grad()
    def nonfinite(self, check_weights: bool) -> str | None:
        """ "data", "loss" or "weights" if NaN/inf appeared since the start, else None.

        One host sync: call it at log and checkpoint boundaries, not every step.
        """
        flags = [self.bad_data, self.bad_loss]
        if check_weights:
            finite = [torch.isfinite(t).all() for t in self.sae.state_dict().values()]
            flags.append(~torch.stack(finite).all())
        values = torch.stack([f.to(self.device) for f in flags]).tolist()
        for name, bad in zip(("data", "loss", "weights"), values, strict=False):
            if bad:
                return name
        return None

    @torch.no_grad()
    def calibrate(self, rows_ND: torch.Tensor) -> None:
        """Fit SoftSAE's k offset so the realised mean L0 on ``rows`` equals K.

        Done when the hard phase starts (so it trains at the budgeted L0) and once more after
        the last step (the encoder moved during the hard phase, and so did #positive latents).
        """
        sae = self.sae
        if isinstance(sae, SoftSAE) and self.cfg.calibrate_k:
            xn = [sae.normalize(chunk.to(self.device)) for chunk in rows_ND.split(4096)]
            offset = sae.calibrate_k(xn, sae.k)
            log.info(
                "step %d: calibrated k̂ on %d rows (logit offset %+.4f) so the mean L0 is K = %g",
                self.step,
                len(rows_ND),
                offset,
                sae.k,
            )
        self.calibrated = True

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "model": self.sae.state_dict(),
            "optimizer": self.opt.state_dict(),
            "since_fired": self.since_fired_F.cpu(),
            "calibrated": self.calibrated,
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any], origin: str = "the checkpoint") -> None:
        """Restore a :meth:`state_dict`; a SoftSAEError names what does not fit this model."""
        mismatch = state_mismatch(self.sae.state_dict(), state["model"])
        if mismatch is None and state["since_fired"].shape != self.since_fired_F.shape:
            mismatch = f"since_fired has shape {tuple(state['since_fired'].shape)}"
        if mismatch is not None:
            raise SoftSAEError(f"{origin} does not fit this model: {mismatch}")
        self.sae.load_state_dict(state["model"])
        try:
            self.opt.load_state_dict(state["optimizer"])
        except (ValueError, KeyError, TypeError) as err:
            raise SoftSAEError(
                f"{origin} holds an optimiser state that does not fit: {err}"
            ) from None
        self.step = state["step"]
        self.since_fired_F.copy_(state["since_fired"].to(self.device))
        self.calibrated = state["calibrated"]
        torch.set_rng_state(state["torch_rng"])


class _Progress:
    """A tqdm bar on a terminal; otherwise a plain log line every PROGRESS_EVERY_S seconds."""

    def __init__(self, total: int, initial: int, bar: bool) -> None:
        self.total, self.initial = total, initial
        self.t0 = self.last = time.monotonic()
        self.lines = 0
        self.bar = None
        if bar and sys.stderr.isatty():
            self.bar = tqdm(total=total, initial=initial, desc="train", unit="step")

    def update(self, done: int, stats: dict[str, Any] | None) -> None:
        """Count one step (``done`` steps finished); ``stats`` is set at log boundaries."""
        if self.bar is not None:
            self.bar.update(1)
            if stats is not None:
                self.bar.set_postfix(loss=f"{stats['loss']:.4f}", l0=f"{stats['l0_mean']:.1f}")
            return
        now = time.monotonic()
        due = self.lines == 0 or now - self.last >= PROGRESS_EVERY_S or done == self.total
        if stats is None or not due:
            return
        rate = (done - self.initial) / max(now - self.t0, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else float("nan")
        log.info(
            "step %d/%d (%d%%)  loss %.4g  L0 %.1f  %.1f steps/s  ETA %s",
            done,
            self.total,
            100 * done // self.total,
            stats["loss"],
            stats["l0_mean"],
            rate,
            _duration(eta),
        )
        self.last, self.lines = now, self.lines + 1

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _duration(seconds: float) -> str:
    if seconds != seconds:  # NaN
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class _StopOnSigint:
    """While active (main thread only), Ctrl-C asks the loop to stop after the current step."""

    def __init__(self, active: bool) -> None:
        self.active = active and threading.current_thread() is threading.main_thread()
        self.requested = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self._previous)  # a second Ctrl-C stops at once

    def __enter__(self) -> _StopOnSigint:
        if self.active:
            previous = signal.getsignal(signal.SIGINT)
            self._previous = signal.default_int_handler if previous is None else previous
            signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.active:
            signal.signal(signal.SIGINT, self._previous)


def _diverged(
    kind: str, first: int, last: int, run_path: Path | None, last_ckpt: int | None
) -> TrainingDivergedError:
    where = f"step {first}" if first == last else f"steps {first}-{last}"
    cause = {
        "data": f"the data contain NaN or inf values (a batch of {where}); clean the activations",
        "loss": f"training diverged: the loss became NaN or inf at {where}; lower the "
        "learning rate (--lr)",
        "weights": f"training diverged: the weights became NaN or inf at {where}; lower the "
        "learning rate (--lr)",
    }[kind]
    if run_path is None:
        return TrainingDivergedError(cause)
    if last_ckpt is None:
        return TrainingDivergedError(
            f"{cause}; {run_path} is left unfinished, with no checkpoint yet"
        )
    return TrainingDivergedError(
        f"{cause}; {run_path} is left unfinished and keeps its last good checkpoint "
        f"{run_path / CHECKPOINT_FILE} (step {last_ckpt})"
    )


def _last_metrics(run_path: Path) -> dict[str, Any]:
    lines = (run_path / METRICS_FILE).read_text(encoding="utf-8").splitlines()
    for line in reversed(lines):
        try:
            return {k: v for k, v in json.loads(line).items() if k != "step"}
        except json.JSONDecodeError:
            continue
    return {}


def train(
    sae: BaseSAE,
    data: ActivationSource | Iterable[torch.Tensor] | torch.Tensor,
    cfg: TrainConfig | None = None,
    run_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train ``sae`` on ``data`` (a source, an (N, d) array, or any iterable of (B, d) batches).

    With ``run_dir`` the run is locked, checkpointed and saved there; ``resume=True`` continues
    an interrupted run from its last checkpoint (with the same settings), and on a finished run
    loads its weights into ``sae`` and returns at once (``already_complete``). ``progress``
    shows a bar when stderr is a terminal, else logs a progress line now and then. Ctrl-C in
    the main thread writes a checkpoint and raises KeyboardInterrupt. Returns the trained SAE
    and the final metrics.
    """
    t0 = time.monotonic()
    cfg = cfg or TrainConfig()
    source = as_source(data)
    if source.d != sae.d_in:
        raise SoftSAEError(f"data width d={source.d} does not match the SAE's d_in={sae.d_in}")
    device = resolve_device(cfg.device)
    config = sae.config_dict(
        {"status": "running", "data": source.describe(), "training": cfg.to_dict()}
    )
    if run_dir is None:
        return _train(sae, source, cfg, device, None, RunStart(config=config), progress, t0)
    run_path = Path(run_dir)
    with folder_lock(run_path, "training run"):
        start = prepare_run_dir(run_path, resume, config)
        if start.complete:
            sae.load_state_dict(load_sae(run_path).state_dict())
            return TrainResult(sae.eval(), run_path, _last_metrics(run_path), already_complete=True)
        return _train(sae, source, cfg, device, run_path, start, progress, t0)


def _train(
    sae: BaseSAE,
    source: Any,
    cfg: TrainConfig,
    device: torch.device,
    run_path: Path | None,
    start: RunStart,
    progress: bool,
    t0: float,
) -> TrainResult:
    torch.manual_seed(cfg.seed)
    trainer = Trainer(sae, cfg, device)
    calib_rows = source.sample(max(cfg.norm_sample, CALIBRATION_ROWS), cfg.seed)
    last_ckpt: int | None = None
    if start.state is not None:
        trainer.load_state_dict(start.state, f"{run_path / CHECKPOINT_FILE}")
        last_ckpt = trainer.step
        log.info("resuming %s from step %d", run_path, trainer.step)
    else:
        sample = _check_finite_rows(_check_batch(calib_rows, sae.d_in, 0)[: cfg.norm_sample])
        sae.fit_normalization(sample.to(device))
    if run_path is not None:
        write_json_atomic(run_path / CONFIG_FILE, start.config)
        metrics_path = run_path / METRICS_FILE
        write_text_atomic(metrics_path, "".join(f"{line}\n" for line in start.metric_lines))
        metrics_file = metrics_path.open("a", encoding="utf-8")
    hard_start = schedules.hard_phase_start(cfg)
    first_step = checked = trainer.step  # steps before `checked` are known to be finite
    batches = source.batches(cfg.batch_size, cfg.seed, start=trainer.step)
    stats: dict[str, Any] = {}
    bar = _Progress(cfg.steps, trainer.step, progress)
    stop = _StopOnSigint(active=run_path is not None)
    try:
        sae.train()
        with stop:
            while trainer.step < cfg.steps and not stop.requested:
                if trainer.step >= hard_start and not trainer.calibrated:
                    if isinstance(sae, SoftSAE):
                        log.info(
                            "step %d/%d: hard phase starts (top-⌊k̂⌋ selection, k estimator frozen)",
                            trainer.step,
                            cfg.steps,
                        )
                    trainer.calibrate(calib_rows)
                step = trainer.step
                x_BD = _check_batch(next(batches), sae.d_in, step).to(device, non_blocking=True)
                stats = trainer.train_step(x_BD)
                at_log = step % cfg.log_every == 0 or trainer.step == cfg.steps
                at_ckpt = run_path is not None and (
                    trainer.step % cfg.checkpoint_every == 0 or trainer.step == cfg.steps
                )
                if at_log or at_ckpt:
                    bad = trainer.nonfinite(check_weights=at_ckpt)
                    if bad is not None:
                        raise _diverged(bad, checked, step, run_path, last_ckpt)
                    checked = trainer.step
                if at_log and run_path is not None:
                    metrics_file.write(json.dumps({"step": step, **stats}) + "\n")
                    metrics_file.flush()
                bar.update(trainer.step, stats if at_log else None)
                if at_ckpt:
                    save_checkpoint(run_path, trainer.state_dict())
                    last_ckpt = trainer.step
        if stop.requested and trainer.step < cfg.steps:
            assert run_path is not None
            if last_ckpt != trainer.step:
                bad = trainer.nonfinite(check_weights=True)
                if bad is not None:
                    raise _diverged(bad, checked, trainer.step - 1, run_path, last_ckpt)
                save_checkpoint(run_path, trainer.state_dict())
            raise KeyboardInterrupt(
                f"checkpoint written at step {trainer.step}/{cfg.steps} in {run_path}; run the "
                "same `softsae train` command with --resume to continue it"
            )
    finally:
        bar.close()
        sae.eval()
        if run_path is not None:
            metrics_file.close()
    trainer.calibrate(calib_rows)
    bad = trainer.nonfinite(check_weights=True)
    if bad is not None:
        raise _diverged(bad, checked, max(checked, cfg.steps - 1), run_path, last_ckpt)
    if run_path is not None:
        sae.save(run_path)
        write_json_atomic(run_path / CONFIG_FILE, {**start.config, "status": "complete"})
    return TrainResult(
        sae, run_path, stats, steps_run=trainer.step - first_step, seconds=time.monotonic() - t0
    )


__all__ = ["METRICS_FILE", "TrainResult", "Trainer", "TrainingDivergedError", "train"]
