"""Shared helpers for the analysis/rendering tests: figure checks and a tiny real store + runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


def assert_figure(png: Path, min_width: int = 200, min_height: int = 100) -> np.ndarray:
    """The PNG exists with a PDF twin, has at least the given size and is not blank."""
    png = Path(png)
    assert png.is_file(), f"{png} was not written"
    pdf = png.with_suffix(".pdf")
    assert pdf.is_file() and pdf.read_bytes()[:5] == b"%PDF-", f"{pdf} missing or not a PDF"
    pixels = np.asarray(Image.open(png).convert("RGB"), dtype=float)
    h, w = pixels.shape[:2]
    assert w >= min_width and h >= min_height, f"{png} is only {w}x{h}"
    assert pixels.std() > 5, f"{png} looks blank"
    return pixels


N_IMAGES = 8
IMAGE_SIZE = 64  # test_vit at 64 px: a 4 x 4 patch grid, one CLS token, d_model 64


def make_images(folder: Path, n: int = N_IMAGES) -> Path:
    """``n`` small images from flat to noisy: image i has noise in its i/n left fraction."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        arr = np.empty((48, 56, 3), dtype=np.uint8)
        arr[:] = (40 + 20 * i, 120, 200 - 15 * i)
        cols = round(56 * i / max(n - 1, 1))
        arr[:, :cols] = rng.integers(0, 256, (48, cols, 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"im{i}.png")
    return folder


def make_store(root: Path, tokens=None) -> Path:
    """A finished store of the generated images, layers 1 and -1 of a random tiny ViT."""
    from softsae_vision.backbones.registry import load_backbone
    from softsae_vision.data.extract import extract

    images = make_images(root / "images")
    backbone = load_backbone("timm/test_vit", pretrained=False, image_size=IMAGE_SIZE)
    out = root / ("store" if tokens is None else "store_" + "_".join(tokens))
    extract(
        backbone,
        images,
        out,
        layers=(1, -1),
        tokens=tokens,
        batch_size=8,
        dtype="float32",
        workers=0,
        progress=False,
    )
    return out


def make_run(root: Path, store: Path, arch: str, tokens: str = "patch", steps: int = 30) -> Path:
    """A briefly trained SAE run on ``store`` (layer -1): enough to be a real run directory."""
    from softsae_vision.data.sources import open_source
    from softsae_vision.sae import SAE_REGISTRY
    from softsae_vision.training import TrainConfig, train

    source = open_source(store, layer=-1, tokens=tokens)
    kwargs = {"k": 4, "estimator_hidden": 16} if arch == "softsae" else {"k": 4}
    sae = SAE_REGISTRY[arch](source.d, 32, seed=0, **kwargs)
    cfg = TrainConfig(
        steps=steps,
        batch_size=32,
        log_every=5,
        checkpoint_every=1000,
        norm_sample=512,
        device="cpu",
    )
    run = root / f"run_{arch}_{tokens}"
    train(sae, source, cfg, run_dir=run, progress=False)
    return run


@dataclass
class RenderFixtures:
    """Paths of the shared store, its CLS-only twin and runs (built once per test session)."""

    root: Path
    store: Path
    cls_store: Path
    soft_run: Path
    topk_run: Path
    soft_all_run: Path  # trained on CLS and patch tokens
    soft_cls_run: Path  # trained on CLS tokens only: image-level features


def render_fixtures(tmp_path_factory) -> RenderFixtures:
    """Build (or reuse, across conftest files of one session) the tiny store and runs."""
    root = tmp_path_factory.getbasetemp() / "render_fixtures"
    paths = RenderFixtures(
        root=root,
        store=root / "store",
        cls_store=root / "store_cls",
        soft_run=root / "run_softsae_patch",
        topk_run=root / "run_topk_patch",
        soft_all_run=root / "run_softsae_all",
        soft_cls_run=root / "run_softsae_cls",
    )
    done = root / "done"
    if not done.exists():
        root.mkdir(parents=True, exist_ok=True)
        make_store(root)
        make_store(root, tokens=("cls",))
        make_run(root, paths.store, "softsae")
        make_run(root, paths.store, "topk")
        make_run(root, paths.store, "softsae", tokens="all")
        make_run(root, paths.store, "softsae", tokens="cls", steps=10)
        done.write_text("ok")
    return paths
