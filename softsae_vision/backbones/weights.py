"""Getting weights without surprises: fast failure offline, reproducible random init.

huggingface_hub retries a failed download for about a minute before giving up. We probe the hub
once (a TCP connect with a short timeout); when it is unreachable we switch the hub to offline
mode so that weights already in the local cache still load and missing ones fail at once, with a
message that names the two ways out: ``--checkpoint`` and ``--no-pretrained``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

import torch

from softsae_vision.errors import SoftSAEError

logger = logging.getLogger(__name__)

T = TypeVar("T")

PROBE_TIMEOUT_S = 3.0
RANDOM_INIT_SEED = 0
"""Seed for ``--no-pretrained`` weights, so that re-runs (and resumed extractions) agree."""
RANDOM_LAYER_SCALE = 1.0
"""LayerScale gain of random-weight models. DINOv2-style models initialise it to 1e-5 (a trick
for training from scratch), which with random weights leaves every block nearly the identity;
1.0 is the gain of a ViT without LayerScale, so each random block changes its input."""


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the Hugging Face hub opens within ``timeout`` seconds.

    The probe runs in a daemon thread because a DNS lookup ignores socket timeouts and can
    hang for much longer on a machine without network.
    """
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    url = urlparse(endpoint)
    address = (url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80))
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection(address, timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, name="hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """Put huggingface_hub in offline mode for the duration (it reads this flag per request)."""
    from huggingface_hub import constants

    saved_flag, saved_env = constants.HF_HUB_OFFLINE, os.environ.get("HF_HUB_OFFLINE")
    constants.HF_HUB_OFFLINE = True
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved_flag
        if saved_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved_env


def load_pretrained(name: str, load: Callable[[], T]) -> T:
    """Call ``load`` (which may download weights); turn any failure into a SoftSAEError."""
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if not offline and not hub_reachable():
        logger.info("Hugging Face hub unreachable; using locally cached weights only")
        offline = True
    context = _hub_offline() if offline else contextlib.nullcontext()
    try:
        with context:
            return load()
    except SoftSAEError:
        raise
    except Exception as err:
        why = "no network and not in the local cache" if offline else _one_line(err)
        raise SoftSAEError(
            f"pretrained weights for {name!r} could not be loaded ({why}). "
            "Pass --checkpoint PATH to a local weights file, or --no-pretrained for random weights"
        ) from err


def build_random(build: Callable[[], T]) -> T:
    """Call ``build`` (random init) under a fixed seed, leaving the global RNG untouched.

    LayerScale gains of the result are set to :data:`RANDOM_LAYER_SCALE`.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        model = build()
    if isinstance(model, torch.nn.Module):
        unit_layer_scale(model)
    return model


def unit_layer_scale(model: torch.nn.Module) -> int:
    """Set every LayerScale gain (timm's and open_clip's ``.gamma``) to RANDOM_LAYER_SCALE."""
    n = 0
    with torch.no_grad():
        for module in model.modules():
            gamma = getattr(module, "gamma", None)
            if type(module).__name__.startswith("LayerScale") and isinstance(gamma, torch.Tensor):
                gamma.fill_(RANDOM_LAYER_SCALE)
                n += 1
    if n:
        logger.debug("random weights: %d LayerScale gains set to %g", n, RANDOM_LAYER_SCALE)
    return n


def checkpoint_id(path: str | os.PathLike) -> str:
    """``checkpoint:<sha256 prefix>`` for a weights file; a missing file is a SoftSAEError."""
    path = Path(path)
    if not path.is_file():
        raise SoftSAEError(f"checkpoint file not found: {path}")
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return f"checkpoint:{digest.hexdigest()[:16]}"


def load_checkpoint_or_fail(name: str, path: str | os.PathLike, load: Callable[[], T]) -> T:
    """Call ``load`` (which reads ``path``); a failure becomes a SoftSAEError naming the file."""
    try:
        return load()
    except SoftSAEError:
        raise
    except Exception as err:
        raise SoftSAEError(
            f"could not load checkpoint {path} into {name!r} ({_one_line(err)}); "
            "check that the file holds weights for this exact model"
        ) from err


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]
