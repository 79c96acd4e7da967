"""Interrupted extractions resume to the identical store; mismatched re-runs are refused."""

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

from softsae_vision.backbones import load_backbone
from softsae_vision.data.extract import extract
from softsae_vision.data.store import open_store
from softsae_vision.errors import SoftSAEError
from tests._fixtures_extract import write_broken_files, write_images

ARGS = dict(layers=[0, -1], batch_size=2, chunk_images=4, progress=False, workers=0)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    write_images(folder, 13, sizes=(40, 50))
    write_broken_files(folder / "zz_broken")  # failures late in the order, across a commit
    return folder


@pytest.fixture(scope="module")
def vit():
    return load_backbone("timm/test_vit", pretrained=False)


@pytest.fixture(scope="module")
def reference(images, vit, tmp_path_factory):
    return extract(vit, images, tmp_path_factory.mktemp("ref") / "store", **ARGS).store


def assert_same_store(a, b) -> None:
    """Identical content: records, arrays and meta except the creation time."""
    assert a.images == b.images
    for layer in a.layers:
        np.testing.assert_array_equal(a.activations(layer), b.activations(layer))
    assert {**a.meta, "created": None} == {**b.meta, "created": None}
    assert (a.path / "images.jsonl").read_bytes() == (b.path / "images.jsonl").read_bytes()


def test_stopped_run_resumes_without_redoing_work(images, vit, reference, tmp_path):
    out = tmp_path / "store"
    first = extract(vit, images, out, max_chunks=2, **ARGS)
    assert first.store is None and first.images_done == 8 and first.n_total == 16
    with pytest.raises(SoftSAEError, match="unfinished store \\(8 of 16"):
        open_store(out)
    second = extract(vit, images, out, **ARGS)
    assert second.resumed and second.n_processed == 8  # only the remaining images
    assert_same_store(second.store, reference)


def test_complete_store_is_left_alone(images, vit, reference, tmp_path):
    out = tmp_path / "store"
    extract(vit, images, out, **ARGS)
    shard = out / "layer_0" / "r000_00000.npy"
    before = shard.stat().st_mtime_ns
    again = extract(vit, images, out, **ARGS)
    assert again.n_processed == 0 and again.resumed
    assert shard.stat().st_mtime_ns == before
    assert_same_store(again.store, reference)


@pytest.fixture(scope="module")
def partial(images, vit, tmp_path_factory):
    out = tmp_path_factory.mktemp("partial") / "store"
    assert extract(vit, images, out, max_chunks=1, **ARGS).store is None
    return out


@pytest.mark.parametrize(
    "change, key",
    [
        (dict(model="timm/test_vit2"), "model"),
        (dict(image_size=96), "transform"),
        (dict(layers=[0]), "layers"),
        (dict(tokens=["patch"]), "tokens"),
        (dict(dtype="float32"), "dtype"),
        (dict(extra_image=True), "images"),
    ],
)
def test_mismatched_rerun_is_refused(images, vit, reference, partial, tmp_path, change, key):
    args = dict(ARGS, **{k: v for k, v in change.items() if k in ("layers", "tokens", "dtype")})
    backbone = vit
    if "model" in change or "image_size" in change:
        name = change.get("model", "timm/test_vit")
        backbone = load_backbone(name, pretrained=False, image_size=change.get("image_size"))
    source = images
    if change.get("extra_image"):
        source = tmp_path / "more"
        write_images(source, 14, sizes=(40, 50))
    for out in (reference.path, partial):  # finished or not, nothing is mixed in
        before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
        with pytest.raises(SoftSAEError, match=f"made differently \\({key}: .*new --out"):
            extract(backbone, source, out, **args)
        assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_out_must_be_new_or_a_store(images, vit, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "thesis.tex").write_text("precious")
    with pytest.raises(SoftSAEError, match="not an activation store"):
        extract(vit, images, tmp_path / "busy", **ARGS)
    (tmp_path / "file").write_text("x")
    with pytest.raises(SoftSAEError, match="not an activation store"):
        extract(vit, images, tmp_path / "file", **ARGS)
    (tmp_path / "empty").mkdir()
    assert extract(vit, images, tmp_path / "empty", **ARGS).store is not None


_SLOW_CHILD = """
import sys, time
from softsae_vision.backbones import load_backbone
from softsae_vision.data.extract import extract
backbone = load_backbone("timm/test_vit", pretrained=False)
forward = backbone.forward_layers
def slow(x, layers):
    time.sleep(0.3)
    return forward(x, layers)
backbone.forward_layers = slow
extract(backbone, sys.argv[1], sys.argv[2], layers=[0, -1], batch_size=2, chunk_images=4,
        progress=False, workers=0)
"""


@pytest.mark.slow
def test_kill_9_then_rerun_gives_the_same_store(images, vit, reference, tmp_path):
    out = tmp_path / "store"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    child = subprocess.Popen([sys.executable, "-c", _SLOW_CHILD, str(images), str(out)], env=env)
    progress = out / "parts" / "rank000.json"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and child.poll() is None:
            if progress.exists() and json.loads(progress.read_text())["images_done"] >= 4:
                break
            time.sleep(0.05)
        assert child.poll() is None, "the child finished or died before it could be killed"
        time.sleep(0.35)  # mid-way through the next chunk: uncommitted rows on disk
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    done = json.loads(progress.read_text())["images_done"]
    assert 4 <= done < 16
    resumed = extract(vit, images, out, **ARGS)
    assert resumed.n_processed == 16 - done
    assert_same_store(resumed.store, reference)


_KILLED_IN_FIRST_META_WRITE = """
import os, signal, sys
from softsae_vision.backbones import load_backbone
from softsae_vision.data.extract import extract
backbone = load_backbone("timm/test_vit", pretrained=False)
os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)  # the first fsync: meta.json's temp
extract(backbone, sys.argv[1], sys.argv[2], layers=[0, -1], batch_size=2, chunk_images=4,
        progress=False, workers=0)
"""


def test_kill_during_the_first_meta_write_is_recoverable(images, vit, reference, tmp_path):
    out = tmp_path / "store"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    child = subprocess.run(
        [sys.executable, "-c", _KILLED_IN_FIRST_META_WRITE, str(images), str(out)], env=env
    )
    assert child.returncode == -signal.SIGKILL
    left = sorted(p.name for p in out.iterdir())
    assert "meta.json" not in left and any(n.startswith(".meta.json.") for n in left)
    resumed = extract(vit, images, out, **ARGS)
    assert_same_store(resumed.store, reference)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # temporaries removed
