"""Image-complexity measures, per image and per patch, computed on the model's view of an image.

Every measure works on an (H, W, 3) uint8 RGB array and is deterministic:

- ``jpeg_bpp``: bits per pixel of a baseline JPEG at quality 75 (4:2:0, no optimisation). The
  few hundred bytes of JPEG header are included, so compare images of one size only.
- ``png_bpp``: bits per pixel of a lossless PNG at compression level 9.
- ``gradient``: mean gradient magnitude of the luma, in grey levels per pixel (Sobel / 8).
- ``edge_density``: fraction of pixels whose gradient magnitude exceeds ``EDGE_THRESHOLD``.
- ``spatial_info``: ITU-T P.910 spatial information, the standard deviation of the Sobel
  magnitude of the luma (one frame, so no maximum over time).
- ``colour_entropy``: Shannon entropy in bits of the joint RGB histogram quantised to
  ``COLOUR_BINS`` levels per channel.

Per-patch versions exist for the measures that are local (gradient, edge density, spatial
information, colour entropy); compressed sizes of a 16-pixel patch are dominated by the file
header and are not computed per patch. Gradients are computed once on the whole image and pooled
per patch, so patch borders see their true neighbours.
"""

from __future__ import annotations

import io

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from softsae_vision.errors import SoftSAEError

JPEG_QUALITY = 75
PNG_COMPRESS_LEVEL = 9
EDGE_THRESHOLD = 8.0
"""Gradient magnitude (grey levels per pixel) above which a pixel counts as an edge."""
COLOUR_BINS = 8

IMAGE_MEASURES = (
    "jpeg_bpp",
    "png_bpp",
    "gradient",
    "edge_density",
    "spatial_info",
    "colour_entropy",
)
PATCH_MEASURES = ("gradient", "edge_density", "spatial_info", "colour_entropy")

MEASURE_LABELS = {
    "jpeg_bpp": f"JPEG bits / pixel (q={JPEG_QUALITY})",
    "png_bpp": "PNG bits / pixel",
    "gradient": "mean gradient (grey levels / px)",
    "edge_density": "edge density (fraction of pixels)",
    "spatial_info": "spatial information SI (P.910)",
    "colour_entropy": "colour entropy (bits)",
}
"""Axis labels with units, for figures and tables."""


def as_rgb_uint8(image: NDArray | Image.Image) -> NDArray[np.uint8]:
    """An (H, W, 3) uint8 copy of a PIL image or array (grey or RGBA are converted)."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or min(arr.shape[:2]) < 1:
        raise SoftSAEError(f"expected an (H, W, 3) RGB image, got an array of shape {arr.shape}")
    arr = arr[:, :, :3]
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.max(initial=0) <= 1.0:
            arr = arr * 255.0
        arr = np.clip(np.round(arr), 0, 255).astype(np.uint8)
    return arr


def luma(image_HW3: NDArray[np.uint8]) -> NDArray[np.float64]:
    """ITU-R BT.601 luma Y' in grey levels [0, 255], shape (H, W)."""
    rgb = image_HW3.astype(np.float64)
    return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


def sobel_magnitude(y_HW: NDArray[np.float64]) -> NDArray[np.float64]:
    """Magnitude of the 3x3 Sobel gradient (unnormalised, as in P.910), edge-replicated (H, W)."""
    p = np.pad(y_HW, 1, mode="edge")
    gx = (p[:-2, 2:] + 2 * p[1:-1, 2:] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[1:-1, :-2] + p[2:, :-2])
    gy = (p[2:, :-2] + 2 * p[2:, 1:-1] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[:-2, 1:-1] + p[:-2, 2:])
    return np.hypot(gx, gy)


def _encoded_bits(image_HW3: NDArray[np.uint8], fmt: str) -> int:
    buf = io.BytesIO()
    pil = Image.fromarray(image_HW3, mode="RGB")
    if fmt == "JPEG":
        pil.save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=False, subsampling=2)
    else:
        pil.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return 8 * buf.tell()


def colour_entropy(image_HW3: NDArray[np.uint8], bins: int = COLOUR_BINS) -> float:
    """Entropy in bits of the joint colour histogram with ``bins`` levels per channel."""
    q = (image_HW3.astype(np.int64) * bins) // 256  # (H, W, 3) in [0, bins)
    codes = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]
    counts = np.bincount(codes.ravel(), minlength=bins**3)
    p = counts[counts > 0] / codes.size
    return float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0 turns -0.0 into 0.0


def complexity_measures(image: NDArray | Image.Image) -> dict[str, float]:
    """Every measure in :data:`IMAGE_MEASURES` for one image, as ``{name: value}``."""
    rgb = as_rgb_uint8(image)
    n_pixels = rgb.shape[0] * rgb.shape[1]
    mag_HW = sobel_magnitude(luma(rgb))
    return {
        "jpeg_bpp": _encoded_bits(rgb, "JPEG") / n_pixels,
        "png_bpp": _encoded_bits(rgb, "PNG") / n_pixels,
        "gradient": float(mag_HW.mean() / 8.0),
        "edge_density": float((mag_HW / 8.0 > EDGE_THRESHOLD).mean()),
        "spatial_info": float(mag_HW.std()),
        "colour_entropy": colour_entropy(rgb),
    }


def patch_bounds(size: int, n: int) -> NDArray[np.int64]:
    """Pixel boundaries (n + 1,) splitting ``size`` pixels into ``n`` near-equal patches."""
    if n < 1 or size < n:
        raise SoftSAEError(f"cannot split {size} pixels into {n} patches")
    return np.round(np.linspace(0, size, n + 1)).astype(np.int64)


def patch_complexity(image: NDArray | Image.Image, grid: tuple[int, int]) -> dict[str, NDArray]:
    """Each measure in :data:`PATCH_MEASURES` per patch, as ``{name: (h, w) float64 array}``.

    ``grid`` is the backbone's patch grid (h, w); the image is the model's view (its pixels map
    onto the grid evenly), so patch (i, j) here is token (i, j) of the backbone.
    """
    rgb = as_rgb_uint8(image)
    gh, gw = grid
    rows, cols = patch_bounds(rgb.shape[0], gh), patch_bounds(rgb.shape[1], gw)
    mag_HW = sobel_magnitude(luma(rgb))
    out = {name: np.zeros((gh, gw)) for name in PATCH_MEASURES}
    for i in range(gh):
        for j in range(gw):
            sl = (slice(rows[i], rows[i + 1]), slice(cols[j], cols[j + 1]))
            mag = mag_HW[sl]
            out["gradient"][i, j] = mag.mean() / 8.0
            out["edge_density"][i, j] = (mag / 8.0 > EDGE_THRESHOLD).mean()
            out["spatial_info"][i, j] = mag.std()
            out["colour_entropy"][i, j] = colour_entropy(rgb[sl])
    return out
