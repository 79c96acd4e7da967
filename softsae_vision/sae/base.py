"""What every SAE shares: normalisation, tied-init encoder/decoder, a registry, save and load.

Conventions (all architectures):
- Input normalisation lives in the model as buffers: x̃ = (x − mean) / scale with
  scale = sqrt(E‖x − mean‖²), so E‖x̃‖² = 1 and the normalised MSE reads like an FVU. (The
  reference code divides by the RMS norm of the *uncentred* data; centring first makes the scale
  independent of the data's offset, which for ViT residual streams is large.)
- Pre-activations z = ReLU((x̃ − b_dec) W_encᵀ + b_enc), shape (B, F).
- Decoder x̂̃ = f W_dec + b_dec with W_dec of shape (F, d): each latent's decoder direction is a
  row, kept at unit norm by the trainer.
- ``encode``/``decode``/``forward`` take and return *raw* activations; the training path
  (:meth:`BaseSAE.train_output`) works in normalised space.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import Tensor, nn

from softsae_vision._io import atomic_write, write_bytes_atomic, write_json_atomic  # noqa: F401 (viz imports atomic_write from here)
from softsae_vision._version import __version__
from softsae_vision.errors import SoftSAEError
from softsae_vision.ops.selected_codes import SelectedCodes
from softsae_vision.ops.sparse_decode import dense_decode, sparse_decode, sparse_decode_enabled
from softsae_vision.ops.sparse_encode import (
    SparseEncoding,
    dense_pre_acts,
    sparse_encode_enabled,
)
from softsae_vision.sae_configs import SAEConfig

SCHEMA_VERSION = 1
WEIGHTS_FILE = "sae.safetensors"
CONFIG_FILE = "config.json"

SAE_REGISTRY: dict[str, type[BaseSAE]] = {}

_S = TypeVar("_S", bound="BaseSAE")


def register_sae(name: str):
    """Class decorator: make an SAE class loadable by its architecture name (names are unique)."""

    def decorate(cls: type[_S]) -> type[_S]:
        old = SAE_REGISTRY.get(name)
        same = old is not None and (old.__module__, old.__qualname__) == (
            cls.__module__,
            cls.__qualname__,
        )  # the same class again (its module reloaded)
        if old is not None and not same:
            raise SoftSAEError(
                f"register_sae: an SAE architecture named {name!r} is already registered "
                f"({old.__module__}.{old.__qualname__}); pick another name for "
                f"{cls.__module__}.{cls.__qualname__}"
            )
        cls.architecture = name
        SAE_REGISTRY[name] = cls
        return cls

    return decorate


@dataclass
class SAEOutput:
    """What ``forward`` returns, in raw activation space."""

    x_hat: Tensor  # (B, d)
    codes: Tensor  # (B, F)
    k_hat: Tensor | None = None  # (B,), SoftSAE only


@dataclass
class StepContext:
    """Per-step training state an SAE may need (set by the trainer's schedules)."""

    phase: str = "soft"  # "soft" or "hard" (SoftSAE); other architectures ignore it
    alpha: float = 1e-4
    k_target: float = 32.0
    soft_progress: float = 0.5  # share of the soft phase done, in [0, 1] (SoftSAE's "ramp")


@dataclass
class TrainOutput:
    """The training-path result in normalised space."""

    x_hat: Tensor  # (B, d) normalised reconstruction
    selected: SelectedCodes  # the latents actually used (B, F), as the entries kept
    pre_acts: Tensor  # (B, F) z before selection (for AuxK)
    recon_loss: Tensor | None = None  # set when the architecture defines its own (Matryoshka)
    extra_losses: dict[str, Tensor] = field(default_factory=dict)  # already weighted
    k_hat: Tensor | None = None  # (B,) float32
    encoding: SparseEncoding | None = None  # set when pre_acts is detached (sparse gradient)

    def __post_init__(self) -> None:
        if isinstance(self.selected, Tensor):  # dense codes, as TrainOutput took them before
            self.selected = SelectedCodes.from_dense(self.selected)

    @functools.cached_property
    def codes(self) -> Tensor:
        """The codes as a dense (B, F) tensor, built on first use (the trainer reads
        ``selected``'s entries instead)."""
        return self.selected.dense()


INIT_STREAM_SALT = 0x5AE1
"""Mixed into an SAE's seed before it seeds the initial dictionary (see ``init_stream_seed``)."""


def init_stream_seed(seed: int | None) -> int:
    """The seed of the random stream an SAE's initial dictionary is drawn from.

    Not ``seed`` itself: ``torch.Generator().manual_seed(s)`` then ``randn(n, d)`` is also how
    data are commonly drawn (``SyntheticSparseData``'s dictionary is), and an SAE initialised
    from the same stream starts *at* the true dictionary. Before this salt the science suite's
    seed-0 runs did exactly that. The seed is mixed with a salt through numpy's SeedSequence.
    """
    entropy = [0 if seed is None else int(seed), INIT_STREAM_SALT]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> 1)


class BaseSAE(nn.Module):
    """Shared parameters, normalisation and I/O; subclasses define latent selection."""

    norm_mean: Tensor  # (d,) buffer
    norm_scale: Tensor  # () buffer

    architecture: ClassVar[str] = "base"
    config_class: ClassVar[type[SAEConfig]] = SAEConfig
    """The architecture's hyperparameters: fields named as constructor arguments and attributes."""
    legacy_hparams: ClassVar[dict[str, Any]] = {}
    """Values of hyperparameters added later, for configs written before they existed."""

    # ----------------------------------------------------------------- capabilities
    predicts_k: ClassVar[bool] = False
    """Whether the model predicts a per-input k̂ (:meth:`predict_k`; SoftSAE)."""
    calibrates_k: ClassVar[bool] = False
    """Whether :meth:`calibrate` fits anything (the trainer calls it as the hard phase starts
    and after the last step)."""

    def __init__(self, d_in: int, n_latents: int, seed: int | None = None) -> None:
        super().__init__()
        if d_in < 1 or n_latents < 1:
            raise SoftSAEError(f"d_in and n_latents must be positive, got {d_in}, {n_latents}")
        self.d_in = int(d_in)
        self.n_latents = int(n_latents)
        gen = torch.Generator().manual_seed(init_stream_seed(seed))
        w_dec_FD = torch.randn(n_latents, d_in, generator=gen)
        w_dec_FD /= w_dec_FD.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(w_dec_FD)
        self.W_enc = nn.Parameter(w_dec_FD.clone())
        self.b_enc = nn.Parameter(torch.zeros(n_latents))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        self.register_buffer("norm_mean", torch.zeros(d_in))
        self.register_buffer("norm_scale", torch.ones(()))

    # ----------------------------------------------------------------- hyperparameters
    @classmethod
    def from_config(
        cls: type[_S],
        d_in: int,
        n_latents: int,
        config: SAEConfig | None = None,
        seed: int | None = None,
    ) -> _S:
        """A new model of this architecture with ``config`` (default: the config's defaults)."""
        config = cls.config_class() if config is None else config
        if type(config) is not cls.config_class:
            raise SoftSAEError(
                f"{cls.__name__} takes a {cls.config_class.__name__}, got {type(config).__name__}"
            )
        return cls(d_in, n_latents, **config.to_kwargs(), seed=seed)

    @classmethod
    def from_hparams(cls: type[_S], d_in: int, n_latents: int, hparams: Mapping[str, Any]) -> _S:
        """A new model from a config.json ``hparams`` block, missing legacy values filled in."""
        values = {**cls.legacy_hparams, **hparams}
        if not dataclasses.fields(cls.config_class):  # a class that declares no config
            return cls(d_in, n_latents, **values)
        return cls.from_config(d_in, n_latents, cls.config_class.from_dict(values))

    @property
    def config(self) -> SAEConfig:
        """The model's hyperparameters, defaults resolved (e.g. SoftSAE's k_max)."""
        fields = dataclasses.fields(self.config_class)
        return self.config_class(**{f.name: getattr(self, f.name) for f in fields})

    def hparams(self) -> dict[str, Any]:
        """Architecture-specific constructor arguments (beyond d_in, n_latents), JSON-able."""
        return self.config.to_dict()

    @property
    def target_l0(self) -> float | None:
        """Mean active latents per input the model is built to give (K); None without one (ReLU)."""
        return None

    @property
    def k_ceiling(self) -> float | None:
        """Largest per-input k the selection may choose (SoftSAE's k_max); else ``target_l0``."""
        return self.target_l0

    def predict_k(self, x_BD: Tensor) -> Tensor:
        """Real-valued predicted k̂ (B,) of raw activations; only where ``predicts_k``."""
        raise SoftSAEError(
            f"a {self.architecture!r} SAE does not predict k (predicts_k is False); "
            "use its realised L0 instead"
        )

    @torch.no_grad()
    def calibrate(self, xn_batches: list[Tensor]) -> float | None:
        """Fit whatever makes the realised mean L0 on normalised rows equal ``target_l0``.

        Returns the fitted value (SoftSAE: the k̂ logit offset), or None where nothing is fitted.
        """
        return None

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimiser parameter groups; a group's ``lr_scale`` multiplies the scheduled rate."""
        return [{"params": list(self.parameters())}]

    # ----------------------------------------------------------------- normalisation
    @torch.no_grad()
    def fit_normalization(self, sample_ND: Tensor) -> None:
        """Set mean and scale from a sample of raw activations, and b_dec to their median."""
        sample_ND = _check_acts(sample_ND, self.d_in).float()
        mean_D = sample_ND.mean(0)
        scale = (sample_ND - mean_D).pow(2).sum(-1).mean().sqrt()
        if not torch.isfinite(scale) or scale <= 0:
            raise SoftSAEError("activations are constant; cannot fit normalisation")
        self.norm_mean.copy_(mean_D)
        self.norm_scale.copy_(scale)
        self.b_dec.copy_(geometric_median(self.normalize(sample_ND)))

    def normalize(self, x_BD: Tensor) -> Tensor:
        return (x_BD - self.norm_mean) / self.norm_scale

    def denormalize(self, x_BD: Tensor) -> Tensor:
        return x_BD * self.norm_scale + self.norm_mean

    # ----------------------------------------------------------------- core math
    def pre_acts(self, xn_BD: Tensor) -> Tensor:
        """z = ReLU((x̃ − b_dec) W_encᵀ + b_enc), shape (B, F)."""
        return dense_pre_acts(xn_BD, self.W_enc, self.b_enc, self.b_dec)

    def sparse_encoding(self, xn_BD: Tensor) -> SparseEncoding | None:
        """z without gradient, read with a gradient through the selected latents; None: off."""
        if not sparse_encode_enabled(xn_BD.device):
            return None
        return SparseEncoding(xn_BD, self.W_enc, self.b_enc, self.b_dec)

    def decode_normalized(self, codes_BF: Tensor) -> Tensor:
        return torch.addmm(self.b_dec, codes_BF, self.W_dec)

    def decode_sparse_normalized(self, idx_BK: Tensor, vals_BK: Tensor) -> Tensor:
        """Normalised reconstruction (B, d) from the selected latents only (idx, values (B, K)).

        Gathers K rows of W_dec per input (ops/sparse_decode.py); ``SOFTSAE_SPARSE_DECODE=0``
        takes the dense twin.
        """
        decode = sparse_decode if sparse_decode_enabled() else dense_decode
        return decode(idx_BK, vals_BK, self.W_dec) + self.b_dec

    def select(self, z_BF: Tensor) -> Tensor:
        """Inference-time (hard) latent selection: codes (B, F) from pre-activations (B, F)."""
        raise NotImplementedError

    def select_sparse(self, z_BF: Tensor) -> tuple[Tensor, Tensor, Tensor] | None:
        """(codes (B, F), idx (B, K), values (B, K)) of ``select``, or None if it has no fixed K."""
        return None

    def encode_normalized(self, xn_BD: Tensor) -> Tensor:
        """Inference-time codes (B, F) of normalised activations (B, d)."""
        return self.select(self.pre_acts(xn_BD))

    def train_output(self, xn_BD: Tensor, ctx: StepContext) -> TrainOutput:
        """Training-path forward in normalised space; default: inference selection."""
        z_BF = self.pre_acts(xn_BD)
        chosen = self.select_sparse(z_BF)
        if chosen is not None:
            _, idx_BK, vals_BK = chosen
            x_hat_BD = self.decode_sparse_normalized(idx_BK, vals_BK)
            selected = SelectedCodes.from_rows(idx_BK, vals_BK, self.n_latents)
            return TrainOutput(x_hat_BD, selected, z_BF)
        codes_BF = self.select(z_BF)
        x_hat_BD = self.decode_normalized(codes_BF)
        return TrainOutput(x_hat_BD, SelectedCodes.from_dense(codes_BF), z_BF)

    # ----------------------------------------------------------------- public API
    def encode(self, x_BD: Tensor) -> Tensor:
        """Sparse codes (B, F) of raw activations, with inference-time (hard) selection."""
        return self.encode_normalized(
            self.normalize(_check_acts(x_BD, self.d_in).to(self.W_enc.dtype))
        )

    def decode(self, codes_BF: Tensor) -> Tensor:
        """Raw-space reconstruction (B, d) from codes (B, F)."""
        return self.denormalize(self.decode_normalized(codes_BF))

    def forward(self, x_BD: Tensor) -> SAEOutput:
        xn_BD = self.normalize(_check_acts(x_BD, self.d_in).to(self.W_enc.dtype))
        z_BF = self.pre_acts(xn_BD)
        chosen = self.select_sparse(z_BF)
        if chosen is None:
            codes_BF = self.select(z_BF)
            return SAEOutput(self.decode(codes_BF), codes_BF)
        codes_BF, idx_BK, vals_BK = chosen
        return SAEOutput(self.denormalize(self.decode_sparse_normalized(idx_BK, vals_BK)), codes_BF)

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Rescale decoder rows to unit norm (called after every optimiser step)."""
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8)

    @torch.no_grad()
    def project_decoder_grad(self) -> None:
        """Remove from W_dec's gradient its component along each (unit) decoder row."""
        if self.W_dec.grad is not None:
            along_F1 = (self.W_dec.grad * self.W_dec).sum(1, keepdim=True)
            self.W_dec.grad -= along_F1 * self.W_dec

    # ----------------------------------------------------------------- I/O
    def config_dict(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "library_version": __version__,
            "architecture": self.architecture,
            "d_in": self.d_in,
            "n_latents": self.n_latents,
            "hparams": self.hparams(),
            **(extra or {}),
        }

    def save(self, path: str | os.PathLike, extra_config: dict[str, Any] | None = None) -> Path:
        """Write ``sae.safetensors`` and ``config.json`` into directory ``path`` (atomically)."""
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        config_path = out / CONFIG_FILE
        config = self.config_dict(extra_config)
        if config_path.exists():  # keep what the trainer recorded (data, training settings)
            old = _read_config(config_path)
            config = {**old, **config}
        self.save_weights(out)
        write_json_atomic(config_path, config)
        return out

    def save_weights(self, path: str | os.PathLike) -> Path:
        """Write only ``sae.safetensors`` into directory ``path`` (atomically); return its path."""
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        # Serialised in memory and written by Python: safetensors' own save_file re-creates the
        # file (private permissions) and reports a full disk as a Rust error.
        weights = Path(path) / WEIGHTS_FILE
        write_bytes_atomic(weights, safetensors_bytes(tensors))
        return weights

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> str:
        """Upload weights, config and a model card to a Hub repo; see :func:`hub.push_to_hub`."""
        from softsae_vision.hub import push_to_hub

        return push_to_hub(self, repo_id, **kwargs)


def _check_acts(x: Tensor, d_in: int) -> Tensor:
    if not isinstance(x, Tensor):
        raise SoftSAEError(f"expected a torch.Tensor of activations, got {type(x).__name__}")
    if x.ndim != 2 or x.shape[1] != d_in:
        raise SoftSAEError(
            f"activations must have shape (batch, {d_in}), got {tuple(x.shape)}; "
            "check the layer/token width matches the SAE's d_in"
        )
    return x


@torch.no_grad()
def geometric_median(points_ND: Tensor, iters: int = 100, tol: float = 1e-6) -> Tensor:
    """Weiszfeld's algorithm: the point minimising the sum of distances to ``points``."""
    points_ND = points_ND.double()
    median_D = points_ND.mean(0)
    for _ in range(iters):
        dist_N = (points_ND - median_D).norm(dim=1).clamp_min(1e-12)
        w_N = 1.0 / dist_N
        new_D = (w_N[:, None] * points_ND).sum(0) / w_N.sum()
        shift = (new_D - median_D).norm()
        median_D = new_D
        if shift <= tol * max(1.0, median_D.norm().item()):
            break
    return median_D.float()


def state_mismatch(expected: dict[str, Tensor], got: dict[str, Any]) -> str | None:
    """Which tensors of ``got`` do not fit a model whose state is ``expected`` (None: all fit)."""
    problems = []
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected {', '.join(unexpected)}")
    for name, tensor in expected.items():
        value = got.get(name)
        if value is None or name in missing:
            continue
        if not isinstance(value, Tensor):
            problems.append(f"{name} is a {type(value).__name__}, not a tensor")
        elif value.shape != tensor.shape:
            problems.append(
                f"{name} has shape {tuple(value.shape)} where the model has {tuple(tensor.shape)}"
            )
    return "; ".join(problems) or None


def _read_config(config_path: Path) -> dict[str, Any]:
    fix = "restore it from the original run, or train the SAE again"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SoftSAEError(f"{config_path} is damaged ({err}); {fix}") from None
    if not isinstance(config, dict):
        raise SoftSAEError(f"{config_path} is not an SAE config (not a JSON object); {fix}")
    return config


def _check_config(config: dict[str, Any], config_path: Path) -> tuple[str, int, int, dict]:
    """(architecture, d_in, n_latents, hparams) of a run config, each checked for type."""
    fix = "restore it from the original run, or train the SAE again"
    expected = {
        "architecture": (str, "a string"),
        "d_in": (int, "a positive integer"),
        "n_latents": (int, "a positive integer"),
    }
    for key, (kind, words) in expected.items():
        value = config.get(key)
        if key not in config:
            raise SoftSAEError(f"{config_path} is not an SAE config (no {key!r}); {fix}")
        too_small = isinstance(value, int) and value < 1
        if not isinstance(value, kind) or isinstance(value, bool) or too_small:
            raise SoftSAEError(f"{config_path}: {key!r} must be {words}, got {value!r}; {fix}")
    hparams = config.get("hparams", {})
    if not isinstance(hparams, dict):
        raise SoftSAEError(f"{config_path}: 'hparams' must be a JSON object; {fix}")
    schema = config.get("schema_version", 0)
    if not isinstance(schema, int) or isinstance(schema, bool):
        raise SoftSAEError(f"{config_path}: 'schema_version' must be an integer; {fix}")
    return config["architecture"], config["d_in"], config["n_latents"], hparams


def load_sae(
    path: str | os.PathLike, device: str | torch.device = "cpu", format: str | None = None
) -> BaseSAE:
    """Load any saved SAE: a run directory or its weights file, ``hf://ORG/REPO[/SUBDIR][@REV]``,
    or another toolkit's file (``format`` detected, or one of ``sae.importers.FORMATS``).

    Every malformed or inconsistent file gives one SoftSAEError naming the file and the fix.
    """
    return load_run(path, device, format).sae


@dataclass(frozen=True)
class Run:
    """A loaded SAE, the config it was saved with, and the folder it was read from."""

    sae: BaseSAE
    config: dict[str, Any]
    """``config.json`` as read; for another toolkit's file, made up from its provenance."""
    dir: Path
    """The run directory (for an imported file: the file or folder it was imported from)."""

    @property
    def data(self) -> dict[str, Any]:
        """What the SAE was trained on (``config["data"]``; empty if not recorded)."""
        data = self.config.get("data")
        return data if isinstance(data, dict) else {}


def load_run(
    path: str | os.PathLike, device: str | torch.device = "cpu", format: str | None = None
) -> Run:
    """The SAE, config and folder of a saved run (whatever :func:`load_sae` accepts).

    The one place that reads a run directory's ``config.json`` and weights; every malformed or
    inconsistent file gives one SoftSAEError naming the file and the fix.
    """
    from softsae_vision.sae.importers import NATIVE, import_sae, resolve_source

    path, fmt = resolve_source(path, format)
    if fmt != NATIVE:
        sae, info = import_sae(path, fmt)
        config = sae.config_dict({"imported_from": info, "data": {"kind": "imported"}})
        return Run(sae.to(device).eval(), config, path)
    run_dir = path.parent if path.suffix == ".safetensors" else path
    sae, config = _read_run_dir(run_dir)
    return Run(sae.to(device).eval(), config, run_dir)


def _read_run_dir(run_dir: Path) -> tuple[BaseSAE, dict[str, Any]]:
    """(SAE on the CPU, its config) from a run directory, every file checked."""
    weights, config_path = run_dir / WEIGHTS_FILE, run_dir / CONFIG_FILE
    not_a_run = (
        f"{run_dir} is not an SAE run: expected {CONFIG_FILE} and {WEIGHTS_FILE} there "
        "(train one with `softsae train`)"
    )
    if not config_path.is_file():
        raise SoftSAEError(not_a_run)
    config = _read_config(config_path)
    arch, d_in, n_latents, hparams = _check_config(config, config_path)
    if config.get("status", "complete") != "complete":
        raise SoftSAEError(
            f"{run_dir} is an unfinished training run; finish it with "
            f"`softsae train ... --out {run_dir} --resume`"
        )
    if not weights.is_file():
        raise SoftSAEError(not_a_run)
    if config.get("schema_version", 0) > SCHEMA_VERSION:
        raise SoftSAEError(
            f"{run_dir} was written by a newer softsae-vision (schema "
            f"{config['schema_version']}); upgrade the package to load it"
        )
    if arch not in SAE_REGISTRY:
        raise SoftSAEError(
            f"{config_path}: unknown SAE architecture {arch!r}; known: {sorted(SAE_REGISTRY)}"
        )
    try:
        sae = SAE_REGISTRY[arch].from_hparams(d_in, n_latents, hparams)
    except (TypeError, ValueError, SoftSAEError) as err:
        raise SoftSAEError(
            f"{config_path}: its hparams do not fit architecture {arch!r} ({err}); restore it "
            "from the original run, or train the SAE again"
        ) from None
    fix = "restore it from the original run, or train the SAE again"
    try:
        state = load_file(str(weights))
    except OSError:
        raise
    except Exception as err:  # safetensors raises its own error type for a torn or foreign file
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        raise SoftSAEError(f"{weights} is damaged ({reason}); {fix}") from None
    mismatch = state_mismatch(sae.state_dict(), state)
    if mismatch is not None:
        raise SoftSAEError(
            f"{weights} does not match architecture {arch!r} as its {CONFIG_FILE} describes it "
            f"({mismatch}); {fix}"
        )
    bad = [n for n, t in state.items() if t.is_floating_point() and not t.isfinite().all()]
    if bad:
        raise SoftSAEError(f"{weights} holds NaN or inf values (in {', '.join(bad)}); {fix}")
    sae.load_state_dict(state)
    return sae, config
