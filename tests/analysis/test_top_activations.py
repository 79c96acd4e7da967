import numpy as np
import pytest
import torch

from softsae_vision.analysis.pairing import pair
from softsae_vision.analysis.top_activations import (
    TopActivations,
    feature_maps,
    top_activations,
)
from softsae_vision.errors import SoftSAEError


def brute_force(sae, store, layer, kinds, n_top):
    """The whole codes tensor at once, then plain numpy: the reference to stream against."""
    types = store.layer_token_types(layer)
    pos = np.array([i for i, t in enumerate(types) if kinds == "all" or t == kinds])
    acts = torch.from_numpy(np.array(store.activations(layer)[:, pos], dtype=np.float32))
    n, t, d = acts.shape
    with torch.no_grad():
        codes = sae.encode(acts.reshape(n * t, d)).reshape(n, t, -1).numpy()  # (N, T, F)
    peak, arg = codes.max(1), codes.argmax(1)  # (N, F)
    order = np.argsort(-peak, axis=0, kind="stable")[:n_top]  # (n_top, F)
    fired = (codes != 0).sum((0, 1))
    return {
        "peak": peak,
        "order": order,
        "tokens": pos[arg],
        "frequency": fired / (n * t),
        "mean": codes.sum((0, 1)) / np.maximum(fired, 1),
    }


@pytest.mark.parametrize(("kinds", "chunk"), [("patch", 3), ("all", 1), ("patch", 100)])
def test_streaming_equals_brute_force(fx, kinds, chunk):
    p = pair(fx.soft_run, fx.store)
    n_top = 3
    top = top_activations(p.sae, p.store, p.layer, kinds, n_top, chunk_images=chunk)
    ref = brute_force(p.sae, p.store, p.layer, kinds, n_top)
    assert top.scores.shape == (p.sae.n_latents, n_top)
    np.testing.assert_allclose(top.frequency, ref["frequency"], rtol=1e-6)
    np.testing.assert_allclose(top.mean_activation, ref["mean"], rtol=1e-4)
    filled = 0
    for f in range(p.sae.n_latents):
        for slot, (score, image, token) in enumerate(top.examples(f)):
            want = ref["order"][slot, f]
            assert score == pytest.approx(ref["peak"][want, f], rel=1e-5)
            assert image == want and token == ref["tokens"][want, f]
            filled += 1
        # Empty slots only where fewer than n_top images fire at all.
        n_firing = int((ref["peak"][:, f] > 0).sum())
        assert len(top.examples(f)) == min(n_top, n_firing)
    assert filled > p.sae.n_latents  # the test is not vacuous: many slots are filled


def test_more_slots_than_images_and_save_load(fx, tmp_path):
    p = pair(fx.topk_run, fx.store)
    top = top_activations(p.sae, p.store, p.layer, "patch", 20)
    assert top.scores.shape == (32, 20) and (top.images[:, 8:] == -1).all()
    assert top.n_images == 8 and top.n_tokens == 8 * 16
    again = TopActivations.load(top.save(tmp_path / "top.npz"))
    for key, value in vars(top).items():
        np.testing.assert_array_equal(getattr(again, key), value)
    with pytest.raises(SoftSAEError):
        top_activations(p.sae, p.store, p.layer, "patch", 0)


def test_feature_maps_match_the_scan(fx):
    p = pair(fx.soft_run, fx.store)
    top = top_activations(p.sae, p.store, p.layer, "patch", 2)
    f = int(np.argmax(top.scores[:, 0]))
    score, row, token = top.examples(f)[0]
    patch_pos = p.store.token_indices("patch", p.layer)
    maps = feature_maps(p.sae, p.store, p.layer, [row], [f], patch_pos)  # (1, 16, 1)
    assert maps.shape == (1, 16, 1)
    assert maps.max() == pytest.approx(score, rel=1e-5)
    assert patch_pos[maps[0, :, 0].argmax()] == token


def test_memory_is_bounded_by_the_chunk(fx):
    """The SAE never sees more than one chunk of images at once: no whole-store codes matrix."""
    p = pair(fx.soft_run, fx.store)
    seen = []
    original = p.sae.encode

    def spy(x):
        seen.append(len(x))
        return original(x)

    p.sae.encode = spy
    try:
        top_activations(p.sae, p.store, p.layer, "patch", 4, chunk_images=2)
    finally:
        del p.sae.encode
    assert max(seen) == 2 * 16 and sum(seen) == 8 * 16
