import pytest

from tests._fixtures_render import render_fixtures


@pytest.fixture(scope="session")
def fx(tmp_path_factory):
    """A tiny real store (test_vit, 8 images, 4x4 grid) and SAE runs trained on it."""
    return render_fixtures(tmp_path_factory)
