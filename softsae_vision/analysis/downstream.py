"""How much of the model's behaviour survives when the SAE replaces its activations.

Three forward passes per batch: the unmodified model, the model with the SAE's reconstruction
spliced in (for the token types the SAE was trained on, at its layer), and the model with
those tokens mean-ablated (replaced by the mean activation of the SAE's training data, which
the SAE stores as its normalisation mean). Reported:

- open_clip models: zero-shot accuracy and cross-entropy loss over the prompts
  "a photo of a {class}." and the fraction of loss recovered
  ``(L_ablate - L_sae) / (L_ablate - L_orig)`` (1: as good as the model, 0: no better than
  ablation);
- every model: the KL divergence of the spliced model's class distribution from the original's,
  top-1 agreement with the original, and the fraction of KL recovered
  ``(KL_ablate - KL_sae) / KL_ablate`` (a classifier's counterpart of loss recovered).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch

from softsae_vision.analysis.splice import (
    LabelledImages,
    Replace,
    iter_batches,
    read_images,
    spliced_block,
    token_positions,
)
from softsae_vision.backbones.base import EMBED, Backbone
from softsae_vision.errors import SoftSAEError
from softsae_vision.sae.base import BaseSAE

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
PROMPT = "a photo of a {}."
MODES = ("orig", "sae", "mean_ablation")
TEXT_BATCH = 256


@dataclass
class Classifier:
    """A backbone and a head giving class logits, optionally from a replaced embedding."""

    backbone: Backbone
    kind: str  # "zero-shot" (open_clip) or "classifier" (timm)
    class_names: list[str] | None = None
    # unit-norm text embeddings (zero-shot), one row per class name (V) of width E
    text_emb_VE: torch.Tensor | None = None  # noqa: N815
    logit_scale: float = 1.0

    @property
    def text_emb_CE(self) -> torch.Tensor | None:  # noqa: N802
        """Deprecated name of :attr:`text_emb_VE` (classes are V in the shape key)."""
        return self.text_emb_VE

    @torch.inference_mode()
    def logits(self, x_BCHW: torch.Tensor, replace_embed: Replace | None = None) -> torch.Tensor:
        """Class logits (B, V) in float64; ``replace_embed`` maps the pooled embedding first."""
        model: Any = self.backbone.model  # a timm classifier or a CLIP tower, duck-typed
        x_BCHW = x_BCHW.to(self.backbone.device)
        if self.kind == "zero-shot":
            if self.text_emb_VE is None:
                raise SoftSAEError("a zero-shot Classifier needs text_emb_VE (class embeddings)")
            emb_BE = model(x_BCHW)
            emb_BE = emb_BE[0] if isinstance(emb_BE, tuple) else emb_BE
            if replace_embed is not None:
                emb_BE = replace_embed(emb_BE)
            emb_BE = torch.nn.functional.normalize(emb_BE.float(), dim=-1)
            return (self.logit_scale * emb_BE @ self.text_emb_VE.T).double()
        pre_BE = model.forward_head(model.forward_features(x_BCHW), pre_logits=True)
        if replace_embed is not None:
            pre_BE = replace_embed(pre_BE)
        return model.get_classifier()(pre_BE).double()


def load_classifier(
    name: str,
    class_names: list[str] | None,
    pretrained: bool = True,
    checkpoint: str | os.PathLike | None = None,
    device: str = "cpu",
    prompt: str = PROMPT,
    image_size: int | None = None,
) -> Classifier:
    """A timm classifier, or an open_clip model with zero-shot heads for ``class_names``
    (each embedded as ``prompt.format(name)``)."""
    from softsae_vision.backbones.registry import load_backbone, parse_backbone_name

    parsed = parse_backbone_name(name)
    if parsed.library == "open_clip":
        args = (class_names, pretrained, checkpoint, device, prompt, image_size)
        return _load_clip(parsed.model, parsed.tag, *args)
    backbone = load_backbone(
        name, pretrained=pretrained, checkpoint=checkpoint, device=device, image_size=image_size
    )
    if not getattr(backbone.model, "num_classes", 0):
        raise SoftSAEError(
            f"{name} has no classification head (num_classes 0); use a timm classifier or an "
            "open_clip model"
        )
    return Classifier(backbone, "classifier")


def _load_clip(
    arch: str,
    tag: str | None,
    class_names: list[str] | None,
    pretrained: bool,
    checkpoint: str | os.PathLike[str] | None,
    device: str,
    prompt: str,
    image_size: int | None,
) -> Classifier:
    """An open_clip model whose text tower embeds one prompt per class."""
    import open_clip

    from softsae_vision.backbones.open_clip_backbone import OpenClipBackbone
    from softsae_vision.backbones.weights import (
        build_random,
        checkpoint_id,
        load_checkpoint_or_fail,
        load_pretrained,
    )
    from softsae_vision.devices import resolve_device

    if not class_names:
        raise SoftSAEError(
            "zero-shot classification needs class labels: put the images in one folder per "
            "class, or pass --classes FILE (a CSV of path,label)"
        )
    if arch not in open_clip.list_models():
        raise SoftSAEError(f"open_clip has no architecture named {arch!r}")
    label = f"open_clip/{arch}"
    size: dict[str, Any] = {"force_image_size": image_size} if image_size else {}
    if checkpoint is not None:
        weights = checkpoint_id(checkpoint)
        model = load_checkpoint_or_fail(
            label,
            checkpoint,
            lambda: open_clip.create_model(arch, pretrained=str(checkpoint), **size),
        )
    elif pretrained:
        if tag not in open_clip.list_pretrained_tags_by_model(arch):
            raise SoftSAEError(
                f"name the pretrained weights: open_clip/{arch}:TAG, or pass --no-pretrained"
            )
        weights, label = f"pretrained:{tag}", f"open_clip/{arch}:{tag}"
        model = load_pretrained(
            label,
            lambda: open_clip.create_model(arch, pretrained=tag, require_pretrained=True, **size),
        )
    else:
        weights = "random"
        model = build_random(
            lambda: open_clip.create_model(arch, pretrained=None, load_weights=False, **size)
        )
    dev = resolve_device(device)
    model: Any = model.eval().requires_grad_(False).to(dev)  # a CLIP (text and image towers)
    tokenizer = open_clip.get_tokenizer(arch)
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(class_names), TEXT_BATCH):
            text = tokenizer([prompt.format(c) for c in class_names[start : start + TEXT_BATCH]])
            chunks.append(model.encode_text(text.to(dev)).float())
    text_emb_VE = torch.nn.functional.normalize(torch.cat(chunks), dim=-1)
    scale = float(model.logit_scale.exp()) if hasattr(model, "logit_scale") else 100.0
    backbone = OpenClipBackbone(model.visual, label, weights, dev)
    return Classifier(backbone, "zero-shot", list(class_names), text_emb_VE, scale)


def logit_metrics(
    orig_NV: torch.Tensor, other_NV: torch.Tensor, labels_N: torch.Tensor | None
) -> dict[str, float]:
    """KL(orig ‖ other), top-1 agreement, and accuracy and loss of ``other`` when labelled."""
    logp_orig = torch.log_softmax(orig_NV, -1)
    logp = torch.log_softmax(other_NV, -1)
    out = {
        "kl": float((logp_orig.exp() * (logp_orig - logp)).sum(-1).mean()),
        "top1_agreement": float((orig_NV.argmax(-1) == other_NV.argmax(-1)).double().mean()),
    }
    if labels_N is not None:
        out["accuracy"] = float((other_NV.argmax(-1) == labels_N).double().mean())
        out["loss"] = float(torch.nn.functional.cross_entropy(other_NV, labels_N))
    return out


def recovered(ablate: float, spliced: float, orig: float) -> float:
    """(ablate − spliced) / (ablate − orig): 1 when splicing costs nothing, 0 when no better
    than ablation; NaN when ablation itself costs nothing."""
    gap = ablate - orig
    return (ablate - spliced) / gap if abs(gap) > 1e-12 else float("nan")


def splice_logits(
    sae: BaseSAE,
    clf: Classifier,
    images: LabelledImages,
    layer: int | str,
    tokens: str,
    batch_size: int = 32,
) -> tuple[dict[str, torch.Tensor], list[int]]:
    """Logits of each mode (orig, sae, mean_ablation), each (N, V), and the images read."""
    backbone = clf.backbone
    sae = sae.to(backbone.device).eval()
    mean_D = cast(torch.Tensor, sae.norm_mean).detach()

    def with_sae(x_ND: torch.Tensor) -> torch.Tensor:
        return sae(x_ND.float()).x_hat

    def with_mean(x_ND: torch.Tensor) -> torch.Tensor:
        return mean_D.expand_as(x_ND)

    replacements = {"sae": with_sae, "mean_ablation": with_mean}
    logits: dict[str, list[torch.Tensor]] = {m: [] for m in MODES}
    kept: list[int] = []
    positions = None if layer == EMBED else token_positions(backbone, tokens)
    for idx, x_BCHW in iter_batches(backbone, images.paths, batch_size):
        kept += idx
        logits["orig"].append(clf.logits(x_BCHW).cpu())
        for mode, replace in replacements.items():
            if positions is None:  # the embed layer
                logits[mode].append(clf.logits(x_BCHW, replace).cpu())
            else:
                assert positions is not None  # set for every block layer
                with spliced_block(backbone, int(layer), positions, replace):
                    logits[mode].append(clf.logits(x_BCHW).cpu())
    if not kept:
        raise SoftSAEError("none of the images could be read")
    return {m: torch.cat(v) for m, v in logits.items()}, kept


def run_downstream(
    run: str | os.PathLike,
    model: str,
    images: str | os.PathLike,
    *,
    classes: str | os.PathLike | None = None,
    layer: int | str | None = None,
    tokens: str | None = None,
    pretrained: bool = True,
    checkpoint: str | os.PathLike | None = None,
    batch_size: int = 32,
    device: str = "cpu",
    image_size: int | None = None,
) -> dict[str, Any]:
    """Splice the run's SAE into ``model`` over ``images``; return the metrics of each mode.

    ``image_size`` overrides the model's input size (use the one the store was extracted at).
    """
    from softsae_vision.sae.base import load_sae
    from softsae_vision.training.evaluation import run_data_description

    run_dir = Path(run)
    run_dir = run_dir.parent if run_dir.suffix == ".safetensors" else run_dir
    sae = load_sae(run_dir)
    data = run_data_description(run_dir)
    layer = layer if layer is not None else data.get("layer")
    if layer is None:
        raise SoftSAEError(
            f"{run_dir} does not record the layer it was trained on (trained on an array); "
            "pass --layer and --tokens"
        )
    found = read_images(images, classes)
    clf = load_classifier(
        model, found.class_names, pretrained, checkpoint, device, image_size=image_size
    )
    backbone = clf.backbone
    layer = backbone.resolve_layer(layer)
    tokens = EMBED if layer == EMBED else (tokens or data.get("tokens") or "patch")
    if data.get("backbone") and data["backbone"] != backbone.name:
        log.warning(
            "the SAE was trained on %s activations but is spliced into %s",
            data["backbone"],
            backbone.name,
        )
    width = backbone.layer_width(layer)
    if width != sae.d_in:
        raise SoftSAEError(
            f"the SAE reads d={sae.d_in} but layer {layer} of {backbone.name} has d={width}; "
            "pass the backbone (and --layer) the SAE was trained on"
        )
    logits, kept = splice_logits(sae, clf, found, layer, tokens, batch_size)
    labels = None
    if clf.kind == "zero-shot":
        assert found.labels is not None  # zero-shot needs class names; they come with labels
        labels = torch.tensor([found.labels[i] for i in kept])
    result: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run": str(run_dir),
        "model": backbone.name,
        "weights": backbone.weights,
        "task": clf.kind,
        "layer": layer,
        "tokens": tokens,
        "n_images": len(kept),
        "n_skipped": len(found.paths) - len(kept),
        "n_classes": int(logits["orig"].shape[1]),
    }
    for mode in MODES:
        result[mode] = logit_metrics(logits["orig"], logits[mode], labels)
    result["kl_recovered"] = recovered(
        result["mean_ablation"]["kl"], result["sae"]["kl"], result["orig"]["kl"]
    )
    if labels is not None:
        result["loss_recovered"] = recovered(
            result["mean_ablation"]["loss"], result["sae"]["loss"], result["orig"]["loss"]
        )
        result["prompt"] = PROMPT
        result["class_names"] = found.class_names
    return result


def write_downstream(result: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write the result as JSON (atomically); return the path."""
    from softsae_vision._io import write_json_atomic

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, json.loads(json.dumps(result, allow_nan=True)))
    return path
