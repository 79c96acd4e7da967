"""AuxK's two paths, side by side, over SAE shapes and shares of dead latents.

    python benchmarks/bench_auxk.py [--shapes 4096x384x4096,2048x768x8192]
        [--dead 0.05,0.1,0.3,0.5,0.65,0.8] [--threads 1] [--device cpu]

Times one AuxK loss forward and backward (the encoder's gradient through the sparse encoding,
as in a training step) by the fixed path (a masked (B, F) copy, a top-k_aux over it, k_aux
decoder rows gathered per input) and by the compact path (the N dead latents' pre-activations
recomputed, a top-k_aux among them, one (B, N) × (N, d) product), interleaved, median of
repeats, k_aux = d / 2 as the trainer sets it. Shapes are B x d x F. Prints one JSON object:
per shape the milliseconds of each path per dead share, the share where the compact path
stops being faster (``crossover``: the first share measured where it is slower), and whether
the trainer's rule (``compact_serves``: compact up to COMPACT_DEAD_PER_AUX·k_aux dead latents)
picks the faster path at each share.
"""

from __future__ import annotations

import argparse

import torch
from _common import emit_json, time_interleaved

from softsae_vision.devices import resolve_device
from softsae_vision.ops.sparse_encode import SparseEncoding
from softsae_vision.training.losses import (
    COMPACT_DEAD_PER_AUX,
    _dead_recon_compact,
    _dead_recon_fixed,
    compact_serves,
)


def parse_shapes(text: str) -> list[tuple[int, int, int]]:
    """ "BxdxF,..." -> [(B, d, F), ...]."""
    shapes = []
    for part in text.split(","):
        B, d, F = (int(v) for v in part.lower().split("x"))
        shapes.append((B, d, F))
    return shapes


def shape_times(
    B: int, d: int, F: int, shares: list[float], repeats: int, device: torch.device
) -> dict:
    """Milliseconds of each path per dead share at one shape (one SAE, one batch)."""
    gen = torch.Generator().manual_seed(0)
    x_BD = torch.randn(B, d, generator=gen).to(device)
    W_enc_FD = (torch.randn(F, d, generator=gen) / d**0.5).to(device).requires_grad_()
    b_enc_F = torch.zeros(F, device=device, requires_grad=True)
    b_dec_D = torch.zeros(d, device=device, requires_grad=True)
    W_dec_FD = torch.nn.functional.normalize(torch.randn(F, d, generator=gen), dim=1)
    W_dec_FD = W_dec_FD.to(device).requires_grad_()
    residual_BD = torch.randn(B, d, generator=gen).to(device)
    k_aux = max(1, d // 2)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    enc = SparseEncoding(x_BD, W_enc_FD, b_enc_F, b_dec_D)
    rows = []
    for share in shares:
        dead_F = torch.zeros(F, dtype=torch.bool, device=device)
        dead_F[torch.randperm(F, generator=gen)[: max(1, round(share * F))].to(device)] = True
        n_dead = int(dead_F.sum())

        def run(path: str, dead_F: torch.Tensor = dead_F) -> None:
            if path == "fixed":
                recon_BD = _dead_recon_fixed(enc.z_BF, dead_F, W_dec_FD, k_aux, enc)
            else:  # the dead latents' indices, read back to the host as a step does
                dead_N = dead_F.nonzero().squeeze(1)
                recon_BD = _dead_recon_compact(enc.z_BF, dead_N, W_dec_FD, k_aux, enc)
            (recon_BD - residual_BD).pow(2).sum(-1).mean().backward()
            sync()
            for param in (W_enc_FD, b_enc_F, b_dec_D, W_dec_FD):
                param.grad = None

        secs = time_interleaved(
            {"fixed": lambda: run("fixed"), "compact": lambda: run("compact")}, repeats
        )
        fixed_ms, compact_ms = secs["fixed"] * 1e3, secs["compact"] * 1e3
        rule = "compact" if compact_serves(n_dead, k_aux) else "fixed"
        faster = "compact" if compact_ms < fixed_ms else "fixed"
        rows.append(
            {
                "dead_share": share,
                "fixed_ms": round(fixed_ms, 1),
                "compact_ms": round(compact_ms, 1),
                "rule_picks": rule,
                "rule_picks_faster": rule == faster,
            }
        )
    slower = [r["dead_share"] for r in rows if r["compact_ms"] >= r["fixed_ms"]]
    return {
        "B": B,
        "d": d,
        "F": F,
        "k_aux": k_aux,
        "by_share": rows,
        "crossover": slower[0] if slower else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shapes",
        default="4096x128x2048,4096x384x4096,2048x768x8192,1024x768x16384",
        help="comma-separated B x d x F",
    )
    parser.add_argument("--dead", default="0.05,0.1,0.3,0.5,0.65,0.8")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    shares = [float(v) for v in args.dead.split(",")]
    results = [
        shape_times(B, d, F, shares, args.repeats, device) for B, d, F in parse_shapes(args.shapes)
    ]
    emit_json(
        {
            "device": str(device),
            "threads": args.threads,
            "torch": torch.__version__,
            "compact_dead_per_aux": COMPACT_DEAD_PER_AUX,
            "shapes": results,
        }
    )


if __name__ == "__main__":
    main()
