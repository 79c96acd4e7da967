"""Training loop, schedules, losses and held-out evaluation."""

from softsae_vision.training.config import TrainConfig
from softsae_vision.training.evaluate import evaluate
from softsae_vision.training.trainer import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "evaluate", "train"]
