"""The model's view of stored images (resized and cropped exactly as the backbone saw them).

Heat maps and complexity measures are computed on this view, so that patch (i, j) of a map is
the pixels token (i, j) of the backbone saw. The source images must still be at the paths the
store recorded.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np

from softsae_vision.data.images import load_image
from softsae_vision.data.store import Store
from softsae_vision.errors import SoftSAEError


class ImageViews:
    """Row → (H, W, 3) uint8 view of a store's images, with a small cache of recent rows."""

    def __init__(self, store: Store, cache_size: int = 256):
        self.store = store
        self.paths = list(store.ok_images)  # row -> path; our own copy, the store's is shared
        self.transform = store.transform
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_size = cache_size

    def __len__(self) -> int:
        return len(self.paths)

    def name(self, row: int) -> str:
        """The file name of a row's image (for captions)."""
        return Path(self.paths[row]).name

    def __getitem__(self, row: int) -> np.ndarray:
        row = int(row)
        if row in self._cache:
            self._cache.move_to_end(row)
            return self._cache[row]
        path = self.paths[row]
        try:
            image = load_image(path)
        except (OSError, ValueError) as err:
            raise SoftSAEError(
                f"cannot read {path} ({type(err).__name__}); drawing figures needs the store's "
                "source images at the paths it recorded"
            ) from None
        view = np.asarray(self.transform.view(image), dtype=np.uint8)
        self._cache[row] = view
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return view
