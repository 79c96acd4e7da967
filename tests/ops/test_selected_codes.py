"""SelectedCodes: a batch's codes as the entries kept, and the statistics read from them."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from softsae_vision.errors import SoftSAEError
from softsae_vision.ops import SelectedCodes, hard_topk_entries, hard_topk_sparse
from softsae_vision.ops._soft_topk_plan import PATH_ENV
from softsae_vision.ops.sparse_decode import SPARSE_DECODE_ENV
from softsae_vision.sae import BatchTopKSAE, MatryoshkaSAE, ReLUSAE, SoftSAE, TopKSAE
from softsae_vision.sae.base import StepContext
from softsae_vision.training import TrainConfig
from softsae_vision.training.losses import AUXK_PATH_ENV
from softsae_vision.training.trainer import Trainer

B, F, D = 24, 40, 8


def dense_stats(codes_BF: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    active_BF = codes_BF != 0
    return active_BF.sum(1).float(), active_BF.any(0)


def check_against_dense(selected: SelectedCodes) -> None:
    counts_B, fired_F = dense_stats(selected.dense())
    assert torch.equal(selected.row_counts(), counts_B)
    assert torch.equal(selected.fired(), fired_F)


def test_each_form_counts_what_its_dense_codes_hold():
    gen = torch.Generator().manual_seed(0)
    z_BF = torch.randn(B, F, generator=gen).relu()  # about half the entries are exact zeros
    idx_BK, vals_BK = hard_topk_entries(z_BF, torch.randint(0, 30, (B,), generator=gen), k_max=30)
    rows_form = SelectedCodes.from_rows(idx_BK, vals_BK, F)
    assert (vals_BK == 0).any(), "some kept slots must be zero for this test to mean anything"
    check_against_dense(rows_form)
    # the same entries listed one by one, rows ascending, and split over two row groups
    rows_N = torch.arange(B)[:, None].expand_as(idx_BK).reshape(-1)
    check_against_dense(
        SelectedCodes.from_entries(rows_N, idx_BK.reshape(-1), vals_BK.reshape(-1), (B, F))
    )
    even, odd = torch.arange(0, B, 2), torch.arange(1, B, 2)
    split = SelectedCodes((B, F), groups=[(r, idx_BK[r], vals_BK[r]) for r in (even, odd)])
    torch.testing.assert_close(split.dense(), rows_form.dense())
    check_against_dense(split)
    check_against_dense(SelectedCodes.from_dense(rows_form.dense()))
    # a dense remainder may overlap the entries: an entry cancelled by it is not active
    cancelling = SelectedCodes((B, F), groups=[(None, idx_BK, vals_BK)], rest=-rows_form.dense())
    assert cancelling.row_counts().sum() == 0 and not cancelling.fired().any()


def test_an_empty_selection_is_a_clear_error():
    with pytest.raises(SoftSAEError, match="holds nothing"):
        SelectedCodes((B, F)).row_counts()


def test_hard_topk_entries_are_hard_topk_sparse_without_the_dense_codes():
    z_BF = torch.randn(B, F)
    k_B = torch.randint(0, 9, (B,))
    codes_BF, idx_BK, vals_BK = hard_topk_sparse(z_BF, k_B, k_max=8)
    idx2, vals2 = hard_topk_entries(z_BF, k_B, k_max=8)
    assert torch.equal(idx_BK, idx2) and torch.equal(vals_BK, vals2)
    torch.testing.assert_close(SelectedCodes.from_rows(idx2, vals2, F).dense(), codes_BF)
    idx_K, vals_K = hard_topk_entries(z_BF[0], 3)  # one row
    assert idx_K.shape == (3,) and torch.equal(vals_K, z_BF[0].topk(3).values)


ARCHITECTURES = {
    "topk": lambda: TopKSAE(D, F, k=4, seed=0),
    "batchtopk": lambda: BatchTopKSAE(D, F, k=4, seed=0),
    "matryoshka": lambda: MatryoshkaSAE(D, F, k=4, seed=0),
    "relu": lambda: ReLUSAE(D, F, seed=0),
    "softsae": lambda: SoftSAE(D, F, k=4, seed=0),
    "softsae-paper-signal": lambda: SoftSAE(D, F, k=4, k_signal="soft", seed=0),
}


@pytest.mark.parametrize("phase", ["soft", "hard"])
@pytest.mark.parametrize("name", ARCHITECTURES)
@pytest.mark.parametrize("decode", ["auto", "0"])
def test_every_training_output_counts_as_its_dense_codes(name, phase, decode, monkeypatch):
    monkeypatch.setenv(SPARSE_DECODE_ENV, decode)
    sae = ARCHITECTURES[name]()
    with torch.no_grad():
        sae.b_enc[: F // 2] -= 3.0  # half the latents rarely positive: rows with zero slots
    xn_BD = torch.randn(B, D, generator=torch.Generator().manual_seed(1))
    out = sae.train_output(xn_BD, StepContext(phase=phase, alpha=1e-2, k_target=4.0))
    counts_B, fired_F = dense_stats(out.codes)
    assert torch.equal(out.selected.row_counts(), counts_B)
    assert torch.equal(out.selected.fired(), fired_F)
    assert not fired_F.all(), "some latent must stay silent for this test to mean anything"


def test_a_training_step_writes_no_dense_code_matrix(monkeypatch):
    """With the CPU defaults (sparse decoding and encoder gradient) a step's only (B, F)
    tensors are the pre-activations: the codes, the fired latents and each row's L0 come from
    the kept entries."""
    monkeypatch.setenv(SPARSE_DECODE_ENV, "auto")
    for switch in (PATH_ENV, AUXK_PATH_ENV):  # the CPU defaults: the adaptive soft top-k plan
        monkeypatch.delenv(switch, raising=False)
    rows, latents = 32, 96
    x_BD = torch.randn(rows, D)
    for make in (
        lambda: TopKSAE(D, latents, k=4),
        lambda: BatchTopKSAE(D, latents, k=4),
        lambda: MatryoshkaSAE(D, latents, k=4),
        lambda: SoftSAE(D, latents, k=4),
    ):
        sae = make()
        sae.fit_normalization(x_BD)
        cfg = TrainConfig(steps=100, batch_size=rows, hard_frac=0.0, k_anneal_frac=0.0)
        trainer = Trainer(sae, cfg, torch.device("cpu"))
        trainer.train_step(x_BD)
        with DenseOps((rows, latents)) as seen:
            trainer.train_step(x_BD, stats=True)
        assert seen.ops == ["aten.addmm.default", "aten.relu.default"], type(sae).__name__


def test_a_topk_step_with_the_dense_encoder_gradient_writes_no_dense_codes(monkeypatch):
    """With the dense encoder gradient (the CUDA default) a TopK step's (B, F) tensors are the
    pre-activations and their dense gradient only (topk's backward scatter, ReLU's backward):
    no dense code matrix is built and thrown away."""
    monkeypatch.setenv(SPARSE_DECODE_ENV, "decode")
    monkeypatch.delenv(AUXK_PATH_ENV, raising=False)
    rows, latents = 32, 96
    x_BD = torch.randn(rows, D)
    sae = TopKSAE(D, latents, k=4)
    sae.fit_normalization(x_BD)
    cfg = TrainConfig(steps=100, batch_size=rows, hard_frac=0.0, k_anneal_frac=0.0)
    trainer = Trainer(sae, cfg, torch.device("cpu"))
    trainer.train_step(x_BD)
    with DenseOps((rows, latents)) as seen:
        trainer.train_step(x_BD, stats=True)
    assert seen.ops == [
        "aten.addmm.default",
        "aten.relu.default",
        "aten.new_zeros.default",  # topk's backward: the gradient of z, dense
        "aten.scatter.src",
        "aten.threshold_backward.default",
    ]


class DenseOps(TorchDispatchMode):
    """Records the ops that write a tensor of ``shape``, new or in place (views are free)."""

    def __init__(self, shape: tuple[int, int]):
        super().__init__()
        self.shape, self.ops = shape, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        outs = out if isinstance(out, (tuple, list)) else [out]
        if not func.is_view and any(
            isinstance(o, torch.Tensor) and tuple(o.shape) == self.shape for o in outs
        ):
            self.ops.append(str(func))
        return out


def test_train_output_still_takes_dense_codes():
    """Custom SAEs written before SelectedCodes passed the dense (B, F) codes."""
    from softsae_vision.sae.base import TrainOutput

    codes_BF = torch.randn(B, F).relu()
    out = TrainOutput(torch.zeros(B, D), codes_BF, torch.zeros(B, F))  # pyright: ignore[reportArgumentType]
    assert out.codes is codes_BF
    assert torch.equal(out.selected.row_counts(), (codes_BF != 0).sum(1).float())
