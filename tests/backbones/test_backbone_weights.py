"""Weights handling: offline failure is fast and names the fixes; random init is seeded."""

from __future__ import annotations

import os
import time

import pytest
import torch

from softsae_vision.backbones import load_backbone, weights
from softsae_vision.errors import SoftSAEError


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No hub and an empty download cache, whatever the machine running the tests has."""
    from huggingface_hub import constants

    monkeypatch.setattr(weights, "hub_reachable", lambda timeout=0: False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


@pytest.mark.parametrize("name", ["timm/test_vit", "open_clip/ViT-B-32:laion2b_s34b_b79k"])
def test_missing_pretrained_weights_fail_fast_with_the_fixes(offline, name):
    from huggingface_hub import constants

    flag_before = constants.HF_HUB_OFFLINE
    start = time.perf_counter()
    with pytest.raises(SoftSAEError) as info:
        load_backbone(name)
    assert time.perf_counter() - start < 20  # seconds, not a minute of download retries
    message = str(info.value)
    assert "--checkpoint" in message and "--no-pretrained" in message and name in message
    assert constants.HF_HUB_OFFLINE is flag_before and "HF_HUB_OFFLINE" not in os.environ


def test_hub_probe_is_false_for_a_closed_port(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    start = time.perf_counter()
    assert weights.hub_reachable(timeout=1.0) is False
    assert time.perf_counter() - start < 5


def test_online_failures_keep_the_cause(monkeypatch):
    monkeypatch.setattr(weights, "hub_reachable", lambda timeout=0: True)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def fail():
        raise RuntimeError("HTTP 403 gated repository")

    with pytest.raises(SoftSAEError, match="RuntimeError: HTTP 403 gated repository"):
        weights.load_pretrained("timm/x", fail)


def test_loader_success_passes_through(offline):
    assert weights.load_pretrained("timm/x", lambda: 42) == 42


def test_build_random_is_seeded_and_isolated():
    torch.manual_seed(5)
    a = weights.build_random(lambda: torch.rand(4))
    after_a = torch.rand(1)
    torch.manual_seed(5)
    b = weights.build_random(lambda: torch.rand(4))
    assert torch.equal(a, b)
    assert torch.equal(torch.rand(1), after_a)


def test_hub_probe_gives_up_on_a_hanging_lookup(monkeypatch):
    def hang(*args, **kwargs):
        time.sleep(3)
        raise OSError("lookup timed out")

    monkeypatch.setattr(weights.socket, "create_connection", hang)
    start = time.perf_counter()
    assert weights.hub_reachable(timeout=0.3) is False
    assert time.perf_counter() - start < 2
