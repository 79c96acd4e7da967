"""A plain iterable of batches: read once, in order, and an honest error when it runs dry."""

import pytest
import torch

from softsae_vision import SoftSAEError
from softsae_vision.sae import TopKSAE
from softsae_vision.training import TrainConfig, train

D, F = 8, 32


def _batches(n, rows=16):
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(rows, D, generator=gen) for _ in range(n)]


@pytest.mark.parametrize("prefetch", [0, 2])
def test_an_iterable_that_runs_dry_names_the_step(prefetch):
    cfg = TrainConfig(steps=10, batch_size=999, device="cpu", prefetch=prefetch)
    with pytest.raises(SoftSAEError, match="ran dry at step 3: it yielded 3 batches"):
        train(TopKSAE(D, F, k=2), _batches(3), cfg, progress=False)


@pytest.mark.parametrize("prefetch", [0, 2])
def test_an_iterable_with_exactly_enough_batches_trains(prefetch):
    cfg = TrainConfig(steps=4, batch_size=999, device="cpu", log_every=1, prefetch=prefetch)
    result = train(TopKSAE(D, F, k=2), iter(_batches(4)), cfg, progress=False)
    assert result.steps_run == 4  # the batches as given: batch_size does not re-batch them
