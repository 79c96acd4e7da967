"""The store format: writer, finishing, reader, and its errors."""

from __future__ import annotations

import json
import stat

import numpy as np
import pytest

from softsae_vision.data.store import (
    INDEX_FILE,
    META_FILE,
    PROGRESS_FILE,
    ImageRecord,
    open_store,
    read_meta,
)
from softsae_vision.data.store_writer import StoreWriter
from softsae_vision.errors import SoftSAEError
from tests._fixtures_extract import write_synthetic_store


@pytest.fixture
def store(tmp_path):
    return write_synthetic_store(tmp_path / "store", n_images=20, fail_every=6)


def test_reader_exposes_layout_and_records(store):
    assert store.layers == [3, "embed"]
    assert store.grid == (2, 3)
    assert store.token_types == ["cls", "register", "register"] + ["patch"] * 6
    assert store.n_images == 17 and len(store.images) == 20
    skipped = [r for r in store.images if not r.ok]
    assert [r.path for r in skipped] == [f"/fake/img_{i:04d}.png" for i in (5, 11, 17)]
    assert all(r.status == "unreadable: synthetic failure" and r.row is None for r in skipped)
    ok = [r for r in store.images if r.ok]
    assert [r.row for r in ok] == list(range(17))
    assert store.ok_images == [r.path for r in ok]
    assert store.meta["images"] | {"fingerprint": None} == {
        "source": "/fake",
        "index": INDEX_FILE,
        "n_total": 20,
        "fingerprint": None,
        "n_ok": 17,
        "n_skipped": 3,
    }


def test_activations_are_plain_npy_memory_maps(store):
    acts = store.activations(3)
    assert acts.shape == (17, 9, 4) and acts.dtype == np.float16
    assert isinstance(acts, np.memmap)
    np.testing.assert_array_equal(acts[:, :, 0], np.repeat(np.arange(17)[:, None], 9, axis=1))
    np.testing.assert_array_equal(acts[:, :, 1], np.repeat(np.arange(9)[None, :], 17, axis=0))
    direct = np.load(store.path / "layer_3.npy", mmap_mode="r")  # readable without us
    np.testing.assert_array_equal(direct, acts)
    assert store.activations("embed").shape == (17, 1, 4)
    with pytest.raises(ValueError):
        acts[0, 0, 0] = 1  # read-only


def test_finished_store_has_no_leftovers(store):
    names = sorted(p.name for p in store.path.iterdir())
    assert names == sorted([META_FILE, INDEX_FILE, "layer_3.npy", "layer_embed.npy"])
    assert stat.S_IMODE((store.path / META_FILE).stat().st_mode) == 0o644
    meta = json.loads((store.path / META_FILE).read_text())
    assert meta["complete"] is True and meta["schema_version"] == 1
    for name in ("layer_3.npy", "layer_embed.npy"):
        with open(store.path / name, "rb") as f:
            major, _ = np.lib.format.read_magic(f)
            np.lib.format.read_array_header_1_0(f)
            assert major == 1 and f.tell() % 64 == 0  # aligned data after the rewritten header


@pytest.mark.parametrize(
    "spec, expected", [(3, 3), ("3", 3), (-1, 3), ("-1", 3), (" Embed", "embed")]
)
def test_layer_resolution(store, spec, expected):
    assert store.resolve_layer(spec) == expected


@pytest.mark.parametrize(
    "spec, message", [(None, "several layers"), (2, "not in"), ("mlp", "unknown layer")]
)
def test_layer_resolution_errors_list_the_layers(store, spec, message):
    with pytest.raises(SoftSAEError, match=f"{message}.*3, embed"):
        store.resolve_layer(spec)


def test_single_layer_store_needs_no_layer(tmp_path):
    store = write_synthetic_store(tmp_path / "s", n_images=3, layers=(1,))
    assert store.resolve_layer(None) == 1 and store.activations().shape == (3, 9, 4)


def test_token_indices(store):
    assert store.token_indices("register").tolist() == [1, 2]
    assert store.token_indices("patch").tolist() == list(range(3, 9))
    assert store.layer_token_types("embed") == ["embed"]
    assert store.token_indices("embed", "embed").tolist() == [0]


def test_open_errors(tmp_path, store):
    with pytest.raises(SoftSAEError, match="no such activation store"):
        open_store(tmp_path / "nope")
    (tmp_path / "plain").mkdir()
    with pytest.raises(SoftSAEError, match="not an activation store"):
        open_store(tmp_path / "plain")
    meta = json.loads((store.path / META_FILE).read_text())
    meta["schema_version"] = 99
    (store.path / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(SoftSAEError, match="schema_version 99"):
        read_meta(store.path)


def _partial_store(tmp_path):
    """A writer that committed 2 of 5 images, then wrote one more without committing."""
    finished = write_synthetic_store(tmp_path / "ref", n_images=5, layers=(0,))
    meta = dict(finished.meta, complete=False)
    writer = StoreWriter.create(tmp_path / "partial", meta)
    acts = np.asarray(finished.activations(0))
    writer.write(
        [ImageRecord(f"/fake/img_{i:04d}.png", "ok", i, 8, 8) for i in range(2)], {0: acts[:2]}
    )
    writer.commit()
    writer.write([ImageRecord("/fake/img_0002.png", "ok", 2, 8, 8)], {0: acts[2:3] + 1})
    writer.close()  # "crash": the third image was never committed
    return finished, meta, acts


def test_unfinished_store_says_how_to_finish(tmp_path):
    _partial_store(tmp_path)
    with pytest.raises(SoftSAEError, match="unfinished store \\(2 of 5 images.*re-run"):
        open_store(tmp_path / "partial")


def test_resume_continues_from_the_last_commit(tmp_path):
    finished, meta, acts = _partial_store(tmp_path)
    writer = StoreWriter.resume(tmp_path / "partial", meta)
    assert (writer.images_done, writer.n_ok) == (2, 2)
    records = [ImageRecord(f"/fake/img_{i:04d}.png", "ok", i, 8, 8) for i in range(2, 5)]
    writer.write(records, {0: acts[2:]})
    resumed = writer.finalize()
    np.testing.assert_array_equal(resumed.activations(0), finished.activations(0))
    assert resumed.images == finished.images
    assert not (resumed.path / PROGRESS_FILE).exists()


def test_writer_rejects_mismatched_rows(tmp_path):
    finished = write_synthetic_store(tmp_path / "ref", n_images=2, layers=(0,))
    writer = StoreWriter.create(tmp_path / "w", dict(finished.meta, complete=False))
    with pytest.raises(ValueError, match="want 1 rows"):
        writer.write(
            [ImageRecord("/fake/img_0000.png", "ok", 0, 8, 8)],
            {0: np.zeros((2, 9, 4), dtype=np.float16)},
        )
    writer.close()
