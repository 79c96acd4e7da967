"""Feature names from a tiny random-weight CLIP: nearest text embeddings, top-image labels."""

import json
from collections import Counter

import pytest
import torch

from softsae_vision.analysis.downstream import iter_batches, load_classifier
from softsae_vision.analysis.naming import name_by_text, read_names, read_vocab
from softsae_vision.cli import main
from softsae_vision.errors import SoftSAEError
from tests._fixtures_splice import class_folders, identity_sae, register_tiny_clip, save_run

WORDS = ["cat", "dog", "red car", "tree", "sky", "brick wall"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("naming")
    name = register_tiny_clip(root)
    vocab = root / "words.txt"
    vocab.write_text("# a comment\n" + "\n".join(WORDS + ["cat"]) + "\n\n")
    return root, name, vocab


def test_read_vocab(setup, tmp_path):
    _, _, vocab = setup
    assert read_vocab(vocab) == WORDS
    (tmp_path / "one.txt").write_text("cat\n")
    with pytest.raises(SoftSAEError, match="at least two"):
        read_vocab(tmp_path / "one.txt")


def test_name_by_text_finds_planted_atoms():
    text = torch.randn(6, 16, generator=torch.Generator().manual_seed(1))
    centred = text - text.mean(0)
    atoms = torch.stack([centred[2], 5 * centred[0], centred[5] + 0.01 * centred[1]])
    names = name_by_text(atoms, text, WORDS)
    assert [n["name"] for n in names] == ["red car", "cat", "brick wall"]
    assert names[0]["score"] == pytest.approx(1.0) and len(names[0]["alternatives"]) == 4


def test_embed_sae_named_by_its_text_atoms(setup, tmp_path):
    root, name, vocab = setup
    clip = load_classifier(name, WORDS, pretrained=False, prompt="{}")
    text = clip.text_emb_VE
    sae = identity_sae(16, torch.zeros(16))  # 32 latents; plant words in the first three
    order = [3, 1, 4]
    with torch.no_grad():
        sae.W_dec[:3] = text[order] - text.mean(0)
    run = save_run(sae, tmp_path / "run", "embed", "embed", name)
    assert main(["name", str(run), "--model", name, "--vocab", str(vocab), "--no-pretrained"]) == 0
    doc = json.loads((run / "features.json").read_text())
    assert doc["method"] == "text_nearest" and doc["n_words"] == len(WORDS)
    assert len(doc["features"]) == 32
    assert [e["name"] for e in doc["features"][:3]] == [WORDS[i] for i in order]
    assert read_names(run)[1] == "dog"


def test_block_sae_named_by_top_image_labels(setup, tmp_path):
    from softsae_vision.backbones import load_backbone
    from softsae_vision.data.extract import extract

    root, name, vocab = setup
    images = class_folders(tmp_path / "images", per_class=3)
    store = tmp_path / "store"
    backbone = load_backbone(name, pretrained=False)
    extract(backbone, images, store, layers=(1,), progress=False, batch_size=4)
    run = save_run(identity_sae(32, torch.zeros(32)), tmp_path / "run", 1, "patch", name)
    argv = ["name", str(run), "--model", name, "--vocab", str(vocab), "--no-pretrained"]
    assert main(argv) == 2  # a block-layer SAE needs --store
    assert main([*argv, "--store", str(store), "--top", "4"]) == 0
    doc = json.loads((run / "features.json").read_text())
    assert doc["method"] == "top_image_zero_shot" and doc["features"]
    # recompute the zero-shot label of every image; each name is its top images' majority
    from softsae_vision.analysis.top_activations import top_activations
    from softsae_vision.data.store import open_store

    st = open_store(store)
    clip = load_classifier(name, WORDS, pretrained=False, prompt="{}")
    from pathlib import Path

    labels = {}
    for idx, x in iter_batches(clip.backbone, [Path(p) for p in st.ok_images], 8):
        labels.update(zip(idx, clip.logits(x).argmax(-1).tolist(), strict=True))
    top = top_activations(identity_sae(32, torch.zeros(32)), st, 1, "patch", 4)
    for entry in doc["features"]:
        counts = Counter(WORDS[labels[r]] for _, r, _ in top.examples(entry["feature"]))
        assert counts[entry["name"]] == max(counts.values())
        assert entry["score"] == pytest.approx(counts[entry["name"]] / sum(counts.values()))
