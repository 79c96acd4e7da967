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
from softsae_vision.sae_configs import (
    ARCH_CONFIGS,
    BatchTopKConfig,
    MatryoshkaConfig,
    ReLUConfig,
    SAEConfig,
    SoftSAEConfig,
    TopKConfig,
)

__all__ = [
    "ARCH_CONFIGS",
    "SAE_REGISTRY",
    "BaseSAE",
    "BatchTopKConfig",
    "BatchTopKSAE",
    "MatryoshkaConfig",
    "MatryoshkaSAE",
    "ReLUConfig",
    "ReLUSAE",
    "Run",
    "SAEConfig",
    "SAEOutput",
    "SoftSAE",
    "SoftSAEConfig",
    "StepContext",
    "TopKConfig",
    "TopKSAE",
    "TrainOutput",
    "load_run",
    "load_sae",
    "register_sae",
]
