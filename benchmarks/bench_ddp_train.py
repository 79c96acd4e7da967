"""Training throughput (tokens/s) on 1 and on N processes launched by torchrun.

    python benchmarks/bench_ddp_train.py [--procs 1,2] [--d 384 --latents 4096 --batch 4096]
        [--arch topk] [--steps 24] [--device cpu]

Writes random activations (N, d) to a temporary .npy, then for each process count runs
``torchrun --nproc-per-node P`` on this file's worker, which trains through the real
``train`` (DDP for P > 1) on the same global batches. Rank 0 times the steady state: the
batches its loader takes after the first few (so start-up, normalisation and process-group
set-up are left out). On the CPU each process gets cores / P threads. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import emit_json

WARMUP = 4
WORKER_ENV = "SOFTSAE_BENCH_DDP_WORKER"
"""Batches left out of the timing."""


def worker(args: argparse.Namespace) -> None:
    """One rank: train, and on rank 0 print tokens/s of the steady state."""
    from softsae_vision.data.arrays import ArraySource
    from softsae_vision.sae import SAE_REGISTRY
    from softsae_vision.training import TrainConfig, train

    inner = ArraySource.from_npy(args.data)
    stamps: list[float] = []

    class Timed:  # the source, with a time stamp per batch taken
        d = inner.d

        def __len__(self) -> int:
            return len(inner)

        def sample(self, n, seed):
            return inner.sample(n, seed)

        def batches(self, batch_size, seed, start=0):
            for batch in inner.batches(batch_size, seed, start):
                stamps.append(time.perf_counter())
                yield batch

        def iter_eval(self, batch_size):
            return inner.iter_eval(batch_size)

        def describe(self):
            return inner.describe()

    kwargs = {"k": 32} if args.arch != "relu" else {}
    sae = SAE_REGISTRY[args.arch](inner.d, args.latents, seed=0, **kwargs)
    cfg = TrainConfig(
        steps=args.steps, batch_size=args.batch, device=args.device, prefetch=0, log_every=10**6
    )
    train(sae, Timed(), cfg, progress=False)
    if os.environ.get("RANK", "0") == "0":
        timed = stamps[WARMUP : args.steps]  # prefetch=0: batch i is taken as step i starts
        seconds = timed[-1] - timed[0]
        steps = len(timed) - 1
        print(json.dumps({"steps_timed": steps, "tokens_per_s": steps * args.batch / seconds}))


def launch(args: argparse.Namespace, procs: int, data: Path) -> dict:
    threads = max(1, (os.cpu_count() or 1) // procs) if args.device == "cpu" else 1
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    env.pop("WORLD_SIZE", None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc-per-node={procs}", __file__]
    settings = {k: getattr(args, k) for k in ("latents", "batch", "arch", "steps", "device")}
    env[WORKER_ENV] = json.dumps({**settings, "data": str(data)})  # torchrun parses flags
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(done.stdout + done.stderr)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"procs": procs, "threads_per_proc": threads, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", default="1,2")
    parser.add_argument("--d", type=int, default=384)
    parser.add_argument("--latents", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--arch", default="topk")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--device", default="cpu")
    if WORKER_ENV in os.environ:
        worker(argparse.Namespace(**json.loads(os.environ[WORKER_ENV])))
        return
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "acts.npy"
        rng = np.random.default_rng(0)
        np.save(data, rng.standard_normal((16 * args.batch, args.d), dtype=np.float32))
        runs = [launch(args, int(p), data) for p in args.procs.split(",")]
    base = runs[0]["tokens_per_s"]
    for run in runs:
        run["speedup"] = run["tokens_per_s"] / base
    emit_json(
        {
            "d": args.d,
            "latents": args.latents,
            "batch": args.batch,
            "arch": args.arch,
            "device": args.device,
            "cpu_count": os.cpu_count(),
            "runs": runs,
        }
    )


if __name__ == "__main__":
    main()
