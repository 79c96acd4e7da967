"""Photographs in the science suite: does k̂ follow image complexity on real images?

Two sets, both run in the demo's setting (the demo backbone with random weights, its layer,
patch tokens, K 16, F 1024, its training schedule):

- ``bundled``: the 43 photographs in assets/images;
- ``wallpapers``: tiles of the photographs in Debian's ``plasma-workspace-wallpapers``,
  fetched at run time with ``apt-get download`` (no network other than the package archive;
  never committed — their licences do not all allow redistribution here). Each wallpaper's
  largest landscape image is scaled to a 672-pixel short side, centre-cropped and cut into a
  3 × 3 grid of 224-pixel tiles.

Per set and model: mean realised L0, pooled FVU, and Spearman's ρ (bootstrap 95 % CI) of the
per-image k — mean k̂ over patches for SoftSAE, mean realised L0 for the baselines — with
JPEG bits per pixel and gradient energy, and per patch with gradient energy.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from science_models import build
from science_report import max_loss_ratio

from softsae_vision.analysis.complexity_table import correlate_patches, store_complexity
from softsae_vision.analysis.kstats import k_maps
from softsae_vision.analysis.reading import iter_chunks, patch_positions
from softsae_vision.analysis.stats import correlate
from softsae_vision.backbones import load_backbone
from softsae_vision.data.extract import extract
from softsae_vision.data.store_source import StoreSource
from softsae_vision.demo.images import ASSETS, DemoSettings
from softsae_vision.sae.k_targets import allocate
from softsae_vision.training import evaluate, train

PACKAGE = "plasma-workspace-wallpapers"
TILE, GRID = 224, 3
PHOTO_MODELS = (
    "softsae",
    "softsae-paper",
    "softsae-lean",
    "softsae-gains",
    "softsae-loggains",
    "paper-recipe",
    "topk",
    "batchtopk",
)
QUICK_PHOTO_MODELS = ("softsae", "topk", "batchtopk")
DEFAULT_CACHE = Path.home() / ".cache" / "softsae_vision" / "science_photos"


def fetch_wallpaper_tiles(cache: Path) -> Path:
    """Tiles of Debian's wallpaper photographs under ``cache/tiles`` (downloaded once)."""
    tiles = cache / "tiles"
    if tiles.is_dir() and any(tiles.iterdir()):
        return tiles
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        subprocess.run(["apt-get", "download", PACKAGE], cwd=tmp, check=True, capture_output=True)
        deb = next(Path(tmp).glob("*.deb"))
        subprocess.run(["dpkg", "-x", str(deb), str(Path(tmp) / "x")], check=True)
        staging = cache / "tiles.partial"
        staging.mkdir(exist_ok=True)
        for folder in sorted((Path(tmp) / "x" / "usr/share/wallpapers").glob("*/contents")):
            sources = [
                p
                for p in (folder / "images").glob("*")
                if p.suffix.lower() in (".jpg", ".jpeg", ".png")
            ]
            landscape = [p for p in sources if _is_landscape(p)]
            if not landscape:
                continue
            best = max(landscape, key=lambda p: Image.open(p).size[0])
            _cut_tiles(best, staging, folder.parent.name)
        staging.rename(tiles)
    return tiles


def _is_landscape(path: Path) -> bool:
    with Image.open(path) as im:
        return im.size[0] >= im.size[1]


def _cut_tiles(path: Path, out: Path, stem: str) -> None:
    with Image.open(path) as im:
        im = im.convert("RGB")
        side = TILE * GRID
        scale = side / min(im.size)
        im = im.resize((round(im.size[0] * scale), round(im.size[1] * scale)), Image.BICUBIC)
        left, top = (im.size[0] - side) // 2, (im.size[1] - side) // 2
        for i in range(GRID):
            for j in range(GRID):
                box = (left + j * TILE, top + i * TILE, left + (j + 1) * TILE, top + (i + 1) * TILE)
                im.crop(box).save(out / f"{stem}_{i}{j}.png")


def _spearman_ci(x: np.ndarray, y: np.ndarray, n_boot: int) -> dict | None:
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    s = correlate(x, y, n_boot=n_boot, n_perm=0)["spearman"]
    return {"r": s["r"], "ci_low": s["ci_low"], "ci_high": s["ci_high"]}


@torch.no_grad()
def oracle_allocation(sae, store, layer, rows: np.ndarray) -> np.ndarray:
    """Per-patch k* (N, h, w): the marginal-gain allocation of the mean budget K over all
    patches at once — what SoftSAE's estimator is trained to predict, computed exactly."""
    positions = patch_positions(store, layer)
    gains = []
    for _, acts_BTD in iter_chunks(store, layer, positions, 16, rows=rows):
        b, t, d = acts_BTD.shape
        xn = sae.normalize(acts_BTD.reshape(b * t, d))
        z = sae.pre_acts(xn)
        gains.append(sae.gains_and_energy(xn, z)[0])
    k_star = allocate(torch.cat(gains), sae.k, count=sae.k_count)
    return k_star.reshape(len(rows), *store.grid).numpy()


def measure_set(
    name: str,
    images: Path,
    models: tuple[str, ...],
    steps: int,
    workdir: Path,
    log: Callable,
    store_dir: Path | None = None,
) -> dict:
    """Extract the demo layer's patch tokens of ``images``, train ``models``, correlate k.

    The store goes to ``store_dir`` (kept, and reused by a later run) or to ``workdir``.
    """
    settings = DemoSettings()
    backbone = load_backbone(settings.model, pretrained=False, image_size=settings.image_size)
    store = (store_dir or workdir) / f"store-{name}"
    extract(
        backbone,
        images,
        store,
        layers=(settings.layer,),
        tokens=["patch"],
        batch_size=16,
        progress=False,
    )
    source = StoreSource(store, layer=settings.layer, tokens="patch")
    table = None
    result: dict = {"models": {}}
    for model in models:
        sae, cfg = build(
            model,
            source.d,
            settings.n_latents,
            settings.k,
            steps,
            batch_size=settings.batch_size,
            lr=2e-3,
        )
        run_dir = workdir / f"run-{name}-{model}"
        train(sae, source, cfg, run_dir=run_dir, progress=False)
        sae = sae.cpu().eval()
        metrics = evaluate(sae, source.iter_eval(4096), device="cpu")
        maps = k_maps(sae, source.store, source.layer)
        if table is None:
            table = store_complexity(source.store, maps.rows)
            result["n_images"] = len(maps.rows)
        per_image = maps.per_patch.reshape(len(maps.rows), -1).mean(1)
        row = {
            "l0_mean": metrics["l0_mean"],
            "fvu": metrics["fvu"],
            "quantity": maps.quantity,
            "max_loss_ratio": max_loss_ratio(run_dir / "metrics.jsonl", cfg.steps),
            "image_jpeg_bpp": _spearman_ci(table.image["jpeg_bpp"], per_image, 1000),
            "image_gradient": _spearman_ci(table.image["gradient"], per_image, 1000),
        }
        patch = correlate_patches(maps.per_patch, table, n_boot=200)["gradient"]["spearman"]
        row["patch_gradient"] = (
            None
            if patch["r"] is None or np.isnan(patch["r"])
            else {"r": patch["r"], "ci_low": patch["ci_low"], "ci_high": patch["ci_high"]}
        )
        result["models"][model] = row
        if getattr(sae, "k_signal", None) == "gain":
            k_star = oracle_allocation(sae, source.store, source.layer, maps.rows)
            per_image_star = k_star.reshape(len(maps.rows), -1).mean(1)
            result["models"][f"{model} (k*, exact allocation)"] = {
                **{k: v for k, v in row.items() if k != "patch_gradient"},
                "quantity": "k_star",
                "image_jpeg_bpp": _spearman_ci(table.image["jpeg_bpp"], per_image_star, 1000),
                "image_gradient": _spearman_ci(table.image["gradient"], per_image_star, 1000),
            }
        log(
            f"photos {name:10s} {model:14s} L0 {row['l0_mean']:.2f} FVU {row['fvu']:.3f} "
            f"rho(jpeg) {row['image_jpeg_bpp']}"
        )
    return result


def run_photos(
    quick: bool,
    cache: str | None,
    workdir: Path,
    log: Callable,
    models: tuple[str, ...] | None = None,
    sets: tuple[str, ...] = ("bundled", "wallpapers"),
    save: Callable[[dict], None] | None = None,
) -> dict:
    """The photo sets (only the bundled one with ``quick``); ``save(results)`` after each set,
    so a set that fails later does not lose the ones measured."""
    settings = DemoSettings()
    steps = 200 if quick else settings.steps
    models = models or (QUICK_PHOTO_MODELS if quick else PHOTO_MODELS)
    available = {"bundled": (ASSETS, f"the {len(list(ASSETS.glob('*')))} bundled photographs")}
    if not quick and "wallpapers" in sets:
        try:
            tiles = fetch_wallpaper_tiles(Path(cache) if cache else DEFAULT_CACHE)
            available["wallpapers"] = (
                tiles,
                f"{len(list(tiles.glob('*.png')))} tiles ({TILE} px, {GRID}×{GRID} per image) "
                f"of the landscape images in Debian's {PACKAGE}, fetched at run time",
            )
        except (OSError, subprocess.CalledProcessError, StopIteration) as err:
            log(f"photos: cannot fetch {PACKAGE} ({err}); measuring the bundled set only")
    out = {}
    for name, (images, description) in available.items():
        if name not in sets:
            continue
        store_dir = None if quick else (Path(cache) if cache else DEFAULT_CACHE)
        res = measure_set(name, images, models, steps, workdir, log, store_dir)
        res["description"] = (
            f"{description}; {settings.model} with random weights, layer {settings.layer}, "
            f"patch tokens, K {settings.k}, F {settings.n_latents}, {steps} steps"
        )
        out[name] = res
        if save:
            save(out)
    return out
