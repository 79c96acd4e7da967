"""The SAE spliced into a backbone's forward pass, and the labelled images it is measured on.

A forward hook on the SAE's block replaces the activations of the token types the SAE was
trained on by a replacement (the SAE's reconstruction, or the mean activation for the
mean-ablation control) and lets the rest of the model run on them. For the ``embed``
pseudo-layer the replacement is applied to the pooled embedding before the head.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from softsae_vision.backbones.base import Backbone
from softsae_vision.errors import SoftSAEError

log = logging.getLogger(__name__)

Replace = Callable[[torch.Tensor], torch.Tensor]
"""Maps (N, d) activations to their (N, d) replacement."""


@dataclass
class LabelledImages:
    """Image paths, with class indices and names when the images are labelled."""

    paths: list[Path]
    labels: list[int] | None = None
    class_names: list[str] | None = None


def read_images(
    images: str | os.PathLike[str], classes: str | os.PathLike[str] | None = None
) -> LabelledImages:
    """Images of ``images``: labelled by ``classes`` (a CSV of path,label), by sub-folder, or not.

    In the CSV, relative paths are relative to ``images``; a first row ``path,label`` is a
    header. Without a CSV, a folder whose images all sit in sub-folders is read as one class
    per sub-folder (underscores in folder names read as spaces); otherwise unlabelled.
    """
    from softsae_vision.data.images import list_images

    root = Path(images)
    if classes is not None:
        return _read_csv(root, Path(classes))
    paths = list_images(root)
    if not root.is_dir():
        return LabelledImages(paths)
    base = root.resolve()
    parts = [p.relative_to(base).parts for p in paths]
    if any(len(path_parts) < 2 for path_parts in parts):
        return LabelledImages(paths)
    folders = [path_parts[0] for path_parts in parts]
    if len(set(folders)) < 2:
        return LabelledImages(paths)
    names = sorted(set(folders))
    index = {name: i for i, name in enumerate(names)}
    return LabelledImages(paths, [index[f] for f in folders], [n.replace("_", " ") for n in names])


def _read_csv(root: Path, table: Path) -> LabelledImages:
    if not table.is_file():
        raise SoftSAEError(f"--classes {table}: no such file (expected a CSV of path,label)")
    with open(table, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.reader(f) if r and not r[0].startswith("#")]
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["path", "label"]:
        rows = rows[1:]
    if not rows or any(len(r) < 2 or not r[1].strip() for r in rows):
        raise SoftSAEError(f"--classes {table}: every line must be path,label (with a label)")
    paths = [(root / r[0].strip()).resolve() for r in rows]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise SoftSAEError(
            f"--classes {table}: {len(missing)} listed image(s) not found, e.g. {missing[0]}; "
            "paths are relative to --images"
        )
    labels = [r[1].strip() for r in rows]
    names = sorted(set(labels))
    index = {name: i for i, name in enumerate(names)}
    return LabelledImages(paths, [index[x] for x in labels], names)


def token_positions(backbone: Backbone, tokens: str) -> torch.Tensor:
    """Token positions of ``tokens`` ("patch", "cls", "register" or "all") in a block output."""
    types = backbone.layout.token_types()
    if tokens == "all":
        return torch.arange(len(types))
    positions = [i for i, t in enumerate(types) if t == tokens]
    if not positions:
        raise SoftSAEError(
            f"{backbone.name} has no {tokens} tokens; the SAE cannot be spliced there"
        )
    return torch.tensor(positions)


@contextlib.contextmanager
def spliced_block(
    backbone: Backbone, layer: int, positions: torch.Tensor, replace: Replace
) -> Iterator[None]:
    """Within the block, the outputs of block ``layer`` at ``positions`` go through ``replace``."""

    def hook(_module, _inputs, output):
        out = output[0] if isinstance(output, tuple) else output
        acts_BTD = backbone._block_output(out)  # a view: (B, T, d) whatever the block's layout
        new_BTD = acts_BTD.clone()
        sel_BTD = new_BTD[:, positions]  # only the token positions spliced
        b, t, d = sel_BTD.shape
        new_BTD[:, positions] = replace(sel_BTD.reshape(b * t, d)).reshape(b, t, d).to(out.dtype)
        new = new_BTD if acts_BTD is out else new_BTD.transpose(0, 1)  # back to (T, B, d)
        return (new, *output[1:]) if isinstance(output, tuple) else new

    handle = backbone.blocks[layer].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def iter_batches(
    backbone: Backbone, paths: Sequence[Path], batch_size: int
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """(indices into ``paths``, preprocessed (B, 3, H, W) batch); unreadable images skipped."""
    from softsae_vision.data.images import load_image

    batch, idx = [], []
    for i, path in enumerate(paths):
        try:
            batch.append(backbone.preprocess(load_image(path)))
        except Exception as err:  # noqa: BLE001 - any decoding failure skips the image
            log.warning("skipping unreadable image %s (%s)", path, err)
            continue
        idx.append(i)
        if len(batch) == batch_size:
            yield idx, torch.stack(batch)
            batch, idx = [], []
    if batch:
        yield idx, torch.stack(batch)
