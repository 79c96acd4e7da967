"""``--decode gpu``: the tensor path checked on CPU against the PIL path; refused without CUDA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from softsae_vision.backbones.transform import Preprocess
from softsae_vision.data.gpu_decode import check_gpu_decoding, finish_batch, preprocess_tensor
from softsae_vision.data.images import ImageDataset, collate_images, load_image
from softsae_vision.errors import SoftSAEError
from tests._fixtures_extract import smooth_image, write_broken_files

TRANSFORMS = [
    Preprocess((36, 36), (32, 32), "shortest", "bicubic"),
    Preprocess((32, 40), (32, 40), "squash", "bilinear"),
    Preprocess((32, 32), (32, 32), "longest", "bicubic", fill=(10, 20, 30)),
    Preprocess((40, 30), (32, 24), "shortest", "bilinear"),
]


@pytest.mark.parametrize("transform", TRANSFORMS, ids=lambda t: t.resize_mode)
def test_tensor_preprocessing_matches_the_pil_path(transform):
    image = smooth_image(4, 70, 90)
    pil = transform(image)
    tensor = preprocess_tensor(torch.from_numpy(np.array(image)).permute(2, 0, 1), transform)
    assert tensor.shape == pil.shape and tensor.dtype == torch.float32
    diff = (tensor - pil).abs()
    assert diff.mean() < 0.03 and diff.max() < 0.5  # resampling differs slightly, geometry not


def test_batch_decodes_jpegs_keeps_order_and_records_failures(tmp_path):
    transform = TRANSFORMS[0]
    files = [tmp_path / "a.jpg", tmp_path / "b.png", tmp_path / "c.jpg"]
    for i, f in enumerate(files):
        smooth_image(i, 50, 60).save(f, quality=95)
    broken = write_broken_files(tmp_path / "bad")
    paths = [files[0], broken["truncated"], files[1], broken["not_image"], files[2]]
    dataset = ImageDataset(paths, transform, encoded_jpegs=True)
    batch = collate_images([dataset[i] for i in range(len(paths))])
    assert sorted(batch.encoded) == [0, 1, 4] and not batch.ok  # JPEG bytes, decoded later
    finish_batch(batch, transform, torch.device("cpu"))
    assert batch.ok == [0, 2, 4] and batch.pixels.shape == (3, 3, 32, 32)
    assert batch.errors[1].startswith("truncated:") and batch.errors[3].startswith("not an image")
    assert batch.sizes == {0: (60, 50), 2: (60, 50), 4: (60, 50)}
    for row, path in zip(batch.pixels, [files[0], files[1], files[2]], strict=True):
        assert (row - transform(load_image(path))).abs().mean() < 0.03
    np.testing.assert_array_equal(batch.pixels[1].numpy(), transform(load_image(files[1])).numpy())


def test_gpu_decoding_is_refused_without_cuda(tmp_path):
    with pytest.raises(SoftSAEError, match="--decode gpu needs the model on a CUDA device"):
        check_gpu_decoding(torch.device("cpu"), TRANSFORMS[0])
    from softsae_vision.backbones import load_backbone
    from softsae_vision.data.extract import extract

    smooth_image(0, 40, 40).save(tmp_path / "x.jpg")
    vit = load_backbone("timm/test_vit", pretrained=False)
    with pytest.raises(SoftSAEError, match="--decode gpu needs"):
        extract(vit, tmp_path, tmp_path / "store", decode="gpu", progress=False, workers=0)
    assert not (tmp_path / "store").exists()  # refused before any folder


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_decoding_on_cuda(tmp_path):
    transform = TRANSFORMS[0]
    smooth_image(0, 50, 60).save(tmp_path / "a.jpg", quality=95)
    batch = collate_images([ImageDataset([tmp_path / "a.jpg"], transform, encoded_jpegs=True)[0]])
    finish_batch(batch, transform, torch.device("cuda"))
    assert batch.pixels.device.type == "cuda"
    assert (batch.pixels[0].cpu() - transform(load_image(tmp_path / "a.jpg"))).abs().mean() < 0.03
