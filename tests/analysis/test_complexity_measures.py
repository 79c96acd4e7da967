import numpy as np
import pytest
from PIL import Image

from softsae_vision.analysis.complexity import (
    IMAGE_MEASURES,
    PATCH_MEASURES,
    as_rgb_uint8,
    complexity_measures,
    patch_bounds,
    patch_complexity,
)
from softsae_vision.errors import SoftSAEError

SIZE = 64


def flat() -> np.ndarray:
    return np.full((SIZE, SIZE, 3), 120, dtype=np.uint8)


def smooth() -> np.ndarray:
    """A smooth 2-D colour gradient (varying slope, so its gradient magnitude varies)."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / (SIZE - 1)
    r = 255 * xx**2
    g = 255 * yy
    b = 128 + 100 * np.sin(3 * xx + 2 * yy)
    return np.stack([r, g, b], axis=-1).round().astype(np.uint8)


def noise() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(SIZE, SIZE, 3), dtype=np.uint8)


@pytest.mark.parametrize("name", IMAGE_MEASURES)
def test_measures_order_flat_smooth_noise(name):
    f, s, n = (complexity_measures(img)[name] for img in (flat(), smooth(), noise()))
    if name == "edge_density":  # a smooth ramp has no edges, like a flat image
        assert f == 0.0 and f <= s < n
    else:
        assert f < s < n, (name, f, s, n)


def test_flat_image_has_zero_gradient_measures():
    m = complexity_measures(flat())
    assert m["gradient"] == m["spatial_info"] == m["edge_density"] == m["colour_entropy"] == 0.0


def test_known_values():
    # A vertical step edge: Sobel magnitude 4 * 255 on the two columns beside it.
    img = np.zeros((8, 8, 3), dtype=np.uint8)
    img[:, 4:] = 255
    m = complexity_measures(img)
    assert m["gradient"] == pytest.approx(2 * 8 * 4 * 255 / 8 / 64)
    assert m["edge_density"] == pytest.approx(2 / 8)
    assert m["colour_entropy"] == pytest.approx(1.0)  # two colours, equal counts
    expected_si = np.std(np.r_[np.zeros(48), np.full(16, 4 * 255.0)])
    assert m["spatial_info"] == pytest.approx(expected_si)


def test_accepts_pil_grey_and_float():
    img = smooth()
    ref = complexity_measures(img)
    assert complexity_measures(Image.fromarray(img)) == ref
    assert complexity_measures(img / 255.0) == ref
    assert as_rgb_uint8(img[..., 0]).shape == (SIZE, SIZE, 3)
    with pytest.raises(SoftSAEError):
        complexity_measures(np.zeros((4, 4, 2)))


def test_patch_complexity_localises_texture():
    img = flat()
    img[:32, 32:] = noise()[:32, :32]  # noise only in the top-right quadrant
    per_patch = patch_complexity(img, (4, 4))
    assert set(per_patch) == set(PATCH_MEASURES)
    for values in per_patch.values():
        assert values.shape == (4, 4)
        # Interior top-right patches are the most complex; far bottom-left ones are flat.
        assert values[0, 3] > values[3, 0]
        assert values[3, 0] == 0.0
    assert per_patch["colour_entropy"][0, 3] > 5


def test_patch_bounds():
    assert patch_bounds(224, 14).tolist() == list(range(0, 225, 16))
    b = patch_bounds(50, 3)
    assert b[0] == 0 and b[-1] == 50 and np.all(np.diff(b) >= 16)
    with pytest.raises(SoftSAEError):
        patch_bounds(2, 3)
