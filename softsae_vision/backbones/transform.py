"""A backbone's image preprocessing as plain, serialisable parameters.

The source libraries ship their eval transforms as opaque callables. We describe the same
pipeline (resize, crop, normalise) with a few numbers so that it can be written into a store's
``meta.json`` and replayed later: the renderer needs the exact resized and cropped view the model
saw to align patch heat maps with pixels. ``tests/backbones/test_transform.py`` checks that the
replay matches timm's and open_clip's own transforms bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

from softsae_vision.errors import SoftSAEError

_PIL_TF: Any = TF
"""torchvision's functional transforms, for PIL images: they annotate ``img`` as a Tensor but
document and handle PIL images, the path both source libraries' eval transforms take."""

RESIZE_MODES = ("shortest", "longest", "squash")
"""shortest: scale the short side to cover the target, keep aspect ratio (then centre crop);
longest: scale the long side to fit inside the target, keep aspect ratio (then crop or pad);
squash: scale both sides to the target, ignoring aspect ratio."""

_INTERPOLATIONS = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
    "lanczos": InterpolationMode.LANCZOS,
    "box": InterpolationMode.BOX,
    "hamming": InterpolationMode.HAMMING,
}


@dataclass(frozen=True)
class Preprocess:
    """Resize to ``resize_size`` (h, w), centre-crop to ``crop_size`` (h, w), then normalise."""

    resize_size: tuple[int, int]
    """Target of the resize step, (h, w); the crop is taken from this."""
    crop_size: tuple[int, int]
    """Size of the image the model sees, (h, w)."""
    resize_mode: str = "shortest"
    """One of :data:`RESIZE_MODES`."""
    interpolation: str = "bicubic"
    """PIL resampling filter name, as the source library spells it."""
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    fill: tuple[int, int, int] = (0, 0, 0)
    """Padding colour when the resized image is smaller than the crop (``longest`` mode)."""

    def __post_init__(self) -> None:
        if self.resize_mode not in RESIZE_MODES:
            raise SoftSAEError(
                f"unknown resize mode {self.resize_mode!r}; use one of {RESIZE_MODES}"
            )
        if self.interpolation not in _INTERPOLATIONS:
            raise SoftSAEError(
                f"unknown interpolation {self.interpolation!r}; "
                f"use one of {sorted(_INTERPOLATIONS)}"
            )

    def view(self, image: Image.Image) -> Image.Image:
        """The RGB image resized and cropped exactly as the model sees it, crop_size (h, w)."""
        interp = _INTERPOLATIONS[self.interpolation]
        target_h, target_w = self.resize_size
        if self.resize_mode == "squash":
            image = _PIL_TF.resize(image, [target_h, target_w], interpolation=interp)
        elif self.resize_mode == "shortest" and target_h == target_w:
            # torchvision's shortest-edge rule (it truncates the long side), as both libraries use.
            image = _PIL_TF.resize(image, target_h, interpolation=interp)
        else:
            w, h = image.size
            ratio_h, ratio_w = h / target_h, w / target_w
            ratio = (
                max(ratio_h, ratio_w) if self.resize_mode == "longest" else min(ratio_h, ratio_w)
            )
            image = _PIL_TF.resize(
                image, [round(h / ratio), round(w / ratio)], interpolation=interp
            )
        return _center_crop_or_pad(image, self.crop_size, self.fill)

    def normalize(self, view: Image.Image) -> torch.Tensor:
        """The model input (3, H, W) float32 for an image returned by :meth:`view`."""
        return TF.normalize(TF.to_tensor(view), list(self.mean), list(self.std))

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """The model input (3, H, W) float32 for an RGB PIL image of any size."""
        return self.normalize(self.view(image))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able parameters; :meth:`from_dict` inverts it."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        """Rebuild from :meth:`to_dict` output (e.g. a store's meta.json)."""
        tuples = ("resize_size", "crop_size", "mean", "std", "fill")
        fields: dict[str, Any] = {k: tuple(v) if k in tuples else v for k, v in d.items()}
        return cls(**fields)

    @classmethod
    def timm_style(
        cls,
        input_size: tuple[int, int],
        crop_pct: float,
        crop_mode: str,
        interpolation: str,
        mean: tuple[float, ...],
        std: tuple[float, ...],
    ) -> Preprocess:
        """timm's eval transform: resize to input_size / crop_pct, then centre-crop input_size."""
        resize = (math.floor(input_size[0] / crop_pct), math.floor(input_size[1] / crop_pct))
        modes = {"center": "shortest", "squash": "squash", "border": "longest"}
        if crop_mode not in modes:
            raise SoftSAEError(
                f"timm crop_mode {crop_mode!r} is not supported; use center or squash"
            )
        mean_r, mean_g, mean_b = (float(v) for v in mean)
        std_r, std_g, std_b = (float(v) for v in std)
        fill_r, fill_g, fill_b = (
            (round(255 * v) for v in mean) if crop_mode == "border" else (0, 0, 0)
        )
        return cls(
            resize_size=resize,
            crop_size=(int(input_size[0]), int(input_size[1])),
            resize_mode=modes[crop_mode],
            interpolation=interpolation,
            mean=(mean_r, mean_g, mean_b),
            std=(std_r, std_g, std_b),
            fill=(fill_r, fill_g, fill_b),
        )


def _center_crop_or_pad(
    image: Image.Image, size: tuple[int, int], fill: tuple[int, int, int]
) -> Image.Image:
    """Centre crop to ``size`` (h, w), padding with ``fill`` first where the image is smaller."""
    crop_h, crop_w = size
    w, h = image.size
    if crop_w > w or crop_h > h:
        pad_l, pad_t = max(crop_w - w, 0) // 2, max(crop_h - h, 0) // 2
        pad_r, pad_b = (max(crop_w - w, 0) + 1) // 2, (max(crop_h - h, 0) + 1) // 2
        image = _PIL_TF.pad(image, [pad_l, pad_t, pad_r, pad_b], fill=fill)
        w, h = image.size
    top, left = int(round((h - crop_h) / 2.0)), int(round((w - crop_w) / 2.0))
    return _PIL_TF.crop(image, top, left, crop_h, crop_w)
