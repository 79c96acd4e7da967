"""Models of the science suite: SoftSAE variants, the paper's recipe, TopK and BatchTopK.

Every model shares data, normalisation, optimiser, AuxK and schedule lengths; a name maps to
(architecture, constructor arguments, training-setting overrides).
"""

from __future__ import annotations

from softsae_vision.sae import SAE_REGISTRY
from softsae_vision.training import TrainConfig

BASE_TRAINING = dict(batch_size=256, lr=3e-3, device="cpu", log_every=10, checkpoint_every=10**9)

PAPER = {"estimator": "paper"}

MODELS: dict[str, tuple[str, dict, dict]] = {
    # our defaults (k̂ regressed on marginal-gain targets; the "priced" estimator), and each
    # other k estimator with the same targets
    "softsae": ("softsae", {}, {}),
    "softsae-paper": ("softsae", {"estimator": "paper"}, {}),
    "softsae-lean": ("softsae", {"estimator": "lean"}, {}),
    "softsae-gains": ("softsae", {"estimator": "gains"}, {}),
    "softsae-loggains": ("softsae", {"estimator": "loggains"}, {}),
    # how k* counts an input's latents at the price: the best prefix in the encoder's order
    "softsae-prefix": ("softsae", {"k_count": "prefix"}, {}),
    # what the dictionary trains on in the soft phase, and whether k̂ learns in the hard phase
    "softsae-allocated": (
        "softsae",
        {"soft_phase_k": "estimated", "hard_phase_estimator": "frozen"},
        {},
    ),
    "softsae-budget": ("softsae", {"soft_phase_k": "budget"}, {}),
    "softsae-both": ("softsae", {"soft_phase_k": "both"}, {}),
    "softsae-at-least": ("softsae", {"soft_phase_k": "at_least"}, {}),
    "softsae-frozen": ("softsae", {"hard_phase_estimator": "frozen"}, {}),
    "softsae-budget-frozen": (
        "softsae",
        {"soft_phase_k": "budget", "hard_phase_estimator": "frozen"},
        {},
    ),
    "softsae-budget-paper": ("softsae", {"soft_phase_k": "budget", "estimator": "paper"}, {}),
    # a longer hard phase: more of the run at the per-input counts (default 0.15)
    "softsae-hard0.3": ("softsae", {}, {"hard_frac": 0.3}),
    "softsae-hard0.5": ("softsae", {}, {"hard_frac": 0.5}),
    # the paper's recipe, run with our code: k_max = 2·d, gradient through the soft top-k into
    # the latents, k annealed from d, hard phase the last 1/6, no calibration
    "paper-recipe": (
        "softsae",
        {
            "k_max": "2d",
            "selection_grad": True,
            "k_signal": "soft",
            "estimator": "paper",
            "estimator_lr_scale": 1.0,
        },
        {"k_anneal_from": "d", "hard_frac": 1 / 6, "calibrate_k": False},
    ),
    # design variants (how k̂ learns), with the paper's estimator at the SAE's learning rate (×1)
    "gain-lr1": ("softsae", {**PAPER, "k_signal": "gain", "estimator_lr_scale": 1.0}, {}),
    "gain-lr0.1": ("softsae", {**PAPER, "k_signal": "gain", "estimator_lr_scale": 0.1}, {}),
    "soft-detached": (
        "softsae",
        {**PAPER, "k_signal": "soft", "selection_grad": False, "estimator_lr_scale": 1.0},
        {},
    ),
    "soft-selgrad": (
        "softsae",
        {**PAPER, "k_signal": "soft", "selection_grad": True, "estimator_lr_scale": 1.0},
        {},
    ),
    "target-batch": ("softsae", {**PAPER, "k_signal": "batch", "estimator_lr_scale": 1.0}, {}),
    # how the paper estimator's prediction is scored against the gain allocation (default "log")
    "loss-linear": ("softsae", {**PAPER, "k_loss": "linear"}, {}),
    "loss-weighted": ("softsae", {**PAPER, "k_loss": "weighted"}, {}),
    "loss-regret": ("softsae", {**PAPER, "k_loss": "regret"}, {}),
    "loss-log+regret": ("softsae", {**PAPER, "k_loss": "log+regret"}, {}),
    # baselines
    "topk": ("topk", {}, {}),
    "batchtopk": ("batchtopk", {}, {}),
}

QUICK_MODELS = ("softsae", "paper-recipe", "topk", "batchtopk")

RECIPES: dict[str, str] = {
    "paper-recipe": "the paper's recipe run with our code (k_max = 2·d, gradient through the "
    "soft top-k into the latents, k annealed from d, no calibration)",
    "soft-detached": "the paper's signal, soft top-k reading detached latents, k_max = 4·K, "
    "calibrated (`--k-signal soft --estimator paper`)",
    "soft-selgrad": "same, selection gradient on (`--selection-grad`)",
    "target-batch": "k̂ regressed on BatchTopK's allocation of the activations "
    "(`--k-signal batch --estimator paper`)",
    "gain-lr1": "k̂ regressed on the marginal-gain allocation (`--k-signal gain`), paper's "
    "estimator at the full learning rate",
    "softsae-paper": "k̂ regressed on the marginal-gain allocation, the paper's estimator at a "
    "rate scaled to its size (`--estimator paper`)",
    "softsae-budget-paper": "the paper's estimator with the soft phase at each input's top-K "
    "(`--estimator paper --soft-phase-k budget`)",
    "softsae-lean": "k̂ regressed on the marginal-gain allocation, lean estimator "
    "(`--estimator lean`)",
    "softsae-gains": "k̂ regressed on the marginal-gain allocation, estimator reading the SAE's "
    "own marginal gains as shares of the input's energy (`--estimator gains`)",
    "softsae-loggains": "k̂ regressed on the marginal-gain allocation, estimator reading the "
    "gains' logs (`--estimator loggains`)",
    "softsae-allocated": "soft phase reconstructing with each input's top-k̂ and the estimator "
    "frozen in the hard phase, as in the paper (`--soft-phase-k estimated "
    "--hard-phase-estimator frozen`; the first release's default)",
    "softsae-budget": "soft phase reconstructing with each input's top-K only, k̂ learning "
    "beside it (`--soft-phase-k budget`)",
    "softsae-both": "the soft phase's loss the mean of the reconstructions from each input's "
    "top-K and top-k̂ (`--soft-phase-k both`; the previous default)",
    "softsae-prefix": "k* counting the best prefix of each input's latents in the encoder's "
    "order instead of its gains above the price (`--k-count prefix`)",
    "softsae": "**our default**: k̂ regressed on the marginal-gain allocation, estimator "
    "reading the gains both as shares and against the budget's running price "
    "(`--estimator priced`); the soft phase's loss moves from the reconstruction from each "
    "input's top-K to the one from its top-k̂ as the phase proceeds, the hard phase trains at "
    "top-⌊k̂⌋ while k̂ keeps learning",
    "loss-regret": "the paper's estimator scored by the reconstruction a wrong count costs "
    '(`k_loss="regret"`)',
    "topk": "TopK, same K",
    "batchtopk": "BatchTopK, same K (inference threshold learnt in training)",
}
"""README's "where we differ" table: the models it lists, in order, and how it names them."""


def build(name: str, d: int, n_latents: int, k: int, steps: int, seed: int = 0, **training):
    """(SAE, TrainConfig) for model ``name`` on width d with budget K; ``training`` overrides
    the suite's shared training settings (the model's own overrides still win)."""
    arch, kwargs, overrides = MODELS[name]
    kwargs = dict(kwargs)
    if kwargs.get("k_max") == "2d":
        kwargs["k_max"] = min(2.0 * d, n_latents - 1.0)
    sae = SAE_REGISTRY[arch](d, n_latents, k=k, seed=seed, **kwargs)
    return sae, train_config(steps, seed=seed, **{**training, **overrides})


def train_config(steps: int, **overrides) -> TrainConfig:
    return TrainConfig(steps=steps, **{**BASE_TRAINING, **overrides})
