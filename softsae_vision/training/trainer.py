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

import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from tqdm.auto import tqdm

from softsae_vision._io import folder_lock, write_text_atomic
from softsae_vision.data.arrays import ArraySource
from softsae_vision.data.source import ActivationSource
from softsae_vision.devices import resolve_device
from softsae_vision.errors import SoftSAEError
from softsae_vision.ops import batch_group
from softsae_vision.sae.base import BaseSAE, StepContext, load_sae, state_mismatch
from softsae_vision.training import schedules
from softsae_vision.training.config import TrainConfig
from softsae_vision.training.ddp import SINGLE, TrainRanks
from softsae_vision.training.evaluation import k_hat_summary
from softsae_vision.training.loader import Prefetcher, source_stream
from softsae_vision.training.loggers import check_available, close_sinks, open_sinks
from softsae_vision.training.losses import auxk_loss, squared_error
from softsae_vision.training.precision import autocast, matmul_precision, resolve_precision
from softsae_vision.training.run_dir import (
    CHECKPOINT_FILE,
    METRICS_FILE,
    RunStart,
    prepare_run_dir,
    save_checkpoint,
    save_finished,
    write_config,
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
    """Adapts a plain iterable of (B, d) batches to the source protocol (no exact resume).

    The iterable is read once, in order, one batch per step, as given: ``batch_size`` and
    ``seed`` do not apply (nothing is re-batched, shuffled or repeated), and an iterable that
    runs out before the last step is a SoftSAEError naming the step.
    """

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
        """The batches as given, from batch ``start``; ``batch_size`` and ``seed`` do not apply."""
        step = 0
        for batch in self._chain():
            if step >= start:
                yield batch
            step += 1
        raise SoftSAEError(
            f"the batch iterator ran dry at step {step}: it yielded {step} batches, and an "
            "iterator is read once, one batch per step (not re-batched, shuffled or repeated); "
            "give it at least TrainConfig.steps batches, or pass an (N, d) array, which is "
            "reshuffled every epoch"
        )

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
        return ArraySource(cast(Any, data))  # an ndarray, memmap or anything array-like
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

    def __init__(
        self, sae: BaseSAE, cfg: TrainConfig, device: torch.device, ranks: TrainRanks = SINGLE
    ) -> None:
        self.sae, self.cfg, self.device = sae.to(device), cfg, device
        self.ranks = ranks
        self.forward = sae.train_output  # under DDP after distribute()
        self.opt = torch.optim.Adam(sae.param_groups(), lr=cfg.lr, betas=cfg.adam_betas)
        self.k_aux = cfg.k_aux or max(1, sae.d_in // 2)
        self.dead_threshold = cfg.resolve_dead_threshold()
        self.since_fired_F = torch.zeros(sae.n_latents, dtype=torch.long, device=device)
        self.precision = resolve_precision(cfg.precision, device)
        self.inputs_seen = 0  # on the host: an upper bound of every since_fired count
        self.step = 0
        self.calibrated = False
        # Set on device when a batch / the loss is not finite; read at log/checkpoint boundaries.
        self.bad_data = torch.zeros((), dtype=torch.bool, device=device)
        self.bad_loss = torch.zeros((), dtype=torch.bool, device=device)
        self.k_final = sae.target_l0 or 0.0  # the k target: k_start → K (SoftSAE's budget)
        ceiling = sae.k_ceiling
        k_max = self.k_final if ceiling is None else ceiling
        self.k_start = k_max if cfg.k_anneal_from == "k_max" else float(sae.d_in)

    def distribute(self) -> None:
        """Train under DDP when there are several ranks (from rank 0's weights and buffers)."""
        self.forward = self.ranks.wrap(self.sae, self.device)

    # ------------------------------------------------------------ one step
    def context(self, step: int) -> StepContext:
        return StepContext(
            phase=schedules.phase(step, self.cfg),
            alpha=schedules.alpha(step, self.cfg),
            k_target=schedules.k_target(step, self.cfg, self.k_final, self.k_start),
            soft_progress=schedules.soft_progress(step, self.cfg),
        )

    def train_step(self, x_BD: torch.Tensor, stats: bool = True) -> dict[str, Any] | None:
        """One optimiser step on (B, d) fp32 activations on the device.

        Nothing is read back to the host unless ``stats``: then the step's metrics come back
        as floats (one read of a stacked tensor, plus the k̂ summary).
        """
        sae, cfg = self.sae, self.cfg
        ctx = self.context(self.step)
        lr = cfg.lr * schedules.lr_factor(self.step, cfg)
        for group in self.opt.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        # No latent can be dead before dead_threshold inputs: skip AuxK (a host-side count).
        use_aux = cfg.aux_coeff > 0 and self.inputs_seen >= self.dead_threshold
        with matmul_precision(self.precision), autocast(self.precision, self.device):
            xn_BD = sae.normalize(x_BD)
            out = self.forward(xn_BD, ctx)
            x_hat_BD = out.x_hat.float()  # the losses' reductions in fp32
            mse = squared_error(x_hat_BD, xn_BD)
            recon = out.recon_loss.float() if out.recon_loss is not None else mse
            dead_F = self.since_fired_F >= self.dead_threshold
            if use_aux:
                aux = auxk_loss(
                    xn_BD - x_hat_BD, out.pre_acts, dead_F, sae.W_dec, self.k_aux, out.encoding
                )
                aux = aux.float()
            else:
                aux = mse.new_zeros(())
            extra = {name: v.float() for name, v in out.extra_losses.items()}
            loss = recon + cfg.aux_coeff * aux + sum(extra.values())
        self.bad_data.logical_or_(~torch.isfinite(x_BD).all())
        self.bad_loss.logical_or_(~torch.isfinite(loss.detach()))
        self.opt.zero_grad(set_to_none=True)
        with matmul_precision(self.precision):
            loss.backward()
        sae.project_decoder_grad()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), cfg.grad_clip)
        self.opt.step()
        sae.normalize_decoder()

        n_rows = self.ranks.global_rows(x_BD.shape[0])
        with torch.no_grad():  # from the kept entries: no pass over a dense (B, F)
            self.since_fired_F += n_rows
            fired_F = self.ranks.any_(out.selected.fired())
            self.since_fired_F.masked_fill_(fired_F, 0)  # no boolean indexing: no sync
        self.inputs_seen += n_rows
        self.step += 1
        if not stats:
            return None
        with torch.no_grad():
            l0_B = self.ranks.gather_rows(out.selected.row_counts())  # the global batch's
            values = {
                "loss": loss.detach(),
                "mse": mse.detach(),
                "aux": aux.detach(),
                "l0_mean": l0_B.mean(),
                "l0_std": l0_B.std() if len(l0_B) > 1 else l0_B.new_zeros(()),
                "dead_frac": dead_F.float().mean(),
                **{f"loss_{name}": v.detach() for name, v in extra.items()},
            }
            stacked = self.ranks.mean(torch.stack([v.float() for v in values.values()]))
            floats = stacked.tolist()  # one read
        result: dict[str, Any] = dict(zip(values, floats, strict=True))
        result.update(lr=lr, alpha=ctx.alpha, k_target=ctx.k_target, phase=ctx.phase)
        if out.k_hat is not None:
            result.update(k_hat_summary(self.ranks.gather_rows(out.k_hat)))
        return result

    @torch.no_grad()
    def nonfinite(self, check_weights: bool) -> str | None:
        """ "data", "loss" or "weights" if NaN/inf appeared since the start, else None.

        One host sync: call it at log and checkpoint boundaries, not every step.
        """
        flags = [self.bad_data, self.bad_loss]
        if check_weights:
            finite = [torch.isfinite(t).all() for t in self.sae.state_dict().values()]
            flags.append(~torch.stack(finite).all())
        values = self.ranks.any_(torch.stack([f.to(self.device) for f in flags])).tolist()
        for name, bad in zip(("data", "loss", "weights"), values, strict=False):
            if bad:
                return name
        return None

    @torch.no_grad()
    def calibrate(self, rows_ND: torch.Tensor) -> None:
        """Let the SAE fit its realised mean L0 on ``rows`` to K (``sae.calibrate``; SoftSAE).

        Done when the hard phase starts (so it trains at the budgeted L0) and once more after
        the last step (the encoder moved during the hard phase, and so did #positive latents).
        """
        sae = self.sae
        if sae.calibrates_k and self.cfg.calibrate_k:
            xn = [sae.normalize(chunk.to(self.device)) for chunk in rows_ND.split(4096)]
            offset = sae.calibrate(xn)
            self.ranks.broadcast_buffers_(sae)  # computed identically, but take rank 0's
            log.info(
                "step %d: calibrated k̂ on %d rows (logit offset %+.4f) so the mean L0 is K = %g",
                self.step,
                len(rows_ND),
                offset,
                sae.target_l0,
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
            "inputs_seen": self.inputs_seen,
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
        self.inputs_seen = state.get("inputs_seen", self.step * self.cfg.batch_size)
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
    path = run_path / METRICS_FILE
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines() if path.exists() else []
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            return {k: v for k, v in record.items() if k != "step"}
    return {}


def train(
    sae: BaseSAE,
    data: ActivationSource | Iterable[torch.Tensor] | torch.Tensor,
    cfg: TrainConfig | None = None,
    run_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    log_to: Iterable[str] = (),
) -> TrainResult:
    """Train ``sae`` on ``data`` (a source, an (N, d) array, or any iterable of (B, d) batches).

    With ``run_dir`` the run is locked, checkpointed and saved there; ``resume=True`` continues
    an interrupted run from its last checkpoint (with the same settings), and on a finished run
    loads its weights into ``sae`` and returns at once (``already_complete``). ``progress``
    shows a bar when stderr is a terminal, else logs a progress line now and then. Ctrl-C in
    the main thread writes a checkpoint and raises KeyboardInterrupt. ``log_to`` names sinks
    ("tensorboard", "wandb") that also receive each metrics.jsonl line. Returns the trained SAE
    and the final metrics.
    """
    return train_group({"run": (sae, run_dir)}, data, cfg, resume, progress, log_to)["run"]


def train_group(
    members: Mapping[str, tuple[BaseSAE, str | os.PathLike | None]],
    data: ActivationSource | Iterable[torch.Tensor] | torch.Tensor,
    cfg: TrainConfig | None = None,
    resume: bool = False,
    progress: bool = True,
    log_to: Iterable[str] = (),
) -> dict[str, TrainResult]:
    """Train several SAEs (name → (sae, run_dir or None)) on the same batches, read once.

    Each member does exactly what :func:`train` does for it alone (``train`` is the group of
    one), so its weights equal those of training it alone. A member that fails stops the
    group: the others are checkpointed (when they have a run directory) and a SoftSAEError
    names the failed member.
    """
    sinks = check_available(list(log_to))
    t0 = time.monotonic()
    cfg = cfg or TrainConfig()
    source = as_source(data)
    ranks = TrainRanks.current()  # several under torchrun
    device = ranks.device(resolve_device(cfg.device))
    ranks.check_batch_size(cfg.batch_size)
    cfg = dataclasses.replace(cfg, precision=resolve_precision(cfg.precision, device))
    for name, (sae, _) in members.items():
        if source.d != sae.d_in:
            where = "" if len(members) == 1 else f" ({name})"
            raise SoftSAEError(
                f"data width d={source.d} does not match the SAE's d_in={sae.d_in}{where}"
            )
    ranks.agree_on_settings(_settings(members, source, cfg, resume))
    with contextlib.ExitStack() as locks:
        group: list[_Member] = []
        done: dict[str, TrainResult] = {}
        for name, (sae, run_dir) in members.items():
            config = sae.config_dict(
                {"status": "running", "data": source.describe(), "training": cfg.to_dict()}
            )
            if run_dir is None:
                group.append(_Member(name, sae, None, RunStart(config=config), log_to=sinks))
                continue
            run_path = Path(run_dir)
            start, weights = ranks.on_main(
                lambda p=run_path, c=config: _open_run(p, resume, c, locks)
            )
            if weights is not None:  # the run is complete
                sae.load_state_dict(weights)
                done[name] = TrainResult(
                    sae.eval(), run_path, _last_metrics(run_path), already_complete=True
                )
            else:
                group.append(
                    _Member(name, sae, run_path, start, log_to=sinks if ranks.main else ())
                )
        for member in group:
            member.ranks = ranks
        if group:
            _train_members(group, source, cfg, device, progress, t0)
        done.update({m.name: m.result for m in group if m.result is not None})
        ranks.barrier()  # rank 0 has written every run folder
    return {name: done[name] for name in members}


def _settings(
    members: Mapping[str, tuple[BaseSAE, str | os.PathLike | None]],
    source: Any,
    cfg: TrainConfig,
    resume: bool,
) -> dict[str, Any]:
    """What every rank of a run must have been started with (compared across ranks)."""
    runs = {name: [sae.config_dict(), str(run_dir)] for name, (sae, run_dir) in members.items()}
    return {"members": runs, "data": source.describe(), "training": cfg.to_dict(), "resume": resume}


def _open_run(
    run_path: Path, resume: bool, config: dict[str, Any], locks: contextlib.ExitStack
) -> tuple[RunStart, dict[str, torch.Tensor] | None]:
    """Lock and check a run folder (on rank 0); a finished run's weights come along."""
    locks.enter_context(folder_lock(run_path, "training run"))
    start = prepare_run_dir(run_path, resume, config)
    return start, load_sae(run_path).state_dict() if start.complete else None


@dataclass
class _Member:
    """One SAE of a training group and its run's bookkeeping."""

    name: str
    sae: BaseSAE
    run_path: Path | None
    start: RunStart
    _trainer: Trainer | None = None
    first_step: int = 0
    checked: int = 0  # steps before this are known to be finite
    last_ckpt: int | None = None
    metrics_file: Any = None
    log_to: tuple[str, ...] = ()
    sinks: list[Any] = dataclasses.field(default_factory=list)
    stats: dict[str, Any] = dataclasses.field(default_factory=dict)
    result: TrainResult | None = None
    ranks: TrainRanks = SINGLE
    """The processes training this member together; rank 0 alone writes its run folder."""

    @property
    def trainer(self) -> Trainer:
        """The member's trainer (made by :meth:`begin`)."""
        if self._trainer is None:
            raise RuntimeError(f"training group member {self.name}: begin() was not called")
        return self._trainer

    @property
    def config(self) -> dict[str, Any]:
        """The run's config.json contents."""
        return self.start.config or {}

    def begin(self, cfg: TrainConfig, device: torch.device, calib_rows: torch.Tensor) -> None:
        """Restore the checkpoint or fit the normalisation; open the run's files."""
        self._trainer = trainer = Trainer(self.sae, cfg, device, self.ranks)
        if self.start.state is not None:
            where = CHECKPOINT_FILE if self.run_path is None else self.run_path / CHECKPOINT_FILE
            trainer.load_state_dict(self.start.state, str(where))
            self.last_ckpt = trainer.step
            log.info("resuming %s from step %d", self.run_path, trainer.step)
        else:
            rows = _check_batch(calib_rows, self.sae.d_in, 0)[: cfg.norm_sample]
            self.sae.fit_normalization(_check_finite_rows(rows).to(device))
        trainer.distribute()
        self.first_step = self.checked = trainer.step
        if self.run_path is not None and self.ranks.main:
            write_config(self.run_path, self.config)
            metrics_path = self.run_path / METRICS_FILE
            lines = "".join(f"{line}\n" for line in self.start.metric_lines)
            write_text_atomic(metrics_path, lines)
            self.metrics_file = metrics_path.open("a", encoding="utf-8")
        self.sinks = open_sinks(self.log_to, self.run_path, self.config)  # the same lines

    def step(self, x_BD: torch.Tensor, calib_rows: torch.Tensor, hard_start: int) -> None:
        """One training step with its checks, metrics line and checkpoint."""
        trainer, cfg = self.trainer, self.trainer.cfg
        if trainer.step >= hard_start and not trainer.calibrated:
            if self.sae.predicts_k:
                log.info(
                    "step %d/%d: hard phase starts (top-⌊k̂⌋ selection, k estimator %s)",
                    trainer.step,
                    cfg.steps,
                    getattr(self.sae, "hard_phase_estimator", "frozen"),
                )
            trainer.calibrate(calib_rows)
        step = trainer.step
        at_log = step % cfg.log_every == 0 or step + 1 == cfg.steps
        stats = trainer.train_step(x_BD, stats=at_log)
        at_ckpt = self.run_path is not None and (
            trainer.step % cfg.checkpoint_every == 0 or trainer.step == cfg.steps
        )
        if at_log or at_ckpt:
            bad = trainer.nonfinite(check_weights=at_ckpt)
            if bad is not None:
                raise _diverged(bad, self.checked, step, self.run_path, self.last_ckpt)
            self.checked = trainer.step
        if at_log and stats is not None:
            self.stats = stats
            if self.run_path is not None and self.ranks.main:
                self.metrics_file.write(json.dumps({"step": step, **stats}) + "\n")
                self.metrics_file.flush()
            for sink in self.sinks:
                sink.log(step, stats)
        if at_ckpt:
            if self.run_path is not None and self.ranks.main:
                save_checkpoint(self.run_path, trainer.state_dict())
            self.last_ckpt = trainer.step

    def checkpoint_now(self) -> None:
        """Write a checkpoint at the current step (if it has a run and is finite)."""
        trainer = self._trainer
        if self.run_path is None or trainer is None or self.last_ckpt == trainer.step:
            return
        bad = trainer.nonfinite(check_weights=True)
        if bad is not None:
            raise _diverged(bad, self.checked, trainer.step - 1, self.run_path, self.last_ckpt)
        if self.run_path is not None and self.ranks.main:
            save_checkpoint(self.run_path, trainer.state_dict())
        self.last_ckpt = trainer.step

    def close(self) -> None:
        if self.metrics_file is not None:
            self.metrics_file.close()
            self.metrics_file = None
        close_sinks(self.sinks)
        self.sinks = []

    def finish(self, calib_rows: torch.Tensor, t0: float) -> None:
        """Final calibration and checks; save the finished run."""
        trainer, cfg = self.trainer, self.trainer.cfg
        trainer.calibrate(calib_rows)
        bad = trainer.nonfinite(check_weights=True)
        if bad is not None:
            last = max(self.checked, cfg.steps - 1)
            raise _diverged(bad, self.checked, last, self.run_path, self.last_ckpt)
        if self.run_path is not None and self.ranks.main:
            save_finished(self.run_path, self.sae, self.config)
        self.result = TrainResult(
            self.sae,
            self.run_path,
            self.stats,
            steps_run=trainer.step - self.first_step,
            seconds=time.monotonic() - t0,
        )


class SweepMemberError(SoftSAEError):
    """One member of a training group failed; the others were checkpointed."""


def _train_members(
    group: list[_Member],
    source: Any,
    cfg: TrainConfig,
    device: torch.device,
    progress: bool,
    t0: float,
) -> None:
    """The training loop shared by :func:`train` (one member) and sweeps (several)."""
    torch.manual_seed(cfg.seed)
    calib_rows = source.sample(max(cfg.norm_sample, CALIBRATION_ROWS), cfg.seed)
    for member in group:
        member.begin(cfg, device, calib_rows)
    hard_start = schedules.hard_phase_start(cfg)
    step = min(m.trainer.step for m in group)  # members ahead wait for the stream
    ranks = group[0].ranks
    stream = ranks.rows(source_stream(source, cfg.batch_size, cfg.seed, step))  # this rank's
    loader = Prefetcher(stream, device, cfg.prefetch)
    bar = _Progress(cfg.steps, step, progress and ranks.main)
    stop = _StopOnSigint(active=any(m.run_path is not None for m in group))
    batch_ops = batch_group.activate(ranks.batch_group)  # global-batch ops reduce over ranks
    try:
        for member in group:
            member.sae.train()
        with stop:
            while step < cfg.steps and not ranks.stop(stop.requested):
                x_BD = _check_batch(next(loader), source.d, step)
                for member in group:
                    if member.trainer.step != step:
                        continue
                    try:
                        member.step(x_BD, calib_rows, hard_start)
                    except Exception as err:
                        if len(group) == 1:
                            raise
                        _stop_group(group, member, err)
                at_log = step % cfg.log_every == 0 or step + 1 == cfg.steps
                step += 1
                shown = at_log and group[0].stats and ranks.main
                bar.update(step, group[0].stats if shown else None)
        if step < cfg.steps:  # stopped early: some rank was asked to stop
            for member in group:
                member.checkpoint_now()
            where = ", ".join(str(m.run_path) for m in group if m.run_path is not None)
            command = "softsae train" if len(group) == 1 else "softsae sweep"
            raise KeyboardInterrupt(
                f"checkpoint written at step {step}/{cfg.steps} in {where}; run the same "
                f"`{command}` command with --resume to continue it"
            )
    finally:
        batch_group.deactivate(batch_ops)
        loader.close()
        bar.close()
        for member in group:
            member.sae.eval()
            member.close()
    for member in group:
        try:
            member.finish(calib_rows, t0)
        except Exception as err:
            if len(group) == 1:
                raise
            raise SweepMemberError(f"sweep member {member.name} failed: {err}") from err


def _stop_group(group: list[_Member], failed: _Member, err: Exception) -> None:
    """Checkpoint every other member, then raise a SweepMemberError naming ``failed``."""
    kept = []
    for member in group:
        if member is failed:
            continue
        try:
            member.checkpoint_now()
            kept.append(member.name)
        except SoftSAEError as other:
            log.warning("sweep member %s could not be checkpointed: %s", member.name, other)
    others = f"; the others ({', '.join(kept)}) are checkpointed" if kept else ""
    raise SweepMemberError(
        f"sweep member {failed.name} failed: {err}{others}; leave it out (or fix the cause) and "
        "run the same sweep with --resume to continue"
    ) from err


__all__ = [
    "METRICS_FILE",
    "SweepMemberError",
    "TrainResult",
    "Trainer",
    "TrainingDivergedError",
    "train",
    "train_group",
]
