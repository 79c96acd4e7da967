"""Image inputs: listing a folder or a text file of paths, robust decoding, a batched loader.

A run never dies on one bad file: decoding errors become a recorded reason, and a batch holds
the images that did decode plus the failures (index, reason), in input order.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from softsae_vision.errors import SoftSAEError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)
"""File extensions (matched case-insensitively) picked up when listing a folder."""

_HIGH_BIT_DEPTH_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N", "F"}


def list_images(source: str | os.PathLike) -> list[Path]:
    """Absolute image paths from a folder (recursive, sorted) or a text file (one path a line).

    In a folder, broken or looping symbolic links with an image extension and subfolders that
    cannot be listed are inputs too, so that the store's index records them as skipped, with
    the reason (see :func:`unusable_reason`). In a text file, blank lines and lines starting
    with ``#`` are ignored and relative paths are taken relative to the file's folder; every
    listed path is an input, readable or not.
    """
    source = Path(source).expanduser()
    if source.is_dir():
        paths = _walk_images(source)
        if not paths:
            raise SoftSAEError(
                f"no image files in {source} (looked recursively for "
                f"{', '.join(sorted(IMAGE_EXTENSIONS))})"
            )
        return paths
    if source.is_file():
        if source.suffix.lower() in IMAGE_EXTENSIONS:
            raise SoftSAEError(
                f"{source} is an image, not a folder or a text file of paths; "
                "put the images in a folder and pass the folder"
            )
        try:
            lines = source.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise SoftSAEError(f"{source} is not a UTF-8 text file of image paths") from None
        except OSError as err:
            raise SoftSAEError(f"cannot read {source}: {err.strerror}") from None
        entries = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
        if not entries:
            raise SoftSAEError(f"{source} lists no image paths")
        base = source.resolve().parent
        return [_absolute(base / Path(e).expanduser()) for e in entries]
    raise SoftSAEError(f"no such folder or file: {source}")


def _absolute(path: Path) -> Path:
    """``path`` with symbolic links resolved; a broken or looping link keeps its own name."""
    try:
        return path.resolve(strict=True)
    except (OSError, RuntimeError):  # missing target or a loop (RuntimeError before 3.13)
        return path.parent.resolve() / path.name


def _walk_images(source: Path) -> list[Path]:
    """Image files under ``source`` sorted by relative path, plus folders that cannot be listed."""
    found: list[Path] = []

    def unlistable(err: OSError) -> None:
        if err.filename is not None and Path(err.filename) != source:
            found.append(Path(err.filename))
        elif err.filename is not None:
            raise SoftSAEError(f"cannot list the folder {source}: {err.strerror}")

    for root, _dirs, files in os.walk(source, onerror=unlistable):
        for name in files:
            path = Path(root) / name
            if Path(name).suffix.lower() in IMAGE_EXTENSIONS and (
                path.is_symlink() or path.is_file()  # links even when broken; no fifos, sockets
            ):
                found.append(path)
    found.sort(key=lambda p: p.relative_to(source).as_posix())
    return [_absolute(p) for p in found]


def unusable_reason(path: str | os.PathLike) -> str | None:
    """Why a listed path is no image file (a folder, a broken or looping link), or None."""
    path = os.fspath(path)
    if os.path.isdir(path):
        try:
            with os.scandir(path):
                pass
        except OSError as err:
            why = err.strerror or type(err).__name__
            return f"unreadable: folder cannot be listed ({why}); its images are not in the store"
        return "not an image: a folder"
    if os.path.islink(path) and not os.path.exists(path):
        try:
            os.stat(path)
        except OSError as err:
            if err.errno == errno.ELOOP:
                return "unreadable: symbolic link loop"
        return f"missing: broken symbolic link (its target {os.readlink(path)} does not exist)"
    return None


DRAFT_FACTOR = 4
"""JPEG draft decoding is used when both sides are at least this many times the model's resize
target; the DCT-domain downscale (1/2, 1/4 or 1/8) then still leaves at least twice the
target's pixels, so the final resize sees as much detail as from the full-size image."""


def load_image(path: str | os.PathLike, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Decode an image fully, apply its EXIF orientation and convert it to 8-bit RGB.

    With ``draft_size`` (h, w), a JPEG much larger than that (see :data:`DRAFT_FACTOR`) is
    decoded at a reduced scale, which is several times faster; the returned image is then
    smaller than the file's own size.
    """
    return decode_image(path, draft_size)[0]


def decode_image(
    path: str | os.PathLike, draft_size: tuple[int, int] | None = None
) -> tuple[Image.Image, tuple[int, int]]:
    """:func:`load_image` and the file's full (width, height) after EXIF orientation."""
    with Image.open(path) as raw:
        full = raw.size
        if draft_size is not None and raw.format == "JPEG":
            target_h, target_w = draft_size
            if min(full[0] / target_w, full[1] / target_h) >= DRAFT_FACTOR:
                raw.draft("RGB", (2 * target_w, 2 * target_h))
        raw.load()
        turned = raw.getexif().get(0x0112, 1) in (5, 6, 7, 8)
        image = ImageOps.exif_transpose(raw)
        if image.mode in _HIGH_BIT_DEPTH_MODES:
            image = _to_8bit(image)
        return image.convert("RGB"), (full[1], full[0]) if turned else full


def _to_8bit(image: Image.Image) -> Image.Image:
    """Scale a 16-bit or float greyscale image to 8 bits (PIL's convert would clip it)."""
    arr = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
    else:
        arr = arr / 257.0 if arr.max() > 255 else arr
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))


def describe_failure(err: BaseException) -> str:
    """A short reason for a file that could not be used."""
    if isinstance(err, FileNotFoundError):
        return "missing: file not found"
    if isinstance(err, Image.UnidentifiedImageError):
        return "not an image: PIL cannot identify the file format"
    text = " ".join(str(err).split()) or type(err).__name__
    if "truncated" in text.lower():
        return f"truncated: {text}"
    return f"unreadable: {type(err).__name__}: {text}"[:300]


@dataclass
class LoadedImage:
    """One input after decoding: a model input tensor, or the reason there is none."""

    index: int
    pixels: torch.Tensor | None  # (3, H, W) float32, None on failure
    size: tuple[int, int] | None  # original (width, height) after EXIF transpose
    error: str | None
    data: torch.Tensor | None = None
    """The file's bytes (uint8), for a JPEG left to decode on the GPU."""


@dataclass
class ImageBatch:
    """A batch in input order: the decoded images stacked, failures listed separately."""

    indices: list[int]
    """Input index of every image in the batch, decoded or not, in order."""
    pixels: torch.Tensor  # (n_ok, 3, H, W) float32; n_ok may be 0
    ok: list[int]
    """Input index of each row of ``pixels``."""
    sizes: dict[int, tuple[int, int]]
    """Original (width, height) of each decoded image, by input index."""
    errors: dict[int, str]
    """Reason for each failed image, by input index."""
    encoded: dict[int, torch.Tensor] = field(default_factory=dict)
    """JPEG bytes still to decode (``--decode gpu``), by input index; ``pixels`` is then empty
    until :func:`softsae_vision.data.gpu_decode.finish_batch` fills it."""
    cpu_pixels: dict[int, torch.Tensor] = field(default_factory=dict)
    """With ``encoded``: the model inputs of the images decoded in the workers, by input index."""


class ImageDataset(torch.utils.data.Dataset):
    """Paths -> :class:`LoadedImage`, never raising on a bad file."""

    def __init__(
        self,
        paths: Sequence[os.PathLike | str],
        transform: Callable[[Image.Image], torch.Tensor],
        draft_size: tuple[int, int] | None = None,
        encoded_jpegs: bool = False,
    ):
        self.paths = list(paths)
        self.transform = transform
        self.draft_size = draft_size
        self.encoded_jpegs = encoded_jpegs

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> LoadedImage:
        reason = unusable_reason(self.paths[index])
        if reason is not None:
            return LoadedImage(index, None, None, reason)
        try:
            if self.encoded_jpegs:
                with open(self.paths[index], "rb") as f:
                    data = f.read()
                if data[:3] == b"\xff\xd8\xff":  # a JPEG: decoded later, on the GPU
                    raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
                    return LoadedImage(index, None, None, None, raw)
            image, size = decode_image(self.paths[index], self.draft_size)
            pixels = self.transform(image)
        except Exception as err:  # noqa: BLE001 - any decoder failure is a skipped file
            return LoadedImage(index, None, None, describe_failure(err))
        return LoadedImage(index, pixels, size, None)


def collate_images(items: list[LoadedImage]) -> ImageBatch:
    """Stack the decoded images; keep the failures as (index -> reason)."""
    ok = [
        (it.index, it.pixels, it.size)
        for it in items
        if it.pixels is not None and it.size is not None
    ]
    sizes = {index: size for index, _, size in ok}
    errors = {it.index: it.error for it in items if it.error is not None}
    encoded = {it.index: it.data for it in items if it.data is not None}
    if encoded:
        return ImageBatch(
            indices=[it.index for it in items],
            pixels=torch.empty(0),
            ok=[],
            sizes=sizes,
            errors=errors,
            encoded=encoded,
            cpu_pixels={index: pixels_CHW for index, pixels_CHW, _ in ok},
        )
    pixels = torch.stack([pixels_CHW for _, pixels_CHW, _ in ok]) if ok else torch.empty(0)
    return ImageBatch(
        indices=[it.index for it in items],
        pixels=pixels,
        ok=[index for index, _, _ in ok],
        sizes=sizes,
        errors=errors,
    )


def default_workers() -> int:
    """Decoding workers: one per core this process may use (decoding is the usual bottleneck)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, cores)


def image_loader(
    paths: Sequence[os.PathLike | str],
    transform: Callable[[Image.Image], torch.Tensor],
    batch_size: int,
    workers: int | None = None,
    offset: int = 0,
    pin_memory: bool = False,
    draft_size: tuple[int, int] | None = None,
    encoded_jpegs: bool = False,
) -> torch.utils.data.DataLoader:
    """Batches of ``paths[offset:]`` in order, decoded in ``workers`` processes (0 = in-process).

    Indices in the batches count from the start of ``paths``, whatever the offset.
    ``draft_size`` (h, w) turns on JPEG draft decoding for images much larger than it.
    """
    workers = default_workers() if workers is None else workers
    dataset = ImageDataset(paths, transform, draft_size, encoded_jpegs)
    sampler = torch.utils.data.BatchSampler(
        range(offset, len(paths)), batch_size=batch_size, drop_last=False
    )
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=collate_images,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers > 0 else None,
        persistent_workers=False,
    )
