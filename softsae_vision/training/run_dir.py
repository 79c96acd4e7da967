"""A training run's directory: what a new run, a resumed run and a finished run find there.

Everything here runs while the caller holds the run's lock (:func:`softsae_vision._io.folder_lock`),
so checking the folder and then writing to it cannot race with another ``train``.
"""

from __future__ import annotations

import json
import logging
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from softsae_vision._io import LOCK_FILE, atomic_write, remove_stale_temporaries, write_json_atomic
from softsae_vision.errors import SoftSAEError
from softsae_vision.sae.base import CONFIG_FILE, WEIGHTS_FILE, BaseSAE

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_FILE = Path(CHECKPOINT_DIR) / "state.pt"

# Training settings a resume may change: they do not alter the arithmetic of the run.
RESUME_MAY_CHANGE = frozenset({"device", "log_every", "checkpoint_every", "prefetch"})
# Config entries (besides "training") that must equal the original run's on resume.
RESUME_FIXED_KEYS = ("architecture", "d_in", "n_latents", "hparams", "data")
# How the user sets a field, for messages.
FLAG_OF = {
    "training.steps": "--steps",
    "training.batch_size": "--batch-size",
    "training.lr": "--lr",
    "training.seed": "--seed",
    "training.alpha": "--alpha",
    "training.alpha_start": "--alpha-start",
    "training.hard_frac": "--hard-frac",
    "data.layer": "--layer",
    "data.tokens": "--tokens",
    "data.path": "DATA",
    "architecture": "--arch",
    "n_latents": "--n-latents",
    "hparams.k": "--k",
    "hparams.k_max": "--k-max",
    "hparams.l1_coeff": "--l1-coeff",
    "hparams.estimator": "--estimator",
    "hparams.estimator_hidden": "--estimator-hidden",
}
# What a run writes into its folder (anything else means the folder is someone else's).
OWN_ENTRIES = frozenset({LOCK_FILE, CONFIG_FILE, METRICS_FILE, WEIGHTS_FILE, CHECKPOINT_DIR})
STATE_KEYS = {
    "step": int,
    "model": dict,
    "optimizer": dict,
    "since_fired": torch.Tensor,
    "calibrated": bool,
    "torch_rng": torch.Tensor,
}


@dataclass
class RunStart:
    """What :func:`prepare_run_dir` found: where training starts, and what to write."""

    state: dict[str, Any] | None = None
    """Checkpoint to resume from (None: start at step 0)."""
    metric_lines: list[str] = field(default_factory=list)
    """Lines of metrics.jsonl from before the checkpoint, kept on resume."""
    config: dict[str, Any] | None = None
    """The config.json of the run (the original one on resume)."""
    complete: bool = False
    """The run had already finished: nothing to train."""


def _json_value(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _differences(old: Any, new: Any, prefix: str) -> list[tuple[str, Any, Any]]:
    """(dotted name, old, new) for each leaf where ``new`` differs from ``old``."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            name = f"{prefix}.{key}" if prefix else key
            if key not in old:  # written by an older version: unknown, not different
                continue
            out += _differences(old[key], new.get(key), name)
        return out
    return [] if old == new else [(prefix, old, new)]


def check_resumable(run_dir: Path, old: dict[str, Any], new: dict[str, Any]) -> None:
    """Refuse to resume ``old`` with settings ``new`` that would change its results."""
    diffs: list[tuple[str, Any, Any]] = []
    for key in RESUME_FIXED_KEYS:
        if key in old:
            diffs += _differences({key: old[key]}, {key: _json_value(new.get(key))}, "")
    old_training = {
        k: v for k, v in (old.get("training") or {}).items() if k not in RESUME_MAY_CHANGE
    }
    diffs += _differences(old_training, _json_value(new.get("training", {})), "training")
    if diffs:
        name, was, asked = diffs[0]
        flag = FLAG_OF.get(name)
        more = f" (and {len(diffs) - 1} more setting(s))" if len(diffs) > 1 else ""
        raise SoftSAEError(
            f"cannot resume {run_dir}: its {name}{f' ({flag})' if flag else ''} is {was!r} but "
            f"this run asks for {asked!r}{more}; --resume continues a run with its original "
            "settings: repeat them, or train a new run with another --out"
        )


def _load_tensors_only(file: Any, path: Path, fix: str) -> Any:
    """torch.load with weights_only=True; any failure is a one-line SoftSAEError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "GLOBAL" in str(err):
            raise SoftSAEError(
                f"{path} holds Python objects other than tensors and was refused (loading it "
                f"could run code); it was not written by softsae-vision: {fix}"
            ) from None
        raise SoftSAEError(
            f"{path} is not a checkpoint written by softsae-vision (damaged, or a pickle of other "
            f"objects, refused since loading it could run code): {fix}"
        ) from None
    except Exception as err:  # torch raises RuntimeError, EOFError, OSError... for a torn file
        reason = str(err).split(".")[0] or type(err).__name__
        raise SoftSAEError(f"{path} is damaged ({reason}): {fix}") from None


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint at ``path``, loaded safely (tensors and plain values only) and checked."""
    fix = f"delete {path.parent} and pass --resume again to restart the run from step 0"
    with open(path, "rb") as file:  # can't open it (permissions): an OSError with the path
        state = _load_tensors_only(file, path, fix)
    if not isinstance(state, dict):
        raise SoftSAEError(f"{path} is not a training checkpoint: {fix}")
    for key, kind in STATE_KEYS.items():
        if not isinstance(state.get(key), kind):
            raise SoftSAEError(f"{path} is not a training checkpoint (bad {key!r}): {fix}")
    bad = [n for n, t in state["model"].items() if t.is_floating_point() and not t.isfinite().all()]
    if bad:
        raise SoftSAEError(f"{path} holds non-finite weights ({', '.join(bad)}): {fix}")
    return state


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (tensors and plain values) to the run's checkpoint, atomically."""
    path = run_dir / CHECKPOINT_FILE
    path.parent.mkdir(exist_ok=True)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a Python file: a full disk raises OSError, not a C++ error
            torch.save(state, f)

    atomic_write(path, write)


def write_config(run_dir: Path, config: dict[str, Any]) -> None:
    """Write the run's ``config.json`` (atomically): at the start of a run, with its status."""
    write_json_atomic(run_dir / CONFIG_FILE, config)


def save_finished(run_dir: Path, sae: BaseSAE, config: dict[str, Any]) -> dict[str, Any]:
    """Write the trained weights, then ``config.json`` once, marked complete; return the config.

    Weights first: a run whose config says "complete" always has its final weights.
    """
    sae.save_weights(run_dir)
    finished = {**config, "status": "complete"}
    write_config(run_dir, finished)
    return finished


def _kept_metric_lines(run_dir: Path, step: int) -> list[str]:
    lines: list[str] = []
    metrics_path = run_dir / METRICS_FILE
    if metrics_path.exists():
        for line in metrics_path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                if json.loads(line)["step"] < step:
                    lines.append(line)
            except (json.JSONDecodeError, KeyError, TypeError):
                break  # a torn last line from a kill: drop it and what follows
    return lines


def read_config(run_dir: Path) -> dict[str, Any]:
    """The run's config.json, or a SoftSAEError saying it is damaged."""
    path = run_dir / CONFIG_FILE
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SoftSAEError(
            f"{path} is damaged ({err}); delete {run_dir} to train it again, or choose another "
            "--out"
        ) from None
    if not isinstance(config, dict):
        raise SoftSAEError(f"{path} is not a run config; choose another --out")
    return config


def prepare_run_dir(run_dir: Path, resume: bool, config: dict[str, Any]) -> RunStart:
    """Validate ``run_dir`` for a new or resumed run; return where training starts."""
    for folder in (run_dir, run_dir / CHECKPOINT_DIR):
        for stale in remove_stale_temporaries(folder):
            log.info("removed %s, left by an interrupted write", stale)
    config_path = run_dir / CONFIG_FILE
    if not config_path.exists():
        foreign = [p.name for p in run_dir.iterdir() if p.name not in OWN_ENTRIES]
        if resume and foreign:
            raise SoftSAEError(
                f"{run_dir} has no {CONFIG_FILE} and holds other files ({foreign[0]}, ...); it "
                "is not a run to resume: check --out"
            )
        if resume:
            log.warning(
                "%s holds no run yet (no %s); starting it from step 0", run_dir, CONFIG_FILE
            )
        return RunStart(config=config)
    old = read_config(run_dir)
    status = old.get("status")
    if not resume:
        if status == "complete":
            raise SoftSAEError(
                f"{run_dir} already holds a finished run; evaluate it with "
                f"`softsae eval {run_dir} DATA`, or choose another --out"
            )
        raise SoftSAEError(
            f"{run_dir} already holds an unfinished run; pass --resume to continue it, "
            "or choose another --out"
        )
    check_resumable(run_dir, old, config)
    if status == "complete":
        return RunStart(config=old, complete=True)
    ckpt = run_dir / CHECKPOINT_FILE
    if not ckpt.exists():
        log.warning("%s has no checkpoint yet; starting the run over from step 0", run_dir)
        return RunStart(config=config)
    state = load_checkpoint(ckpt)
    steps = (old.get("training") or {}).get("steps")
    if isinstance(steps, int) and not 0 <= state["step"] <= steps:
        raise SoftSAEError(
            f"{ckpt} is at step {state['step']}, outside this run's {steps} steps: delete "
            f"{ckpt.parent} and pass --resume again to restart the run from step 0"
        )
    return RunStart(state, _kept_metric_lines(run_dir, state["step"]), {**old, "status": "running"})


__all__ = [
    "CHECKPOINT_FILE",
    "METRICS_FILE",
    "RunStart",
    "check_resumable",
    "load_checkpoint",
    "prepare_run_dir",
    "read_config",
    "save_checkpoint",
    "save_finished",
    "write_config",
]
