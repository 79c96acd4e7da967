"""The extraction loop: decode (worker processes), forward (main thread), write (a thread).

Works on one writer's share of the images, from its last commit; commits every chunk of whole
batches, so a re-run continues with the same batch boundaries as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import math
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from softsae_vision.backbones.base import EMBED, Backbone, Layer
from softsae_vision.data.images import ImageBatch, image_loader
from softsae_vision.data.store_format import ImageRecord
from softsae_vision.errors import SoftSAEError

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
"""Forward-pass precision: fp32, or autocast to bfloat16 / float16."""


class Writer(Protocol):
    images_done: int
    n_ok: int

    def write(self, records: Sequence[ImageRecord], acts: dict[Layer, np.ndarray]) -> None: ...
    def commit(self) -> None: ...
    def close(self) -> None: ...


def batch_records(
    batch: ImageBatch, paths: Sequence[Path], first_row: int
) -> tuple[list[ImageRecord], int]:
    """The index records of a batch (rows numbered from ``first_row``) and the next free row."""
    records, row = [], first_row
    for i in batch.indices:
        if i in batch.errors:
            records.append(ImageRecord(str(paths[i]), batch.errors[i]))
        else:
            width, height = batch.sizes[i]
            records.append(ImageRecord(str(paths[i]), "ok", row, width, height))
            row += 1
    return records, row


def autocast(backbone: Backbone, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context of a forward-pass precision (a no-op for fp32)."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=backbone.device.type, dtype=dtype)


def to_storage(
    backbone: Backbone,
    x_BCHW: torch.Tensor,
    layers: Sequence[Layer],
    positions: torch.Tensor,
    dtype: torch.dtype,
    precision: str = "fp32",
) -> dict[Layer, np.ndarray]:
    """Run the backbone; select stored tokens; cast to the storage dtype; (B, T, d) per layer."""
    with autocast(backbone, precision):
        outs = backbone.forward_layers(x_BCHW, layers)
    acts = {}
    for layer, act_BTD in outs.items():
        if layer != EMBED:
            act_BTD = act_BTD.index_select(1, positions.to(act_BTD.device))
        stored = act_BTD.to(dtype)
        if not torch.isfinite(stored).all():
            if torch.isfinite(act_BTD).all():
                raise SoftSAEError(
                    f"layer {layer} of {backbone.name} has activations beyond float16's range; "
                    "re-run with --dtype float32"
                )
            raise SoftSAEError(
                f"layer {layer} of {backbone.name} produced NaN or infinite activations "
                f"(forward precision {precision}); check the weights, or try --precision fp32"
            )
        acts[layer] = stored.cpu().numpy()
    return acts


def run_share(
    backbone: Backbone,
    writer: Writer,
    paths: Sequence[Path],
    meta: dict[str, Any],
    layers: Sequence[Layer],
    batch_size: int,
    workers: int | None,
    progress: bool | str,
    chunk_images: int,
    max_chunks: int | None,
) -> int:
    """Process ``paths[writer.images_done:]`` into ``writer``; return the images processed.

    Stops (committed) after ``max_chunks`` commits if given. ``progress`` may be a label.
    """
    chunk = math.ceil(chunk_images / batch_size) * batch_size
    positions = torch.tensor(meta["token_layout"]["positions"], dtype=torch.long)
    torch_dtype = getattr(torch, meta["dtype"])
    precision = meta["extraction"].get("precision", "fp32")
    gpu_decode = meta["extraction"].get("decode", "cpu") == "gpu"
    start = last_commit = writer.images_done
    next_row, commits, skipped = writer.n_ok, 0, 0
    desc = progress if isinstance(progress, str) else "extract"
    bar = tqdm(total=len(paths), initial=start, unit="img", desc=desc, disable=not progress)
    loader = image_loader(
        paths,
        backbone.preprocess,
        batch_size,
        workers,
        offset=start,
        pin_memory=backbone.device.type == "cuda",
        draft_size=backbone.preprocess.resize_size,
        encoded_jpegs=gpu_decode,
    )
    pending: deque[Future] = deque()
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer") as pool:
            for batch in loader:
                if gpu_decode:
                    from softsae_vision.data.gpu_decode import finish_batch

                    finish_batch(batch, backbone.preprocess, backbone.device)
                records, next_row = batch_records(batch, paths, next_row)
                acts = {}
                if batch.ok:
                    acts = to_storage(
                        backbone, batch.pixels, layers, positions, torch_dtype, precision
                    )
                pending.append(pool.submit(writer.write, records, acts))
                end = batch.indices[-1] + 1
                if end - last_commit >= chunk and end < len(paths):
                    pending.append(pool.submit(writer.commit))
                    last_commit, commits = end, commits + 1
                while len(pending) > 2 or (pending and pending[0].done()):
                    pending.popleft().result()  # re-raises write errors; bounds memory
                skipped += len(batch.errors)
                bar.update(len(batch.indices))
                bar.set_postfix(skipped=skipped, refresh=False)
                if max_chunks is not None and commits >= max_chunks:
                    break
            while pending:
                pending.popleft().result()
    except KeyboardInterrupt:  # every submitted write has finished: keep them
        writer.commit()
        writer.close()
        raise
    except BaseException:
        writer.close()
        raise
    finally:
        bar.close()
    return writer.images_done - start
