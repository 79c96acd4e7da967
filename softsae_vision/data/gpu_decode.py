"""JPEGs decoded on the GPU (nvJPEG, ``torchvision.io.decode_jpeg``) and preprocessed there.

With ``--decode gpu`` the decoding workers only read JPEG files' bytes (other formats they decode
as usual, to uint8 tensors); the main process decodes a batch's JPEGs on the model's device in
one call and resizes, crops and normalises on the device. The geometry is that of
:meth:`Preprocess.view`; the resampling is torchvision's antialiased tensor resize, which is
close to but not bit-identical with PIL's, so the choice is recorded in ``meta.json`` and a
store is never continued with the other one.
"""

from __future__ import annotations

import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from softsae_vision.backbones.transform import Preprocess
from softsae_vision.data.images import ImageBatch, describe_failure
from softsae_vision.errors import SoftSAEError

DECODERS = ("cpu", "gpu")
_TENSOR_INTERPOLATIONS = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}
JPEG_MAGIC = b"\xff\xd8\xff"


def check_gpu_decoding(device: torch.device, transform: Preprocess) -> None:
    """Refuse ``--decode gpu`` where it cannot run: no CUDA device, or an unsupported filter."""
    if device.type != "cuda" or not torch.cuda.is_available():
        raise SoftSAEError(
            f"--decode gpu needs the model on a CUDA device (it is on {device}); use --decode cpu"
        )
    if transform.interpolation not in _TENSOR_INTERPOLATIONS:
        raise SoftSAEError(
            f"--decode gpu resizes with {', '.join(_TENSOR_INTERPOLATIONS)} only; this model's "
            f"transform uses {transform.interpolation}: use --decode cpu"
        )


def preprocess_tensor(image_CHW: torch.Tensor, transform: Preprocess) -> torch.Tensor:
    """The model input (3, h, w) float32 of a uint8 RGB tensor, as :meth:`Preprocess.view`."""
    interp = _TENSOR_INTERPOLATIONS[transform.interpolation]
    target_h, target_w = transform.resize_size
    _, h, w = image_CHW.shape
    if transform.resize_mode == "squash":
        size = [target_h, target_w]
    elif transform.resize_mode == "shortest" and target_h == target_w:
        size = [target_h]  # torchvision's shortest-edge rule, as Preprocess.view uses
    else:
        ratio_h, ratio_w = h / target_h, w / target_w
        longest = transform.resize_mode == "longest"
        ratio = max(ratio_h, ratio_w) if longest else min(ratio_h, ratio_w)
        size = [round(h / ratio), round(w / ratio)]
    image = TF.resize(image_CHW, size, interpolation=interp, antialias=True)
    crop_h, crop_w = transform.crop_size
    _, h, w = image.shape
    if crop_w > w or crop_h > h:
        pad_l, pad_t = max(crop_w - w, 0) // 2, max(crop_h - h, 0) // 2
        pad_r, pad_b = (max(crop_w - w, 0) + 1) // 2, (max(crop_h - h, 0) + 1) // 2
        fill = torch.tensor(transform.fill, dtype=image.dtype, device=image.device)
        canvas = fill[:, None, None].repeat(1, h + pad_t + pad_b, w + pad_l + pad_r)
        canvas[:, pad_t : pad_t + h, pad_l : pad_l + w] = image
        image, (_, h, w) = canvas, canvas.shape
    top, left = int(round((h - crop_h) / 2.0)), int(round((w - crop_w) / 2.0))
    image = TF.crop(image, top, left, crop_h, crop_w)
    return TF.normalize(image.float() / 255.0, list(transform.mean), list(transform.std))


def decode_jpegs(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | Exception]:
    """Each encoded JPEG (uint8 bytes) as a (3, H, W) uint8 RGB tensor on ``device``, EXIF
    orientation applied; an undecodable one as its exception (the others still decode)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    if not data:
        return []
    try:
        return list(
            decode_jpeg(data, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True)
        )
    except RuntimeError:  # one bad file fails the batch call: find it
        out: list[torch.Tensor | Exception] = []
        for item in data:
            try:
                image = decode_jpeg(
                    item, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True
                )
                assert isinstance(image, torch.Tensor)  # one tensor in, one out
                out.append(image)
            except RuntimeError as err:
                out.append(err)
        return out


def finish_batch(batch: ImageBatch, transform: Preprocess, device: torch.device) -> None:
    """Decode a batch's pending JPEGs on ``device`` and stack every model input there, in order.

    Files that fail to decode become skipped images (``batch.errors``), as on the CPU path.
    """
    if not batch.encoded:
        return
    keys = list(batch.encoded)
    decoded = dict(zip(keys, decode_jpegs([batch.encoded[k] for k in keys], device), strict=True))
    rows, ok = [], []
    for i in batch.indices:
        if i in batch.errors:
            continue
        if i in decoded:
            image = decoded[i]
            if isinstance(image, Exception):
                batch.errors[i] = describe_failure(image)
                continue
            batch.sizes[i] = (int(image.shape[2]), int(image.shape[1]))
            rows.append(preprocess_tensor(image, transform))
        else:
            rows.append(batch.cpu_pixels[i].to(device))
        ok.append(i)
    batch.pixels = torch.stack(rows) if rows else torch.empty(0)
    batch.ok = ok
    batch.encoded, batch.cpu_pixels = {}, {}
