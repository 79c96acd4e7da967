"""Everything the GPU-first work is judged by, in one run and one JSON object.

    python benchmarks/bench_gpu.py [--device auto] [--precision auto] [--skip extract,...]

Sections (each also a benchmark of its own, which this script calls):
- ``train``: tokens/s of ``train()`` per architecture, from an activation store (fp16, sent
  as fp16 and cast on the device) and from the same rows in memory, and their ratio, on two
  data distributions (gaussian, vit-like) (bench_store_loader.py --train);
- ``soft_topk``: soft top-k fwd+bwd / hard top-k fwd+bwd on four latent distributions and
  two k ranges, α 1e-3 (bench_soft_topk.py --all);
- ``step``: SoftSAE step / TopK step, paper and lean estimators, and for TopK, BatchTopK,
  Matryoshka and SoftSAE's hard phase the step with the dense encoder gradient over the one
  through the selected latents (bench_train_step.py --encoder-grad: above 1 means the sparse
  gradient should be the default on this device, see ops/sparse_encode.py);
- ``auxk``: AuxK's fixed path against its compact one (the dead latents' columns only, which
  reads their number back to the host) at 5 / 10 / 30 % dead latents (bench_auxk.py): on CUDA
  the default is the fixed path, untimed there until this section runs;
- ``extract``: extraction images/s against a bare forward of the same backbone at the same
  batch size (bench_extract.py).

Shapes follow the device: on CUDA the issue's (d 768, F 16384, B 8192; operator at
(4096, 16384) and (8192, 65536)); on a CPU smaller ones that finish in minutes (d 384,
F 4096, B 4096; operator at (1024, 16384); steps at 512/4096/2048). A section that fails
records its error and the others still run.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
from _common import emit_json

from softsae_vision.devices import resolve_device
from softsae_vision.training.precision import resolve_precision

SECTIONS = ("train", "soft_topk", "step", "auxk", "extract")


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def _train(dev, precision, gpu: bool, quick: bool) -> dict:
    from bench_store_loader import train_rates, write_store

    work = Path(tempfile.mkdtemp(prefix="bench_gpu_"))
    try:
        d, images = (768, 2000) if gpu else (384, 400)
        latents, batch = (16384, 8192) if gpu else (4096, 4096)
        if quick:
            d, images, latents, batch = 64, 40, 256, 512
        out = {}
        for dist in ("gaussian",) if quick else ("gaussian", "vit"):
            write_store(work / dist, images, d, 14, dist=dist)
            out[dist] = train_rates(
                work / dist,
                ("topk", "softsae", "softsae_lean"),
                latents=latents,
                batch_size=batch,
                steps=20 if gpu else 4,
                repeats=3 if gpu else 2,
                device=str(dev),
                precision=precision,
            )
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _soft_topk(dev, gpu: bool, quick: bool) -> list:
    from bench_soft_topk import DISTS, K_RANGES, measure

    shapes = [(4096, 16384), (8192, 65536)] if gpu else [(1024, 16384)]
    if quick:
        shapes = [(64, 2048)]
    out = []
    for batch, features in shapes:
        args = argparse.Namespace(
            batch=batch, features=features, alpha=1e-3, repeats=5 if gpu else 3, seed=0
        )
        cases = [measure(args, d, lo, hi, dev) for d in DISTS for lo, hi in K_RANGES]
        out.append(
            {
                "batch": batch,
                "features": features,
                "cases": cases,
                "worst_soft/hard": max(c["soft/hard"] for c in cases),
            }
        )
    return out


def _step(dev, precision, gpu: bool, quick: bool) -> list:
    from bench_train_step import step_times

    shapes = [(768, 16384, 8192)] if gpu else [(512, 4096, 2048), (768, 16384, 512)]
    if quick:
        shapes = [(64, 512, 256)]
    return [
        step_times(
            d,
            f,
            b,
            repeats=7 if gpu else 3,
            device=str(dev),
            precision=precision,
            encoder_grad=True,
        )
        for d, f, b in shapes
    ]


def _auxk(dev, gpu: bool, quick: bool) -> dict:
    """bench_auxk.py at the step section's shape: both AuxK paths' ms per dead share (fp32)."""
    from bench_auxk import shape_times

    B, d, F = (8192, 768, 16384) if gpu else (4096, 384, 4096)
    if quick:
        B, d, F = 512, 64, 512
    return shape_times(B, d, F, [0.05, 0.1, 0.3], repeats=5 if gpu else 3, device=dev)


def _extract(dev, gpu: bool, quick: bool) -> dict:
    """bench_extract.py's JSON (extraction against the bare forward and decoding alone)."""
    model = "timm/vit_base_patch16_224" if gpu else "timm/vit_small_patch16_224"
    if quick:
        model = "timm/test_vit"
    images, batch = (512, 64) if gpu else (48, 16)
    cmd = [
        sys.executable,
        str(Path(__file__).with_name("bench_extract.py")),
        "--model", model,
        "--images", str(8 if quick else images),
        "--batch-size", str(4 if quick else batch),
        "--repeats", "1",
        "--device", str(dev),
    ]  # fmt: skip
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "tf32", "bf16"))
    ap.add_argument("--skip", default="", help=f"comma-separated sections: {', '.join(SECTIONS)}")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    ap.add_argument("--quick", action="store_true", help="tiny shapes: a smoke test of the script")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    precision = resolve_precision(args.precision, dev)
    gpu = dev.type == "cuda"
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    result: dict = {
        "benchmark": "gpu",
        "device": str(dev),
        "device_name": _device_name(dev),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "precision": precision,
        "quick": args.quick,
    }
    runs = {
        "train": lambda: _train(dev, precision, gpu, args.quick),
        "soft_topk": lambda: _soft_topk(dev, gpu, args.quick),
        "step": lambda: _step(dev, precision, gpu, args.quick),
        "auxk": lambda: _auxk(dev, gpu, args.quick),
        "extract": lambda: _extract(dev, gpu, args.quick),
    }
    for name, fn in runs.items():
        if name in skip:
            continue
        t0 = time.perf_counter()
        try:
            result[name] = fn()
        except Exception as err:  # one failed section must not lose the others
            result[name] = {
                "error": f"{type(err).__name__}: {err}",
                "trace": traceback.format_exc(),
            }
        result.setdefault("seconds", {})[name] = round(time.perf_counter() - t0, 1)
    emit_json(result)


if __name__ == "__main__":
    main()
