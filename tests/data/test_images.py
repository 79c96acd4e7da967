"""Image listing, decoding (EXIF, colour modes, broken files) and the failure-tolerant loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from softsae_vision.data.images import (
    ImageDataset,
    describe_failure,
    image_loader,
    list_images,
    load_image,
)
from softsae_vision.errors import SoftSAEError
from tests._fixtures_extract import smooth_image, write_broken_files, write_images


def test_folder_listing_is_recursive_sorted_and_case_insensitive(tmp_path):
    paths = write_images(tmp_path, 7)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "deep" / "er").mkdir(parents=True)
    smooth_image(0, 8, 8).save(tmp_path / "deep" / "er" / "Z.JPEG", format="JPEG")
    listed = list_images(tmp_path)
    assert set(listed) == {p.resolve() for p in paths} | {(tmp_path / "deep/er/Z.JPEG").resolve()}
    assert [p.relative_to(tmp_path).as_posix() for p in listed] == sorted(
        p.relative_to(tmp_path).as_posix() for p in listed
    )
    assert all(p.is_absolute() for p in listed)


def test_text_file_listing(tmp_path):
    write_images(tmp_path / "imgs", 2)
    listing = tmp_path / "list.txt"
    listing.write_text(
        "# my images\nimgs/img_001.jpg\n\n  imgs/sub/img_000.PNG  \n/no/such/file.jpg\n"
    )
    assert list_images(listing) == [
        (tmp_path / "imgs/img_001.jpg").resolve(),
        (tmp_path / "imgs/sub/img_000.PNG").resolve(),
        __import__("pathlib").Path("/no/such/file.jpg"),
    ]


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda p: p / "missing", "no such folder or file"),
        (lambda p: p, "no image files"),
        (
            lambda p: (p / "empty.txt").write_text("# nothing\n") and p / "empty.txt",
            "lists no image",
        ),
    ],
)
def test_listing_errors(tmp_path, setup, message):
    with pytest.raises(SoftSAEError, match=message):
        list_images(setup(tmp_path))


def test_single_image_is_not_a_listing(tmp_path):
    (path,) = write_images(tmp_path, 1)
    with pytest.raises(SoftSAEError, match="is an image"):
        list_images(path)


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 10, 20))  # blue on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif, quality=95)
    loaded = load_image(path)
    assert loaded.size == (20, 40)
    top = np.asarray(loaded)[2, 10]
    assert top[2] > 200 and top[0] < 60  # the left (blue) edge is now on top


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK", "I;16", "F", "1"])
def test_modes_are_converted_to_rgb(tmp_path, mode):
    base = smooth_image(1, 24, 32)
    if mode == "I;16":
        grey = np.asarray(base.convert("L"), dtype=np.uint16) * 257
        image = Image.fromarray(grey)
        assert image.mode == "I;16"
    else:
        image = base.convert(mode)
    path = tmp_path / ("x.tif" if mode in ("CMYK", "F") else "x.png")
    image.save(path)
    loaded = load_image(path)
    assert loaded.mode == "RGB" and loaded.size == (32, 24)
    if mode == "I;16":  # 16-bit values are scaled, not clipped to white
        expected = np.asarray(base.convert("L"))
        assert np.abs(np.asarray(loaded)[..., 0].astype(int) - expected).max() <= 1
    if mode == "F":  # float images are stretched to the full 8-bit range
        assert np.asarray(loaded).min() == 0 and np.asarray(loaded).max() == 255


def test_broken_files_become_reasons(tmp_path):
    files = write_broken_files(tmp_path)
    dataset = ImageDataset([files["truncated"], files["not_image"], files["empty"]], lambda im: im)
    reasons = [dataset[i].error for i in range(3)]
    assert reasons[0].startswith("truncated")
    assert reasons[1].startswith("not an image") and reasons[2].startswith("not an image")
    missing = ImageDataset([tmp_path / "gone.jpg"], lambda im: im)[0]
    assert missing.pixels is None and missing.error == "missing: file not found"
    assert describe_failure(ValueError("bad\nthing")) == "unreadable: ValueError: bad thing"


@pytest.mark.parametrize("workers", [0, 1])
def test_loader_keeps_order_and_reports_failures(tmp_path, workers):
    good = write_images(tmp_path / "good", 5)
    broken = write_broken_files(tmp_path / "bad")
    paths = [good[0], broken["truncated"], good[1], good[2], broken["not_image"], good[3], good[4]]

    def transform(image):
        return torch.tensor([image.size[0], image.size[1]], dtype=torch.float32)

    batches = list(image_loader(paths, transform, batch_size=3, workers=workers, offset=1))
    assert [b.indices for b in batches] == [[1, 2, 3], [4, 5, 6]]
    assert [b.ok for b in batches] == [[2, 3], [5, 6]]
    assert set(batches[0].errors) == {1} and set(batches[1].errors) == {4}
    for batch in batches:
        for row, index in enumerate(batch.ok):
            w, h = Image.open(paths[index]).size
            assert batch.sizes[index] == (w, h)
            assert batch.pixels[row].tolist() == [w, h]


def test_all_failed_batch_is_empty(tmp_path):
    broken = write_broken_files(tmp_path)
    (batch,) = image_loader([broken["empty"]], lambda im: torch.zeros(1), 4, workers=0)
    assert batch.pixels.numel() == 0 and batch.ok == [] and list(batch.errors) == [0]
