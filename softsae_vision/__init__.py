"""softsae_vision: SoftSAE sparse autoencoders for vision transformers."""

from softsae_vision._version import __version__
from softsae_vision.errors import SoftSAEError

__all__ = ["SoftSAEError", "__version__"]
