"""``softsae features``: a figure per selected feature plus an index figure, from one scan."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from softsae_vision.analysis.pairing import Pairing
from softsae_vision.analysis.reading import patch_positions
from softsae_vision.analysis.top_activations import TopActivations, feature_maps, top_activations
from softsae_vision.analysis.views import ImageViews
from softsae_vision.errors import SoftSAEError
from softsae_vision.viz.feature_figures import (
    FeatureExample,
    FeatureSummary,
    render_feature,
    render_feature_index,
)
from softsae_vision.viz.outputs import save_named, summary_header, write_summary
from softsae_vision.viz.style import FIGURE_FORMATS
from softsae_vision.vocab import ALL, CLS, EMBED, PATCH, REGISTER

log = logging.getLogger(__name__)

SELECTIONS = ("top", "random", "rare")
"""top: the strongest peak activations; random: a seeded sample; rare: the lowest non-zero
firing frequencies. Dead features (never firing on the store) are never selected."""

INDEX_FEATURES = 36


@dataclass
class FeaturesResult:
    """What :func:`write_features` produced."""

    out: Path
    features: list[int]
    figures: dict[int, Path]  # feature -> path of its first format (PNG by default)
    index: Path | None
    top: TopActivations
    n_dead: int
    with_maps: bool
    files: list[Path] = field(default_factory=list)


def scan_tokens(pairing: Pairing) -> tuple[str, bool]:
    """Which tokens to scan and whether they form patch maps, from what the SAE saw."""
    trained = pairing.trained_on
    if trained in (CLS, REGISTER, EMBED):
        return trained, False
    if trained == ALL:
        return ALL, pairing.has_tokens(PATCH)
    if trained == PATCH or pairing.has_tokens(PATCH):
        pairing.require_patches(f"{pairing.name} (trained on patch tokens)")
        return PATCH, True
    log.warning("unknown training tokens and no patch tokens in the store: scanning all tokens")
    return (EMBED if pairing.has_tokens(EMBED) else ALL), False


def select_features(
    top: TopActivations, select: str = "top", n: int = 16, seed: int = 0
) -> list[int]:
    """Feature ids chosen by ``select`` (see :data:`SELECTIONS`) among features that fire."""
    if select not in SELECTIONS:
        raise SoftSAEError(f"unknown --select {select!r}; use one of {', '.join(SELECTIONS)}")
    alive = np.flatnonzero(top.frequency > 0)
    if select == "top":
        order = alive[np.argsort(-top.scores[alive, 0], kind="stable")]
    elif select == "rare":
        order = alive[np.argsort(top.frequency[alive], kind="stable")]
    else:
        order = np.random.default_rng(seed).permutation(alive)
    return [int(f) for f in order[:n]]


def check_feature_ids(ids: list[int], n_latents: int) -> list[int]:
    bad = [f for f in ids if not 0 <= f < n_latents]
    if bad:
        raise SoftSAEError(f"feature ids {bad} out of range: the SAE has {n_latents} features")
    return list(dict.fromkeys(ids))


def write_features(
    pairing: Pairing,
    out: str | os.PathLike,
    *,
    features: list[int] | None = None,
    select: str = "top",
    n_features: int = 16,
    n_top: int = 8,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = False,
    formats: Sequence[str] = FIGURE_FORMATS,
) -> FeaturesResult:
    """Scan the store once, then draw each chosen feature's top images and an index figure.

    Writes ``feature_<id>.<fmt>`` and ``index.<fmt>`` for each of ``formats``, ``features.json``
    (per feature: frequency, mean activation and its top images) and ``top_activations.npz``
    into ``out``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokens, with_maps = scan_tokens(pairing)
    sae, store, layer = pairing.sae, pairing.store, pairing.layer
    top = top_activations(sae, store, layer, tokens, n_top, device=device, progress=progress)
    n_dead = int((top.frequency == 0).sum())
    if n_dead == sae.n_latents:
        raise SoftSAEError(f"no feature of {pairing.name} fires on any image of {store.path}")
    if features:
        chosen = check_feature_ids(features, sae.n_latents)
    else:
        chosen = select_features(top, select, n_features, seed)
    index_ids = list(dict.fromkeys(chosen + select_features(top, select, INDEX_FEATURES, seed)))
    index_ids = index_ids[: max(INDEX_FEATURES, len(chosen))]
    examples = _examples(pairing, top, index_ids, with_maps, device)
    unit = {PATCH: "patches", ALL: "tokens"}.get(tokens, "images")
    summaries = {
        f: FeatureSummary(f, float(top.frequency[f]), float(top.mean_activation[f]), unit)
        for f in index_ids
    }
    result = FeaturesResult(out, chosen, {}, None, top, n_dead, with_maps)
    for f in chosen:
        if not examples[f]:
            log.info("feature %d never fires on this store; no figure", f)
            continue
        fig = render_feature(summaries[f], examples[f])
        save_named(result, f"feature_{f:05d}", fig, formats, result.figures, key=f)
    if any(examples[f] for f in index_ids):
        entries = [(summaries[f], examples[f]) for f in index_ids]
        result.index = save_named(result, "index", render_feature_index(entries), formats)
    result.files.append(top.save(out / "top_activations.npz"))
    write_summary(result, "features.json", _summary_json(pairing, top, chosen, tokens, n_dead))
    return result


def _examples(
    pairing: Pairing, top: TopActivations, ids: list[int], with_maps: bool, device: str
) -> dict[int, list[FeatureExample]]:
    """Top images of each feature in ``ids``, with heat maps recomputed for just those images."""
    views = ImageViews(pairing.store)
    maps, row_index = None, {}
    if with_maps:
        rows = sorted({row for f in ids for _, row, _ in top.examples(f)})
        row_index = {row: i for i, row in enumerate(rows)}
        positions = patch_positions(pairing.store, pairing.layer)
        if rows:
            maps = feature_maps(
                pairing.sae, pairing.store, pairing.layer, rows, ids, positions, device
            )  # (R, P, len(ids))
    grid = pairing.store.grid
    out: dict[int, list[FeatureExample]] = {}
    for col, f in enumerate(ids):
        out[f] = [
            FeatureExample(
                views[row],
                score,
                maps[row_index[row], :, col].reshape(grid) if maps is not None else None,
                views.name(row),
            )
            for score, row, _ in top.examples(f)
        ]
    return out


def _summary_json(
    pairing: Pairing, top: TopActivations, chosen: list[int], tokens: str, n_dead: int
) -> dict:
    paths = pairing.store.ok_images
    return {
        **summary_header(pairing, architecture=False),
        "tokens_scanned": tokens,
        "n_images": top.n_images,
        "n_tokens": top.n_tokens,
        "n_latents": pairing.sae.n_latents,
        "n_dead": n_dead,
        "features": [
            {
                "feature": f,
                "frequency": float(top.frequency[f]),
                "mean_activation": float(top.mean_activation[f]),
                "top": [
                    {"score": s, "row": r, "token": t, "image": paths[r]}
                    for s, r, t in top.examples(f)
                ],
            }
            for f in chosen
        ],
    }
