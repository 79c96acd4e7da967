"""SAE architectures behind one interface; ``load_sae`` finds the class by its saved name."""

from softsae_vision.sae.base import (
    SAE_REGISTRY,
    BaseSAE,
    Run,
    SAEOutput,
    StepContext,
    TrainOutput,
    load_run,
    load_sae,
    register_sae,
)
from softsae_vision.sae.batchtopk import BatchTopKSAE
from softsae_vision.sae.matryoshka import MatryoshkaSAE
from softsae_vision.sae.relu import ReLUSAE
from softsae_vision.sae.soft import SoftSAE
from softsae_vision.sae.topk import TopKSAE

__all__ = [
    "SAE_REGISTRY",
    "BaseSAE",
    "BatchTopKSAE",
    "MatryoshkaSAE",
    "ReLUSAE",
    "Run",
    "SAEOutput",
    "SoftSAE",
    "StepContext",
    "TopKSAE",
    "TrainOutput",
    "load_run",
    "load_sae",
    "register_sae",
]
