"""The training loop: any activation source in, a finished SAE run directory out.

A run directory holds ``config.json`` (status "running" until the last step, then "complete"),
``metrics.jsonl`` (the training curve), ``checkpoint/state.pt`` (everything needed to resume:
model, optimiser, step, dead-latent counters, RNG) and, once finished, ``sae.safetensors``.
Resuming from a checkpoint replays the same batches and the same arithmetic, so an interrupted
run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from softsae_vision._io import atomic_write, write_json_atomic, write_text_atomic
from softsae_vision.data.arrays import ArraySource
from softsae_vision.data.source import ActivationSource
from softsae_vision.devices import resolve_device
from softsae_vision.errors import SoftSAEError
from softsae_vision.sae.base import CONFIG_FILE, BaseSAE, StepContext
from softsae_vision.sae.soft import SoftSAE
from softsae_vision.training import schedules
from softsae_vision.training.config import TrainConfig
from softsae_vision.training.evaluate import k_hat_summary
from softsae_vision.training.losses import auxk_loss, squared_error

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
CHECKPOINT_FILE = Path("checkpoint") / "state.pt"
CALIBRATION_ROWS = 16384


@dataclass
class TrainResult:
    sae: BaseSAE
    run_dir: Path | None
    final_metrics: dict[str, float]


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
    if batch.ndim != 2 or batch.shape[1] != d:
        raise SoftSAEError(
            f"batch at step {step} has shape {tuple(batch.shape)}, expected (B, {d})"
        )
    if not torch.isfinite(batch).all():
        raise SoftSAEError(
            f"the data contain NaN or inf values (batch at step {step}); clean the activations"
        )
    return batch


class Trainer:
    """Owns the optimiser, schedules and bookkeeping for one SAE."""

    def __init__(self, sae: BaseSAE, cfg: TrainConfig, device: torch.device) -> None:
        self.sae, self.cfg, self.device = sae.to(device), cfg, device
        self.opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr, betas=cfg.adam_betas)
        self.k_aux = cfg.k_aux or max(1, sae.d_in // 2)
        self.dead_threshold = cfg.resolve_dead_threshold()
        self.since_fired_F = torch.zeros(sae.n_latents, dtype=torch.long, device=device)
        self.step = 0
        self.calibrated = False
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
            group["lr"] = lr
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
    def calibrate(self, rows_ND: torch.Tensor) -> None:
        """Fit SoftSAE's k offset so the realised mean L0 on ``rows`` equals K.

        Done when the hard phase starts (so it trains at the budgeted L0) and once more after
        the last step (the encoder moved during the hard phase, and so did #positive latents).
        """
        sae = self.sae
        if isinstance(sae, SoftSAE) and self.cfg.calibrate_k:
            xn = [sae.normalize(chunk.to(self.device)) for chunk in rows_ND.split(4096)]
            offset = sae.calibrate_k(xn, sae.k)
            log.info("calibrated k offset %.4f (target mean L0 %.2f)", offset, sae.k)
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

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = state["step"]
        self.sae.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.since_fired_F.copy_(state["since_fired"].to(self.device))
        self.calibrated = state["calibrated"]
        torch.set_rng_state(state["torch_rng"])


def _prepare_run_dir(
    run_dir: Path, resume: bool, config: dict[str, Any]
) -> tuple[dict[str, Any] | None, list[str]]:
    """Create or validate the run directory; return a checkpoint state and kept metric lines."""
    config_path = run_dir / CONFIG_FILE
    if not config_path.exists():
        if resume and run_dir.exists() and any(run_dir.iterdir()):
            raise SoftSAEError(f"{run_dir} has no {CONFIG_FILE}; it is not a run to resume")
        run_dir.mkdir(parents=True, exist_ok=True)
        return None, []
    old = json.loads(config_path.read_text())
    if not resume:
        state = "finished" if old.get("status") == "complete" else "an unfinished"
        raise SoftSAEError(
            f"{run_dir} already holds {state} run; pass --resume to continue it "
            "or choose another --out"
        )
    for key in ("architecture", "d_in", "n_latents", "hparams"):
        if json.loads(json.dumps(config[key])) != old.get(key):
            raise SoftSAEError(
                f"cannot resume {run_dir}: its {key} is {old.get(key)!r} but this run asks for "
                f"{config[key]!r}; use the original settings or another --out"
            )
    ckpt = run_dir / CHECKPOINT_FILE
    if not ckpt.exists():
        return None, []
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    lines = []
    metrics_path = run_dir / METRICS_FILE
    if metrics_path.exists():
        for line in metrics_path.read_text().splitlines():
            try:
                if json.loads(line)["step"] < state["step"]:
                    lines.append(line)
            except (json.JSONDecodeError, KeyError):
                break  # a torn last line from a kill: drop it and what follows
    return state, lines


def train(
    sae: BaseSAE,
    data: ActivationSource | Iterable[torch.Tensor] | torch.Tensor,
    cfg: TrainConfig | None = None,
    run_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train ``sae`` on ``data`` (a source, an (N, d) array, or any iterable of (B, d) batches).

    With ``run_dir`` the run is checkpointed and saved there; ``resume=True`` continues an
    interrupted run from its last checkpoint. Returns the trained SAE and the final metrics.
    """
    cfg = cfg or TrainConfig()
    source = as_source(data)
    if source.d != sae.d_in:
        raise SoftSAEError(f"data width d={source.d} does not match the SAE's d_in={sae.d_in}")
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    trainer = Trainer(sae, cfg, device)
    run_path = Path(run_dir) if run_dir is not None else None
    config = sae.config_dict(
        {"status": "running", "data": source.describe(), "training": cfg.to_dict()}
    )
    state, metric_lines = (None, [])
    if run_path is not None:
        state, metric_lines = _prepare_run_dir(run_path, resume, config)
    calib_rows = source.sample(max(cfg.norm_sample, CALIBRATION_ROWS), cfg.seed)
    if state is not None:
        trainer.load_state_dict(state)
        log.info("resuming %s from step %d", run_path, trainer.step)
    else:
        sae.fit_normalization(_check_batch(calib_rows, sae.d_in, 0)[: cfg.norm_sample].to(device))
    if run_path is not None:
        write_json_atomic(run_path / CONFIG_FILE, config)
        metrics_path = run_path / METRICS_FILE
        write_text_atomic(metrics_path, "".join(f"{line}\n" for line in metric_lines))
        metrics_file = metrics_path.open("a")
    hard_start = schedules.hard_phase_start(cfg)
    batches = source.batches(cfg.batch_size, cfg.seed, start=trainer.step)
    stats: dict[str, float] = {}
    bar = tqdm(
        total=cfg.steps, initial=trainer.step, disable=not progress, desc="train", unit="step"
    )
    try:
        sae.train()
        while trainer.step < cfg.steps:
            if trainer.step >= hard_start and not trainer.calibrated:
                trainer.calibrate(calib_rows)
            step = trainer.step
            x_BD = _check_batch(next(batches), sae.d_in, step).to(device, non_blocking=True)
            stats = trainer.train_step(x_BD)
            if step % cfg.log_every == 0 or trainer.step == cfg.steps:
                if run_path is not None:
                    metrics_file.write(json.dumps({"step": step, **stats}) + "\n")
                    metrics_file.flush()
                bar.set_postfix(loss=f"{stats['loss']:.4f}", l0=f"{stats['l0_mean']:.1f}")
            bar.update(1)
            if run_path is not None and (
                trainer.step % cfg.checkpoint_every == 0 or trainer.step == cfg.steps
            ):
                (run_path / CHECKPOINT_FILE).parent.mkdir(exist_ok=True)
                atomic_write(
                    run_path / CHECKPOINT_FILE, lambda t: torch.save(trainer.state_dict(), t)
                )
    finally:
        bar.close()
        sae.eval()
        if run_path is not None:
            metrics_file.close()
    trainer.calibrate(calib_rows)
    if run_path is not None:
        sae.save(run_path)
        write_json_atomic(run_path / CONFIG_FILE, {**config, "status": "complete"})
    return TrainResult(sae, run_path, stats)


__all__ = ["METRICS_FILE", "TrainResult", "Trainer", "train"]
