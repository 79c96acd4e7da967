"""``torchrun`` extraction on 2 CPU processes (gloo) equals a single-process extraction."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from softsae_vision.data.shard_writer import rank_share
from softsae_vision.data.store import open_store
from tests._fixtures_extract import write_broken_files, write_images

ROOT = Path(__file__).resolve().parents[2]

_SCRIPT = """
import sys
from softsae_vision.backbones import load_backbone
from softsae_vision.data.distributed import Ranks
from softsae_vision.data.extract import extract
from softsae_vision.errors import SoftSAEError

mode, images, out = sys.argv[1:4]
ranks = Ranks.current()
backbone = load_backbone("timm/test_vit", pretrained=False)
layers = [0] if mode == "mismatch" and ranks.rank == 1 else [0, -1]
try:
    extract(backbone, images, out, layers=layers, batch_size=2, chunk_images=2, workers=0,
            progress=False, shard_bytes=40_000, max_chunks=1 if mode == "partial" else None)
except SoftSAEError as err:
    print(f"error: {err}", flush=True)
    sys.exit(2)
"""


def _run(
    script: Path, mode: str, images: Path, out: Path, nproc: int
) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env.pop("WORLD_SIZE", None)
    launcher = [sys.executable]
    if nproc > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    return subprocess.run(
        [*launcher, str(script), mode, str(images), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_shares_are_disjoint_whole_batches_in_order():
    for n, batch, world in [(16, 2, 2), (17, 4, 3), (3, 8, 2), (100, 7, 8)]:
        shares = [rank_share(n, batch, r, world) for r in range(world)]
        assert shares[0][0] == 0 and shares[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(shares[:-1], shares[1:], strict=True))
        assert all(s[0] % batch == 0 for s in shares)


@pytest.mark.slow
def test_two_processes_resume_and_equal_one_process(tmp_path):
    images = tmp_path / "images"
    write_images(images, 9, sizes=(40, 50))
    write_broken_files(images / "zz_broken")
    script = tmp_path / "run_extract.py"
    script.write_text(_SCRIPT)

    single = _run(script, "full", images, tmp_path / "single", 1)
    assert single.returncode == 0, single.stdout + single.stderr

    out = tmp_path / "two"
    partial = _run(script, "partial", images, out, 2)  # each rank stops after one commit
    assert partial.returncode == 0, partial.stdout + partial.stderr
    done = [json.loads((out / "parts" / f"rank{r:03d}.json").read_text()) for r in (0, 1)]
    assert [p["images_done"] for p in done] == [2, 2] and not (out / "shards.json").exists()
    full = _run(script, "full", images, out, 2)  # each rank resumes its own share
    assert full.returncode == 0, full.stdout + full.stderr

    a, b = open_store(tmp_path / "single"), open_store(out)
    assert a.images == b.images and a.n_images == 9 and len(a.images) == 12
    for layer in a.layers:
        np.testing.assert_array_equal(
            np.asarray(a.activations(layer)), np.asarray(b.activations(layer))
        )
    drop = {"created": None, "extraction": None}
    assert {**a.meta, **drop} == {**b.meta, **drop}
    assert b.meta["extraction"]["world_size"] == 2
    assert (a.path / "images.jsonl").read_bytes() == (b.path / "images.jsonl").read_bytes()
    shards = json.loads((out / "shards.json").read_text())["layers"]["0"]
    assert {s["file"].split("/")[1][:4] for s in shards} == {"r000", "r001"}
    assert not (out / "parts").exists()

    mismatch = _run(script, "mismatch", images, tmp_path / "mixed", 2)
    assert mismatch.returncode != 0
    assert "ranks were started with different arguments" in mismatch.stdout
    assert "layers" in mismatch.stdout
