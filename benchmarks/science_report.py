"""Write the science suite's results: science.json and a Markdown page."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from softsae_vision._io import write_json_atomic, write_text_atomic

WARMUP_FRAC = 0.1
"""Logged losses before this fraction of the run are not checked for spikes."""


def max_loss_ratio(metrics_path: Path, steps: int) -> float:
    """Largest logged loss after warm-up over the running median of the losses before it."""
    rows = [json.loads(line) for line in metrics_path.read_text().splitlines()]
    losses = [(r["step"], r["loss"]) for r in rows]
    worst = 0.0
    for i, (step, loss) in enumerate(losses):
        if step < WARMUP_FRAC * steps or i < 3:
            continue
        median = float(np.median([v for _, v in losses[:i]]))
        if median > 0:
            worst = max(worst, loss / median)
    return worst


def _fmt(v, digits: int = 2) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


SEED_ROW = re.compile(r"^(?P<model>.+) \(seed (?P<seed>\d+)\)$")
"""Rows of a seed other than 0 are named "<model> (seed N)" (``science.py --seed``)."""


def _models(synthetic: dict) -> list[str]:
    """Every model that ran on some regime, in first-seen order (seed rows excluded: they are
    summarised per model in the seeds table)."""
    names = (m for res in synthetic.values() for m in res["models"])
    return list(dict.fromkeys(m for m in names if not SEED_ROW.match(m)))


def seed_table(synthetic: dict) -> list[str]:
    """For each model with rows of other seeds: per regime, FVU and ρ(L0, true k) as the mean
    over seeds with their range (seed 0 is the unsuffixed row). Empty without seed rows."""
    seeds: dict[str, set[str]] = {}
    for res in synthetic.values():
        for name in res["models"]:
            if found := SEED_ROW.match(name):
                seeds.setdefault(found["model"], set()).add(found["seed"])
    if not seeds:
        return []

    def spread(values: list[float], digits: int) -> str:
        if not values:
            return "—"
        mean, low, high = np.mean(values), min(values), max(values)
        return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"

    lines = [
        "| regime | model | seeds | FVU, mean [min, max] | ρ(L0, true k), mean [min, max] |",
        "|---|---|---|---|---|",
    ]
    for name, res in synthetic.items():
        for model, others in seeds.items():
            names = [model] + [f"{model} (seed {s})" for s in sorted(others, key=int)]
            rows = [res["models"][n] for n in names if n in res["models"]]
            if len(rows) < 2:
                continue
            rho = [r["spearman_l0"] for r in rows if r["spearman_l0"] is not None]
            lines.append(
                f"| {name} | {model} | {len(rows)} | {spread([r['fvu'] for r in rows], 3)} | "
                f"{spread(rho, 2)} |"
            )
    return lines


METRIC_TABLES = (
    ("spearman_l0", "Spearman ρ(realised L0, true number of active atoms)", 2),
    ("fvu", "held-out FVU (pooled)", 3),
    ("l0_over_k", "realised mean L0 ÷ K", 2),
    (
        "atoms_recovered",
        "true atoms recovered (share with a live latent's decoder direction at cosine > 0.9)",
        2,
    ),
    ("fvu_kstar", "FVU of SoftSAE's encoder with k̂ replaced by the exact allocation k*", 3),
    ("fvu_const_k", "FVU of SoftSAE's encoder with k̂ replaced by a constant K", 3),
    (
        "spearman_kstar",
        "Spearman ρ(k*, true number of active atoms): how well the exact allocation k* of each "
        "SoftSAE's own dictionary tracks the truth, the ceiling of a k̂ trained on k*",
        2,
    ),
)


def regime_table(synthetic: dict) -> list[str]:
    lines = [
        "| regime | d | atoms/d | active | coefficients, structure, noise | K | F |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, res in synthetic.items():
        r = res["regime"]
        lines.append(
            f"| {name} | {r['d']} | {r['atoms_per_dim']:.0f} | {r['min_active']}-{r['max_active']}"
            f" | {r['coeff_law']}, {r['structure']}, {r['noise']} | {r['k']} | {r['n_latents']} |"
        )
    return lines


def synthetic_table(synthetic: dict, key: str, digits: int) -> list[str]:
    """Regimes as rows, models as columns, one metric."""
    models = [  # only the models that measure this metric
        m
        for m in _models(synthetic)
        if any(key in res["models"].get(m, {}) for res in synthetic.values())
    ]
    lines = ["| regime | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    for name, res in synthetic.items():
        cells = [
            _fmt(res["models"][m].get(key), digits) if m in res["models"] else "not run"
            for m in models
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _over_regimes(rows: list[dict]) -> dict:
    """One model's rows (one per regime) summarised: mean and min ρ(L0, true k) (None where ρ
    is undefined everywhere), mean FVU, the realised L0 ÷ K furthest from 1, largest spike."""
    rho = [r["spearman_l0"] for r in rows if r["spearman_l0"] is not None]
    return {
        "mean_rho": float(np.mean(rho)) if rho else None,
        "min_rho": float(np.min(rho)) if rho else None,
        "mean_fvu": float(np.mean([r["fvu"] for r in rows])),
        "worst_l0_over_k": max((r["l0_over_k"] for r in rows), key=lambda v: abs(v - 1)),
        "max_spike": max(r["max_loss_ratio"] for r in rows),
    }


def synthetic_summary(synthetic: dict) -> list[str]:
    models = _models(synthetic)
    lines = [
        "| model | regimes | mean ρ(L0, true k) | min ρ | mean ρ(k̂, true k) | mean FVU | "
        "mean atoms recovered | max abs(L0÷K − 1) | max loss spike |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in models:
        rows = [res["models"][m] for res in synthetic.values() if m in res["models"]]
        rk = [r["spearman_khat"] for r in rows if r.get("spearman_khat") is not None]
        rec = [r["atoms_recovered"] for r in rows if r.get("atoms_recovered") is not None]
        agg = _over_regimes(rows)
        lines.append(
            f"| {m} | {len(rows)} | {_fmt(agg['mean_rho'])} | {_fmt(agg['min_rho'])} | "
            f"{_fmt(float(np.mean(rk)) if rk else None)} | {_fmt(agg['mean_fvu'], 3)} | "
            f"{_fmt(float(np.mean(rec)) if len(rec) == len(rows) else None)} | "
            f"{_fmt(abs(agg['worst_l0_over_k'] - 1), 3)} | {_fmt(agg['max_spike'])} |"
        )
    return lines


def photo_table(photos: dict) -> list[str]:
    lines = [
        "| photo set | images | model | mean L0 | FVU | per-image ρ(k, JPEG bpp) [95% CI] | "
        "per-image ρ(k, gradient) | per-patch ρ(k, gradient) [95% CI] |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for set_name, res in photos.items():
        for model, row in res["models"].items():
            lines.append(
                f"| {set_name} | {res['n_images']} | {model} | {_fmt(row['l0_mean'])} | "
                f"{_fmt(row['fvu'], 3)} | {_ci(row, 'image_jpeg_bpp')} | "
                f"{_ci(row, 'image_gradient')} | {_ci(row, 'patch_gradient')} |"
            )
    return lines


def _ci(row: dict, key: str) -> str:
    if key not in row:
        return "not measured"
    stat = row[key]
    if not stat or stat.get("r") is None:
        return "undefined (k constant)"
    return f"{stat['r']:.2f} [{stat['ci_low']:.2f}, {stat['ci_high']:.2f}]"


README_START = "<!-- science-suite table: written by benchmarks/science.py, do not edit -->"
README_END = "<!-- end of science-suite table -->"


def differ_table(results: dict, recipes: dict[str, str], photo_set: str) -> list[str]:
    """README's table: each recipe's suite summary, FVU against TopK's, one photo set."""
    synthetic = results.get("synthetic", {})
    photos = results.get("photos", {}).get(photo_set, {}).get("models", {})
    lines = [
        "| recipe | regimes | mean ρ(L0, true k) | min ρ | mean FVU | FVU ≤ TopK's | "
        f"worst realised L0 vs K | worst loss spike | {photo_set}: ρ(k, JPEG bpp) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for model, recipe in recipes.items():
        regimes = [res["models"] for res in synthetic.values() if model in res["models"]]
        if not regimes:
            continue
        rows = [m[model] for m in regimes]
        agg = _over_regimes(rows)
        vs_topk = [m[model]["fvu"] <= m["topk"]["fvu"] for m in regimes if "topk" in m]
        photo = photos.get(model, {}).get("image_jpeg_bpp")
        lines.append(
            f"| {recipe} | {len(rows)} | {_fmt(agg['mean_rho'])} | {_fmt(agg['min_rho'])} | "
            f"{_fmt(agg['mean_fvu'], 3)} | {sum(vs_topk)} of {len(vs_topk)} | "
            f"{agg['worst_l0_over_k'] - 1:+.1%} | {agg['max_spike']:.1f}× | "
            f"{_fmt(photo['r']) if photo and photo.get('r') is not None else 'not run'} |"
        )
    return lines


def update_readme(readme: Path, table: list[str]) -> None:
    """Replace the lines between README's science-suite markers with ``table``."""
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        raise SystemExit(f"{readme} has no science-suite markers ({README_START!r} … end)")
    head, rest = text.split(README_START, 1)
    tail = rest.split(README_END, 1)[1]
    block = "\n".join([README_START, *table, README_END])
    write_text_atomic(readme, head + block + tail)


def write_results(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "science.json", results)
    lines = [
        "# Science suite results",
        "",
        "Generated by `python benchmarks/science.py"
        + (" --quick" if results.get("quick") else "")
        + f"` ({results.get('steps')} steps per model, torch {results.get('torch')}, "
        f"{results.get('seconds', 0) / 60:.0f} min of training in all). Do not edit by hand.",
        "",
    ]
    if results.get("note"):
        lines += [results["note"], ""]
    if results.get("caveat"):
        lines += [f"**Caveat.** {results['caveat']}", ""]
    if "synthetic" in results:
        lines += [
            "## Synthetic regimes (held-out data, true number of active atoms known)",
            "",
            "ρ(L0) is Spearman's ρ between each input's realised L0 and its true number of",
            "active atoms; FVU is pooled over the held-out set; L0÷K is the realised mean L0",
            "over the budget. TopK's L0 is constant wherever every row has K positive latents",
            "(ρ undefined: —).",
            "",
            "### Summary over regimes",
            "",
            *synthetic_summary(results["synthetic"]),
            "",
            "### Regimes",
            "",
            *regime_table(results["synthetic"]),
            "",
        ]
        for key, title, digits in METRIC_TABLES:
            lines += [f"### {title}", "", *synthetic_table(results["synthetic"], key, digits), ""]
        seeds = seed_table(results["synthetic"])
        if seeds:
            lines += [
                "### Other seeds",
                "",
                "The same data, other initialisations and batch orders (`--seed N`); the tables",
                "above are seed 0.",
                "",
                *seeds,
                "",
            ]
    if "photos" in results:
        lines += [
            "## Photographs",
            "",
            "Per-image k is the mean over an image's patch tokens of k̂ (SoftSAE) or of the",
            "realised L0 (baselines); per-patch ρ pools patches and bootstraps whole images.",
            "",
            *photo_table(results["photos"]),
            "",
        ]
        for set_name, res in results["photos"].items():
            lines.append(f"- **{set_name}**: {res['description']}")
        lines.append("")
    write_text_atomic(out / "science.md", "\n".join(lines))


def combine(paths: list[Path]) -> dict:
    """One results object from several partial runs (e.g. one process per regime)."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    out: dict = {k: parts[0][k] for k in ("quick", "steps", "torch")}
    out["seconds"] = sum(p.get("seconds", 0) for p in parts)
    out["parts"] = sum(p.get("parts", 1) for p in parts)  # a combined part counts its own
    out["note"] = (
        f"Assembled with `--combine` from {out['parts']} partial runs (one process per group of "
        "regimes or models; later runs replace earlier rows model by model); every row of one "
        "model on one regime comes from one run."
    )
    caveats = [p["caveat"] for p in parts if p.get("caveat")]
    if caveats:  # what a part's reader must know (e.g. how its rows were produced)
        out["caveat"] = " ".join(dict.fromkeys(caveats))
    for part in parts:
        for section in ("synthetic", "photos"):
            for name, res in part.get(section, {}).items():
                merged = out.setdefault(section, {}).setdefault(name, {**res, "models": {}})
                merged["models"].update(res["models"])  # later parts win, model by model
    return out
