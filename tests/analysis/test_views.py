import numpy as np
import pytest

from softsae_vision.analysis.views import ImageViews
from softsae_vision.data.store import open_store
from softsae_vision.errors import SoftSAEError


def test_views_match_the_store_transform_and_are_cached(fx):
    store = open_store(fx.store)
    views = ImageViews(store, cache_size=2)
    first = views[3]
    assert first.shape == (64, 64, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, store.view_array(3))
    assert views[3] is first  # cached
    views[0], views[1]
    assert views[3] is not first  # evicted, then reloaded
    assert views.name(3) == "im3.png"


def test_store_builds_its_row_to_path_list_once(fx):
    store = open_store(fx.store)
    assert store.ok_images is store.ok_images  # view(row) indexes it: no rebuild per row
    assert len(store.ok_images) == store.n_images
    views = ImageViews(store)
    views.paths[0] = "elsewhere.png"  # a view's copy is its own
    assert store.ok_images[0] != "elsewhere.png"


def test_missing_source_image_is_a_clear_error(fx):
    views = ImageViews(open_store(fx.store))
    views.paths[2] = str(fx.root / "moved_away.png")
    with pytest.raises(SoftSAEError, match="source images"):
        views[2]
