"""The science suite: does k̂ follow the information in the input, on data nobody tuned on?

    python benchmarks/science.py [--quick] [--out docs] [--only-synthetic | --only-photos]
                                 [--regimes a,b] [--models a,b] [--seed N] [--reuse-rows]
                                 [--readme README.md]
    python benchmarks/science.py --combine part1/science.json part2/science.json ...

Trains SoftSAE (our default, each other k estimator, each design variant) and
the paper's recipe run with our code, next to TopK and BatchTopK with the same budget K, on

- synthetic regimes spanning d 64-768, 2-16 atoms per dimension, 1-4 up to 1-64 active atoms
  per sample, uniform / exponential / log-normal coefficients, noise 0-0.1, coherent
  (clustered) atoms and correlated co-activation (see ``science_regimes.py``);
- real photographs: the bundled assets and tiles of Debian's wallpaper photographs, fetched at
  run time and never committed (``science_photos.py``).

Writes ``science.json`` and ``science.md`` into ``--out`` (docs/ by default: the results
page) and, when writing docs/, the table between README's science-suite markers (its rows are
``science_models.RECIPES``). ``--quick`` runs a reduced suite in a few minutes on two CPU cores
(tests use it).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from science_models import BASE_TRAINING, MODELS, QUICK_MODELS, RECIPES, build  # noqa: E402
from science_regimes import QUICK_REGIMES, REGIMES, Regime  # noqa: E402
from science_report import (  # noqa: E402
    combine,
    differ_table,
    max_loss_ratio,
    update_readme,
    write_results,
)

from softsae_vision.analysis.stats import correlate  # noqa: E402
from softsae_vision.ops import hard_topk  # noqa: E402
from softsae_vision.sae.k_targets import allocate  # noqa: E402
from softsae_vision.training import evaluate, train  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "docs"


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's ρ with average ranks; NaN when either side is constant."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(correlate(a, b, n_boot=0, n_perm=0)["spearman"]["r"])


def fvu_with_counts(sae, x_BD: torch.Tensor, k_B: torch.Tensor) -> float:
    """Pooled FVU of ``sae``'s encoder and decoder when row b keeps its top-k_B latents."""
    with torch.no_grad():
        z_BF = sae.pre_acts(sae.normalize(x_BD)).clamp_min(0)
        codes_BF = hard_topk(z_BF, k_B.long().clamp(0, z_BF.shape[1]))
        x_hat_BD = sae.denormalize(sae.decode_normalized(codes_BF))
        return float((x_hat_BD - x_BD).square().sum() / (x_BD - x_BD.mean(0)).square().sum())


def allocation_metrics(sae, x_BD: torch.Tensor, k: int, n_true_B: np.ndarray) -> dict:
    """FVU of a k-predicting SAE's own encoder with its k̂ replaced by the exact allocation k*
    (what the estimator is trained to predict) and by a constant K: how much of the FVU is the
    encoder and how much the estimator's prediction; and ρ(k*, true k), the tracking a k̂ that
    predicted k* exactly would reach with this dictionary."""
    with torch.no_grad():
        xn_BD = sae.normalize(x_BD)
        z_BF = sae.pre_acts(xn_BD)
        k_star_B = allocate(sae.gains_and_energy(xn_BD, z_BF)[0], k, count=sae.k_count)
    return {
        "fvu_kstar": fvu_with_counts(sae, x_BD, k_star_B),
        "fvu_const_k": fvu_with_counts(sae, x_BD, torch.full((len(x_BD),), k)),
        "spearman_kstar": spearman(k_star_B.numpy(), n_true_B),
    }


RECOVERED_COSINE = 0.9
"""A true atom counts as recovered when a live latent's decoder row has cosine above this."""


def atoms_recovered(sae, regime: Regime, live_F: torch.Tensor) -> float:
    """Share of the regime's true atoms that some live latent's decoder direction matches
    (cosine > ``RECOVERED_COSINE``): whether the features are the atoms, not only whether
    the reconstruction is good. ``live_F``: the latents that fired on held-out rows."""
    atoms_AD = regime.data.atoms()[: regime.data.n_atoms].float()  # the offset row excluded
    with torch.no_grad():
        W_FD = torch.nn.functional.normalize(sae.W_dec.float()[live_F], dim=1)
        if len(W_FD) == 0:
            return 0.0
        best_A = (torch.nn.functional.normalize(atoms_AD, dim=1) @ W_FD.T).max(1).values
    return float((best_A > RECOVERED_COSINE).float().mean())


def run_model(
    name: str, regime: Regime, x_train, x_test, n_test, steps: int, workdir: Path, seed: int = 0
):
    """Train one model on one regime (initialisation and batch order from ``seed``); return its
    held-out metrics."""
    sae, cfg = build(name, regime.d, regime.n_latents, regime.k, steps, seed=seed)
    t0 = time.perf_counter()
    run_dir = workdir / f"{regime.name}-{name}-{seed}"
    train(sae, x_train, cfg, run_dir=run_dir, progress=False)
    seconds = time.perf_counter() - t0
    sae = sae.cpu().eval()
    metrics = evaluate(sae, [x_test], device="cpu")
    with torch.no_grad():
        out = sae(x_test)
    l0 = (out.codes != 0).sum(-1).numpy()
    n_true = n_test.numpy()
    row = {
        "spearman_l0": spearman(l0, n_true),
        "spearman_khat": spearman(out.k_hat.numpy(), n_true) if out.k_hat is not None else None,
        "l0_mean": metrics["l0_mean"],
        "l0_over_k": metrics["l0_mean"] / regime.k,
        "fvu": metrics["fvu"],
        "dead_frac": metrics["dead_frac"],
        "atoms_recovered": atoms_recovered(sae, regime, (out.codes != 0).any(0)),
        "max_loss_ratio": max_loss_ratio(run_dir / "metrics.jsonl", cfg.steps),
        "seconds": seconds,
    }
    if out.k_hat is not None:
        row.update(allocation_metrics(sae, x_test, regime.k, n_true))
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}


REUSED_SUFFIX = " (20k rows)"
"""Name suffix of rows trained on a fixed set of rows reused every epoch (``--reuse-rows``)."""

GENERATE_CHUNK = 20000
"""Rows drawn per call: a regime's (rows, atoms) coefficient matrix is dense, and 384k rows of
2048 atoms (one pass, the default) got two suite processes killed for memory."""


def training_rows(regime: Regime, n: int) -> torch.Tensor:
    """n training rows (n, d): chunk i drawn with seed 1 + 1000·i (the first chunk is the
    suite's usual 20,000-row training set)."""
    chunks = [
        regime.data.generate(min(GENERATE_CHUNK, n - start), seed=1 + 1000 * i)[0]
        for i, start in enumerate(range(0, n, GENERATE_CHUNK))
    ]
    return torch.cat(chunks)


def run_synthetic(
    regimes, models, steps, n_train, workdir, log, save, seed: int = 0, suffix: str = ""
) -> dict:
    """Every model on every regime; ``save(results)`` after each model (partial results).

    The data are the same for every seed; a seed other than 0 changes each model's
    initialisation and batch order, and its rows are named "<model> (seed <seed>)".
    ``suffix`` is appended to every row's name (e.g. " (20k rows)").
    """
    results: dict = {}
    for regime in regimes:
        x_train = training_rows(regime, n_train)
        x_test, n_test = regime.data.generate(4000, seed=2)
        results[regime.name] = {"regime": regime.describe(), "models": {}}
        for name in models:
            row = run_model(name, regime, x_train, x_test, n_test, steps, workdir, seed)
            name = (name if seed == 0 else f"{name} (seed {seed})") + suffix
            results[regime.name]["models"][name] = row
            save(results)
            log(
                f"{regime.name:14s} {name:22s} "
                + " ".join(f"{k}={v:.3f}" for k, v in row.items() if isinstance(v, float))
            )
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="reduced suite (a few minutes on CPU)")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument(
        "--readme",
        default=None,
        help="README whose science-suite table to rewrite (default: the repository's README "
        "when --out is the default docs folder; '' for none)",
    )
    ap.add_argument("--regimes", default=None, help="comma-separated regime names")
    ap.add_argument("--models", default=None, help="comma-separated model names")
    ap.add_argument("--steps", type=int, default=None, help="override training steps")
    ap.add_argument("--only-synthetic", action="store_true")
    ap.add_argument("--only-photos", action="store_true")
    ap.add_argument("--photo-cache", default=None, help="where fetched photographs are kept")
    ap.add_argument("--photo-sets", default="bundled,wallpapers", help="photo sets to measure")
    ap.add_argument("--threads", type=int, default=None, help="torch threads")
    ap.add_argument(
        "--reuse-rows",
        action="store_true",
        help="train on a fixed set of 20,000 rows (8,000 with --quick) reused every epoch "
        "instead of steps × batch fresh rows, each seen once as from a large store (the "
        "default); rows are named '<model> (20k rows)'. The SAEs overfit a fixed set: the "
        "held-out budget and FVU then measure the overfitting too",
    )
    ap.add_argument(
        "--seed",
        type=int,
        default=0,
        help="models' initialisation and batch-order seed (synthetic regimes; rows of a seed "
        "other than 0 are named '<model> (seed N)', so runs of several seeds can be combined)",
    )
    ap.add_argument(
        "--combine",
        nargs="+",
        default=None,
        metavar="JSON",
        help="write the page from science.json files of partial runs instead of training",
    )
    args = ap.parse_args(argv)
    readme = args.readme
    if readme is None and Path(args.out).resolve() == DEFAULT_OUT:
        readme = str(DEFAULT_OUT.parent / "README.md")

    def publish(results: dict) -> None:
        write_results(results, Path(args.out))
        if readme:
            update_readme(Path(readme), differ_table(results, RECIPES, "wallpapers"))

    if args.combine:
        publish(combine([Path(p) for p in args.combine]))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    regimes = QUICK_REGIMES if args.quick else REGIMES
    if args.regimes:
        wanted = args.regimes.split(",")
        regimes = [r for r in REGIMES + QUICK_REGIMES if r.name in wanted]
    models = list(QUICK_MODELS if args.quick else MODELS)
    if args.models:
        models = args.models.split(",")
    unknown = set(models) - set(MODELS)
    if unknown:
        ap.error(f"unknown models {sorted(unknown)}; known: {sorted(MODELS)}")
    steps = args.steps or (400 if args.quick else 1500)
    # fresh rows every step by default, as on a large store: no row is seen twice
    n_train, suffix = steps * BASE_TRAINING["batch_size"], ""
    if args.reuse_rows:
        n_train, suffix = (8000 if args.quick else 20000), REUSED_SUFFIX

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    results: dict = {"quick": args.quick, "steps": steps, "torch": torch.__version__}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.only_photos:

            def save(synthetic: dict) -> None:
                write_results({**results, "synthetic": synthetic}, Path(args.out))

            results["synthetic"] = run_synthetic(
                regimes, models, steps, n_train, Path(tmp), log, save, args.seed, suffix
            )
        if not args.only_synthetic:
            from science_photos import run_photos

            results["photos"] = run_photos(
                quick=args.quick,
                cache=args.photo_cache,
                workdir=Path(tmp),
                log=log,
                models=tuple(args.models.split(",")) if args.models else None,
                sets=tuple(args.photo_sets.split(",")),
                save=lambda photos: write_results({**results, "photos": photos}, Path(args.out)),
            )
    results["seconds"] = time.perf_counter() - t0
    publish(results)
    log(f"wrote {Path(args.out) / 'science.md'} in {results['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
