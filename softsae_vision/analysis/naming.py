"""Names for features from a CLIP model's text tower and a vocabulary.

- ``embed``-layer SAEs of CLIP models live in the joint image-text space, so a feature's decoder
  atom can be compared with text embeddings directly: its name is the vocabulary entry whose
  text embedding (centred by the vocabulary's mean, which removes the component every caption
  shares) has the highest cosine with the atom.
- Other layers: a feature's top-activating images (from a store) are classified zero-shot over
  the vocabulary; its name is the most frequent label, scored by that label's share.

Names are written to ``features.json`` in the run directory (format in docs/formats.md).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from softsae_vision.errors import SoftSAEError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
NAMES_FILE = "features.json"
TEXT_METHOD = "text_nearest"
IMAGE_METHOD = "top_image_zero_shot"
N_ALTERNATIVES = 5


def read_vocab(path: str | os.PathLike) -> list[str]:
    """Distinct entries of a text file, one a line (blank lines and ``#`` comments skipped)."""
    path = Path(path)
    if not path.is_file():
        raise SoftSAEError(f"--vocab {path}: no such file (one word or phrase a line)")
    words = [w.strip() for w in path.read_text(encoding="utf-8").splitlines()]
    words = list(dict.fromkeys(w for w in words if w and not w.startswith("#")))
    if len(words) < 2:
        raise SoftSAEError(f"--vocab {path}: needs at least two words, one a line")
    return words


def name_by_text(
    w_dec_FD: torch.Tensor, text_emb_VD: torch.Tensor, words: list[str]
) -> list[dict[str, Any]]:
    """Each atom's nearest vocabulary entries by cosine with the centred text embeddings."""
    text_VD = text_emb_VD.double() - text_emb_VD.double().mean(0)
    text_VD = text_VD / text_VD.norm(dim=1, keepdim=True).clamp_min(1e-12)
    atoms_FD = w_dec_FD.detach().double().cpu()
    atoms_FD = atoms_FD / atoms_FD.norm(dim=1, keepdim=True).clamp_min(1e-12)
    cos_FV = atoms_FD @ text_VD.cpu().T
    top = cos_FV.topk(min(N_ALTERNATIVES, len(words)), dim=1)
    return [
        {
            "feature": f,
            "name": words[int(top.indices[f, 0])],
            "score": float(top.values[f, 0]),
            "alternatives": [
                [words[int(i)], float(v)]
                for v, i in zip(top.values[f, 1:], top.indices[f, 1:], strict=True)
            ],
        }
        for f in range(atoms_FD.shape[0])
    ]


def name_by_images(
    top_images: dict[int, list[int]], image_labels: dict[int, int], words: list[str]
) -> list[dict[str, Any]]:
    """Each feature's most frequent zero-shot label among its top images, scored by share."""
    out = []
    for f, rows in sorted(top_images.items()):
        counts = Counter(image_labels[r] for r in rows if r in image_labels)
        if not counts:
            continue
        ranked = counts.most_common(N_ALTERNATIVES)
        n = sum(counts.values())
        out.append(
            {
                "feature": f,
                "name": words[ranked[0][0]],
                "score": ranked[0][1] / n,
                "alternatives": [[words[i], c / n] for i, c in ranked[1:]],
                "n_images": n,
            }
        )
    return out


def name_features(
    run: str | os.PathLike,
    model: str,
    vocab: str | os.PathLike,
    *,
    store: str | os.PathLike | None = None,
    n_top: int = 8,
    prompt: str = "{}",
    pretrained: bool = True,
    checkpoint: str | os.PathLike | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Name the run's features (see the module docstring); return the ``features.json`` dict."""
    from softsae_vision.analysis.downstream import load_classifier
    from softsae_vision.backbones.registry import parse_backbone_name
    from softsae_vision.sae.base import load_sae
    from softsae_vision.training.evaluation import run_data_description

    if parse_backbone_name(model).library != "open_clip":
        raise SoftSAEError(f"--model {model}: naming needs a CLIP model (open_clip/<arch>:<tag>)")
    run_dir = Path(run)
    run_dir = run_dir.parent if run_dir.suffix == ".safetensors" else run_dir
    words = read_vocab(vocab)
    sae = load_sae(run_dir, device=device)
    data = run_data_description(run_dir)
    clip = load_classifier(model, words, pretrained, checkpoint, device, prompt=prompt)
    is_embed = str(data.get("layer")) == "embed" or (store is None and not data)
    result = {
        "schema_version": SCHEMA_VERSION,
        "kind": "feature_names",
        "run": str(run_dir),
        "model": clip.backbone.name,
        "weights": clip.backbone.weights,
        "vocab": str(vocab),
        "n_words": len(words),
        "prompt": prompt,
    }
    if is_embed:
        text_emb_VD = clip.text_emb_VE  # one row per vocabulary word
        assert text_emb_VD is not None  # an open_clip classifier embeds its class names
        if sae.d_in != text_emb_VD.shape[1]:
            raise SoftSAEError(
                f"the SAE reads d={sae.d_in} but {model}'s embeddings have "
                f"d={text_emb_VD.shape[1]}; pass the CLIP model the SAE was trained on"
            )
        result["method"] = TEXT_METHOD
        result["features"] = name_by_text(sae.W_dec, text_emb_VD, words)
        return result
    if store is None:
        raise SoftSAEError(
            f"{run_dir} was trained on layer {data.get('layer')}, not 'embed': naming it needs "
            "its top-activating images; pass --store STORE"
        )
    from softsae_vision.analysis.downstream import iter_batches
    from softsae_vision.analysis.pairing import pair
    from softsae_vision.analysis.top_activations import top_activations

    pairing = pair(sae, store, layer=data.get("layer"), device=device)
    tokens = str(data.get("tokens") or "patch")
    top = top_activations(sae, pairing.store, pairing.layer, tokens, n_top, device=device)
    top_images = {f: [r for _, r, _ in top.examples(f)] for f in range(sae.n_latents)}
    rows = sorted({r for rs in top_images.values() for r in rs})
    paths = [Path(pairing.store.ok_images[r]) for r in rows]
    labels: dict[int, int] = {}
    for idx, x_BCHW in iter_batches(clip.backbone, paths, 32):
        pred = clip.logits(x_BCHW).argmax(-1).tolist()
        labels.update({rows[i]: p for i, p in zip(idx, pred, strict=True)})
    result["method"] = IMAGE_METHOD
    result["store"] = str(pairing.store.path)
    result["n_top"] = n_top
    result["features"] = name_by_images(top_images, labels, words)
    return result


def read_names(run: str | os.PathLike | None) -> dict[int, str]:
    """Feature id -> name from a run's ``features.json``; empty if the run has none."""
    import json

    if run is None:
        return {}
    path = Path(run) / NAMES_FILE
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text())
        return {int(e["feature"]): str(e["name"]) for e in doc.get("features", [])}
    except (ValueError, KeyError, TypeError):
        log.warning("%s is not a feature-names file; names not shown", path)
        return {}
