"""Old module path of :func:`softsae_vision.data.source.open_source`, kept so imports work."""

from softsae_vision.data.source import ActivationSource, open_source

__all__ = ["ActivationSource", "open_source"]
