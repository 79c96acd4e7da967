"""The whole pipeline on the bundled photographs: extract, train SoftSAE and TopK, report.

Tries the pretrained default backbone first; without network (or with ``offline=True``) it says
so once and uses random weights, and the report's header warns that such features are not
semantic. Sized to finish in a few minutes on a 2-core CPU.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from softsae_vision._io import write_json_atomic
from softsae_vision.errors import SoftSAEError

if TYPE_CHECKING:
    from softsae_vision.sae.base import BaseSAE

log = logging.getLogger(__name__)

DEFAULT_MODEL = "timm/vit_small_patch14_reg4_dinov2.lvd142m"
ASSETS = Path(__file__).resolve().parents[2] / "assets" / "images"
RANDOM_WEIGHTS_BANNER = (
    "This demo ran with RANDOM backbone weights (pretrained weights were not available), so the "
    "features below are not semantic: they show what the pipeline draws, not what the model sees."
)


@dataclass(frozen=True)
class DemoSettings:
    model: str = DEFAULT_MODEL
    """Backbone name (timm/... or open_clip/...)."""
    image_size: int | None = 224
    """Input resolution given to the backbone."""
    layer: int = -2
    """Block whose residual output is analysed (-2: the penultimate block)."""
    k: int = 16
    """Mean L0 budget shared by SoftSAE and TopK."""
    n_latents: int = 1024
    """Dictionary size."""
    steps: int = 600
    """Training steps per SAE."""
    batch_size: int = 512
    """Patch tokens per training step."""
    n_features: int = 12
    """Features drawn in the report."""
    n_boot: int = 500
    """Bootstrap resamples for correlation intervals."""


@dataclass
class DemoResult:
    report: Path
    baseline_report: Path
    summary: dict
    pretrained: bool


NAMES = {"softsae": "SoftSAE", "topk": "TopK"}


def compare(summary: dict, a: str = "softsae", b: str = "topk") -> dict:
    """Which of two runs reconstructs better (lower FVU) and by how much, and their dead latents.

    ``summary[name]`` is an :func:`evaluate` result. The FVU gap is relative to the worse run.
    """
    fvu = {name: float(summary[name]["fvu"]) for name in (a, b)}
    better, worse = sorted((a, b), key=fvu.__getitem__)
    gap = (fvu[worse] - fvu[better]) / fvu[worse] if fvu[worse] > 0 else 0.0
    return {
        "fvu_winner": better if gap > 1e-3 else "tie",
        "fvu": fvu,
        "fvu_gap_relative": gap,
        "l0_mean": {name: float(summary[name]["l0_mean"]) for name in (a, b)},
        "dead_frac": {name: float(summary[name]["dead_frac"]) for name in (a, b)},
    }


def verdict(comparison: dict) -> list[str]:
    """The comparison in two sentences a reader can check against the numbers."""
    fvu, l0, dead = comparison["fvu"], comparison["l0_mean"], comparison["dead_frac"]
    a, b = list(fvu)
    numbers = f"FVU {NAMES.get(a, a)} {fvu[a]:.4f}, {NAMES.get(b, b)} {fvu[b]:.4f}"
    winner = comparison["fvu_winner"]
    if winner == "tie":
        first = f"Reconstruction is a tie ({numbers})"
    else:
        gap = 100 * comparison["fvu_gap_relative"]
        first = f"{NAMES.get(winner, winner)} reconstructs better: {gap:.1f}% lower FVU ({numbers})"
    second = (
        f"mean L0 {l0[a]:.1f} vs {l0[b]:.1f}; dead latents {100 * dead[a]:.0f}% vs "
        f"{100 * dead[b]:.0f}% ({NAMES.get(a, a)} vs {NAMES.get(b, b)})"
    )
    return [first + ",", second + "; measured on the demo's own training patches."]


def load_demo_backbone(settings: DemoSettings, offline: bool, device: str):
    """The pretrained backbone if its weights can be had, else the same one with random weights."""
    from softsae_vision.backbones import load_backbone

    if not offline:
        try:
            return load_backbone(
                settings.model, pretrained=True, device=device, image_size=settings.image_size
            ), True
        except SoftSAEError as err:
            log.warning("pretrained weights unavailable (%s); using random weights", err)
    return load_backbone(
        settings.model, pretrained=False, device=device, image_size=settings.image_size
    ), False


def run_image_demo(
    out: str | Path,
    settings: DemoSettings | None = None,
    images: str | Path | None = None,
    offline: bool = False,
    device: str = "auto",
    progress: bool = True,
) -> DemoResult:
    """Run extraction, training (SoftSAE and TopK, same K) and the HTML reports into ``out``."""
    from softsae_vision.data.extract import extract
    from softsae_vision.data.store_source import StoreSource
    from softsae_vision.sae import SoftSAE, TopKSAE
    from softsae_vision.sae.base import CONFIG_FILE
    from softsae_vision.training import TrainConfig, evaluate, train
    from softsae_vision.viz.report import build_report

    settings = settings or DemoSettings()
    out = Path(out)
    images = Path(images) if images is not None else ASSETS
    if not images.exists():
        raise SoftSAEError(
            f"demo images not found at {images}; run from a clone of the repository "
            "(they live in assets/images) or pass --images DIR"
        )
    backbone, pretrained = load_demo_backbone(settings, offline, device)
    store = out / "store"
    extract(
        backbone,
        images,
        store,
        layers=(settings.layer,),
        tokens=None,  # every kind the model has: CLS, registers, patches
        batch_size=16,
        progress=progress,
    )
    source = StoreSource(store, layer=settings.layer, tokens="patch")
    cfg = TrainConfig(
        steps=settings.steps,
        batch_size=settings.batch_size,
        lr=2e-3,
        device=device,
        log_every=10,
        checkpoint_every=max(50, settings.steps // 4),
    )
    runs = {"softsae": out / "softsae", "topk": out / "topk"}
    saes = {
        "softsae": SoftSAE(source.d, settings.n_latents, k=settings.k),
        "topk": TopKSAE(source.d, settings.n_latents, k=settings.k),
    }
    summary: dict = {"model": settings.model, "pretrained": pretrained, "k": settings.k}
    for name, sae in saes.items():
        finished = _finished_run(runs[name])
        if finished is not None:
            sae = saes[name] = finished
        else:
            resume = (runs[name] / CONFIG_FILE).exists()  # an unfinished run: continue it
            train(sae, source, cfg, run_dir=runs[name], resume=resume, progress=progress)
        summary[name] = evaluate(sae, source.iter_eval(4096), device=device)
    banner = None if pretrained else RANDOM_WEIGHTS_BANNER
    report = build_report(  # one page: SoftSAE and its matched TopK side by side
        [runs["softsae"], runs["topk"]],
        store,
        out / "report",
        banner=banner,
        n_features=settings.n_features,
        n_boot=settings.n_boot,
        title=f"SoftSAE and TopK on {settings.model} patch tokens (demo)",
        device="cpu",
        progress=progress,
    )
    summary["comparison"] = compare(summary)
    write_json_atomic(out / "summary.json", summary)
    return DemoResult(report, report, summary, pretrained)


def _finished_run(run_dir: Path) -> BaseSAE | None:
    """The SAE of a finished run in ``run_dir`` (kept from an earlier demo), else None."""
    from softsae_vision.sae.base import CONFIG_FILE, load_run

    if not (run_dir / CONFIG_FILE).exists():
        return None
    try:
        return load_run(run_dir).sae
    except SoftSAEError:  # unfinished or damaged: training resumes it or says what is wrong
        return None
