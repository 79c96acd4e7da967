"""Heat maps on your own images: per-patch feature activations and k, and overlays.

    sae = load_sae("runs/soft")
    backbone = load_backbone("timm/vit_small_patch16_224.augreg_in21k")
    acts = feature_maps(sae, backbone, ["cat.jpg"], layer=6, features=[17])   # (1, h, w, 1)
    fig = overlay("cat.jpg", acts[0, ..., 0], backbone=backbone)

Maps live on the backbone's patch grid (h, w); :func:`overlay` stretches one over the image as
the model saw it (resized and cropped by the backbone's own preprocessing), one square a token.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, overload

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image

from softsae_vision.errors import SoftSAEError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from softsae_vision.analysis.kstats import KMaps
    from softsae_vision.backbones.base import Backbone, Layer
    from softsae_vision.data.store import Store
    from softsae_vision.sae.base import BaseSAE

Images = Any
"""One image (a path, a PIL image or an (H, W, 3) array) or a sequence of them."""


def _as_pil(image: Any) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        array = image if image.dtype == np.uint8 else np.clip(image * 255, 0, 255).astype(np.uint8)
        return Image.fromarray(array[..., :3]).convert("RGB")
    try:
        with Image.open(os.fspath(image)) as img:
            return img.convert("RGB")
    except (OSError, TypeError) as err:
        raise SoftSAEError(
            f"cannot read image {image!r} ({err}); pass a path or PIL image"
        ) from None


def _as_list(images: Images) -> list[Any]:
    if isinstance(images, (str, os.PathLike, Image.Image)) or (
        isinstance(images, np.ndarray) and images.ndim == 3
    ):
        return [images]
    images = list(images)
    if not images:
        raise SoftSAEError("no images given")
    return images


def model_views(backbone: Backbone, images: Images) -> list[NDArray[np.uint8]]:
    """Each image resized and cropped exactly as ``backbone`` sees it, (H, W, 3) uint8."""
    return [np.asarray(backbone.preprocess.view(_as_pil(im))) for im in _as_list(images)]


def _patch_acts(
    backbone: Backbone, images: Images, layer: Layer, d_in: int, batch_size: int
) -> Iterator[torch.Tensor]:
    """(b, h·w, d) patch activations of ``layer`` per batch of images."""
    resolved = backbone.resolve_layer(layer)
    if resolved == "embed":
        raise SoftSAEError("the embed layer has one vector per image, no patches to map")
    if backbone.d_model != d_in:
        raise SoftSAEError(
            f"the SAE reads {d_in}-dimensional activations but {backbone.name} has d_model "
            f"{backbone.d_model}; use the backbone the SAE was trained on"
        )
    items = _as_list(images)
    start = backbone.layout.n_prefix
    for i in range(0, len(items), batch_size):
        x_BCHW = torch.stack([backbone.preprocess(_as_pil(im)) for im in items[i : i + batch_size]])
        yield backbone.forward_layers(x_BCHW, [resolved])[resolved][:, start:].float()


@torch.no_grad()
def feature_maps(
    sae: BaseSAE,
    backbone: Backbone,
    images: Images,
    layer: Layer,
    features: Sequence[int] | None = None,
    *,
    batch_size: int = 16,
) -> NDArray[np.float32]:
    """Per-patch SAE codes (N, h, w, F), or (N, h, w, len(features)) for chosen features."""
    if features is not None:
        features = [int(f) for f in features]
        bad = [f for f in features if not 0 <= f < sae.n_latents]
        if bad:
            raise SoftSAEError(f"features {bad} out of range: the SAE has {sae.n_latents}")
    device = next(sae.parameters()).device
    h, w = backbone.grid
    out = []
    for acts_BPD in _patch_acts(backbone, images, layer, sae.d_in, batch_size):
        b, p, d = acts_BPD.shape
        codes = sae.encode(acts_BPD.reshape(b * p, d).to(device))
        if features is not None:
            codes = codes[:, features]
        out.append(codes.reshape(b, h, w, -1).cpu())
    return torch.cat(out).numpy().astype(np.float32)


@overload
def k_maps(
    sae: BaseSAE, backbone: Backbone, images: Images, layer: Layer, **kwargs: Any
) -> NDArray[np.float32]: ...
@overload
def k_maps(sae: BaseSAE, backbone: Store, layer: Layer, /, **kwargs: Any) -> KMaps: ...
@torch.no_grad()
def k_maps(
    sae: BaseSAE,
    backbone: Backbone | Store,
    images: Images | Layer = None,
    layer: Layer | None = None,
    **kwargs: Any,
) -> NDArray[np.float32] | KMaps:
    """Per-patch k (N, h, w) of your images: k̂ for a SoftSAE, realised L0 otherwise.

    Given a :class:`~softsae_vision.data.store.Store` instead of a backbone, this is
    :func:`softsae_vision.analysis.k_maps` (``k_maps(sae, store, layer, ...)`` -> ``KMaps``).
    Keywords: ``quantity`` ("auto", "k_hat", "l0"), ``batch_size``.
    """
    from softsae_vision.analysis.kstats import _token_k, resolve_quantity
    from softsae_vision.backbones.base import Backbone

    if not isinstance(backbone, Backbone):
        from softsae_vision.analysis.kstats import k_maps as store_k_maps

        args = [a for a in (images, layer) if a is not None]
        return store_k_maps(sae, backbone, *args, **kwargs)
    if layer is None:
        raise SoftSAEError("k_maps(sae, backbone, images, layer): give the layer the SAE reads")
    quantity = resolve_quantity(sae, kwargs.pop("quantity", "auto"))
    batch_size = int(kwargs.pop("batch_size", 16))
    if kwargs:
        raise SoftSAEError(f"unknown keyword(s) {sorted(kwargs)} for k_maps on images")
    device = next(sae.parameters()).device
    h, w = backbone.grid
    out = []
    for acts_BPD in _patch_acts(backbone, images, layer, sae.d_in, batch_size):
        b, p, d = acts_BPD.shape
        out.append(_token_k(sae, acts_BPD.reshape(b * p, d).to(device), quantity).reshape(b, h, w))
    return torch.cat(out).cpu().numpy().astype(np.float32)


def overlay(
    image: Any,
    heatmap: NDArray,
    *,
    backbone: Backbone | None = None,
    cmap: str | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    alpha: float | None = None,
    label: str = "activation",
    title: str | None = None,
    as_array: bool = False,
) -> Figure | NDArray[np.uint8]:
    """``heatmap`` (h, w) over ``image``: a matplotlib Figure, or (H, W, 3) uint8 if ``as_array``.

    With ``backbone`` the image is first resized and cropped as that model sees it (do this
    for maps from :func:`feature_maps` / :func:`k_maps` unless ``image`` is already a model
    view). ``alpha=None`` makes opacity follow the value (suits sparse activations).
    """
    from softsae_vision.viz.overlay import Limits, add_colorbar, blend_heatmap, draw_overlay
    from softsae_vision.viz.style import ACTIVATION_CMAP, new_figure, styled

    map_hw = np.asarray(heatmap, dtype=np.float32)
    if map_hw.ndim != 2:
        raise SoftSAEError(f"heatmap must be 2-D (h, w), got shape {map_hw.shape}")
    view = np.asarray(backbone.preprocess.view(_as_pil(image)) if backbone else _as_pil(image))
    limits = Limits.of(map_hw, vmin=vmin)
    if vmax is not None:
        limits = Limits(limits.vmin, float(vmax) if vmax > limits.vmin else limits.vmin + 1.0)
    cmap = cmap or ACTIVATION_CMAP
    if as_array:
        return blend_heatmap(view, map_hw, limits, cmap, alpha)

    @styled
    def figure() -> Figure:
        fig = new_figure(4.2, 3.6)
        ax = fig.add_subplot(1, 1, 1)
        mappable = draw_overlay(ax, view, map_hw, limits, cmap, alpha=alpha)
        add_colorbar(fig, mappable, label, ax=ax)
        if title:
            ax.set_title(title)
        return fig

    return figure()


__all__ = ["feature_maps", "k_maps", "model_views", "overlay"]
