"""Runs launched by tests/training/test_ddp.py, under ``torchrun`` or as one process.

python _ddp_script.py equal DATA OUT        several architectures, one sweep (train_many)
python _ddp_script.py slow DATA OUT ARGS... ``softsae train ARGS`` that stalls (killed)
python _ddp_script.py mismatch DATA OUT     rank r asks for 10 + r steps (refused)
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np

from softsae_vision.errors import SoftSAEError

D, F = 16, 64


def write_data(path: Path, n: int = 4000) -> Path:
    """Correlated Gaussian rows (n, D) float32, with an offset (as ViT activations have)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, D)) @ rng.standard_normal((D, D)) + 3.0
    np.save(path, x.astype(np.float32))
    return path


def members() -> dict:
    """One SAE per architecture (and both k signals of SoftSAE), tiny."""
    from softsae_vision.sae import SAE_REGISTRY

    def make(arch: str, seed: int, **hparams: Any) -> Any:
        return SAE_REGISTRY[arch](D, F, seed=seed, **hparams)

    return {
        "topk": make("topk", 1, k=4),
        "batchtopk": make("batchtopk", 2, k=4),
        "matryoshka": make("matryoshka", 3, k=4),
        "relu": make("relu", 4),
        "softsae": make("softsae", 5, k=4),
        "softsae-soft": make("softsae", 6, k=4, k_signal="soft", estimator="lean"),
    }


def config():
    """640 rows a batch: SoftSAE's 512 target rows span both ranks' slices (320 + 192)."""
    from softsae_vision.training import TrainConfig

    return TrainConfig(steps=16, batch_size=640, device="cpu", log_every=5, checkpoint_every=5)


class StallingSource:
    """A source that stops yielding after ``batches_before_stall`` batches and waits to be
    killed: the run can neither finish nor write a later checkpoint, however slow the machine
    (a run that merely slept between batches could end before the test killed it)."""

    def __init__(self, inner, batches_before_stall: int) -> None:
        self.inner, self.stall_at, self.d = inner, batches_before_stall, inner.d

    def __len__(self) -> int:
        return len(self.inner)

    def sample(self, n, seed):
        return self.inner.sample(n, seed)

    def batches(self, batch_size, seed, start=0):
        for i, batch in enumerate(self.inner.batches(batch_size, seed, start)):
            if i == self.stall_at:
                threading.Event().wait()  # until SIGKILL
            yield batch

    def iter_eval(self, batch_size):
        return self.inner.iter_eval(batch_size)

    def describe(self):
        return self.inner.describe()


def main() -> int:
    mode, data, out = sys.argv[1:4]
    rank = int(os.environ.get("RANK", "0"))
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / f"pid{rank}").write_text(str(os.getpid()))  # for the test to kill
    from softsae_vision.data.arrays import ArraySource
    from softsae_vision.training import train
    from softsae_vision.training.sweep import train_many

    try:
        if mode == "equal":
            train_many(members(), ArraySource.from_npy(data), config(), out=Path(out) / "runs")
        elif mode == "slow":
            from softsae_vision.cli import build_parser
            from softsae_vision.cli.train import build_config, build_sae

            args = build_parser().parse_args(["train", data, "--out", f"{out}/run", *sys.argv[4:]])
            source = ArraySource.from_npy(data)
            sae = build_sae(args, source.d)
            cfg = build_config(args)  # stalls two batches after the first checkpoint
            stall = StallingSource(source, cfg.checkpoint_every + 2)
            train(sae, stall, cfg, run_dir=args.out)
        elif mode == "mismatch":
            from dataclasses import replace

            cfg = replace(config(), steps=10 + rank)
            train(members()["topk"], ArraySource.from_npy(data), cfg, run_dir=Path(out) / "run")
    except SoftSAEError as err:
        print(f"error: {err}", flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
