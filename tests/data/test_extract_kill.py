"""A 2-process ``torchrun`` extraction killed with SIGKILL resumes to the one-process store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from softsae_vision.data.store import open_store
from tests._fixtures_extract import write_images

ROOT = Path(__file__).resolve().parents[2]

_SCRIPT = """
import os, sys, time
from pathlib import Path
from softsae_vision.backbones import load_backbone
from softsae_vision.data.distributed import Ranks
from softsae_vision.data.extract import extract

mode, images, out = sys.argv[1:4]
ranks = Ranks.current()
Path(out + ".pids").mkdir(parents=True, exist_ok=True)
(Path(out + ".pids") / str(ranks.rank)).write_text(str(os.getpid()))  # for the test to kill
backbone = load_backbone("timm/test_vit", pretrained=False)
if mode == "slow":  # each batch takes a second, so the kill lands mid-share
    forward = backbone.forward_layers
    def slow(*args, **kwargs):
        time.sleep(1.0)
        return forward(*args, **kwargs)
    backbone.forward_layers = slow
extract(backbone, images, out, layers=[0, -1], batch_size=2, chunk_images=2, workers=0,
        progress=False, shard_bytes=40_000)
"""


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def _command(script: Path, mode: str, images: Path, out: Path, nproc: int) -> list[str]:
    launcher = [sys.executable]
    if nproc > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    return [*launcher, str(script), mode, str(images), str(out)]


def _images_done(out: Path) -> int:
    done = 0
    for part in (out / "parts").glob("rank*.json"):
        try:
            done += json.loads(part.read_text())["images_done"]
        except (json.JSONDecodeError, KeyError, OSError):
            continue
    return done


@pytest.mark.slow
def test_sigkilled_ranks_resume_to_the_one_process_store(tmp_path):
    images = tmp_path / "images"
    write_images(images, 12, sizes=(40, 50))
    script = tmp_path / "run_extract.py"
    script.write_text(_SCRIPT)
    single = subprocess.run(
        _command(script, "full", images, tmp_path / "single", 1),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stdout + single.stderr

    out = tmp_path / "two"
    proc = subprocess.Popen(
        _command(script, "slow", images, out, 2),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 240
    try:
        while _images_done(out) < 2:  # some rank has committed a chunk
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.1)
    finally:  # SIGKILL both ranks mid-share, then torchrun
        for pid_file in sorted((tmp_path / "two.pids").glob("*")):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
        proc.kill()
        proc.communicate()
    assert not (out / "shards.json").exists()  # not finalised: the ranks died mid-share
    assert _images_done(out) < 12

    full = subprocess.run(
        _command(script, "full", images, out, 2),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert full.returncode == 0, full.stdout + full.stderr
    a, b = open_store(tmp_path / "single"), open_store(out)
    assert a.images == b.images and a.n_images == 12
    for layer in a.layers:
        np.testing.assert_array_equal(
            np.asarray(a.activations(layer)), np.asarray(b.activations(layer))
        )
    assert (a.path / "images.jsonl").read_bytes() == (b.path / "images.jsonl").read_bytes()
