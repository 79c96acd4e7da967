"""The sharded (schema 2) store: indexing against a plain array, files on disk, damage at open."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from softsae_vision.data.sharded import ShardedArray
from softsae_vision.data.store import open_store
from softsae_vision.data.store_format import npy_header
from softsae_vision.errors import SoftSAEError
from tests._fixtures_extract import write_synthetic_store


def _sharded(tmp_path, counts: list[int], t: int = 3, d: int = 2):
    """A ShardedArray over shards of ``counts`` rows and the plain array it should equal."""
    full = np.arange(sum(counts) * t * d, dtype=np.float32).reshape(-1, t, d)
    shards, at = [], 0
    for i, n in enumerate(counts):
        path = tmp_path / f"s{i}.npy"
        np.save(path, full[at : at + n])
        shards.append((path, n))
        at += n
    return ShardedArray(shards, t, d, np.float32), full


COUNTS = st.lists(st.integers(1, 5), min_size=1, max_size=5)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


@SETTINGS
@given(counts=COUNTS, data=st.data())
def test_row_slices_match_numpy(tmp_path_factory, counts, data):
    array, full = _sharded(tmp_path_factory.mktemp("s"), counts)
    n = len(full)
    start = data.draw(st.none() | st.integers(-n - 2, n + 2))
    stop = data.draw(st.none() | st.integers(-n - 2, n + 2))
    step = data.draw(st.none() | st.sampled_from([1, 2, 3, -1, -2]))
    key = slice(start, stop, step)
    np.testing.assert_array_equal(array[key], full[key])
    np.testing.assert_array_equal(array[key, 1:], full[key, 1:])


@SETTINGS
@given(counts=COUNTS, data=st.data())
def test_integer_and_mask_indexing_match_numpy(tmp_path_factory, counts, data):
    array, full = _sharded(tmp_path_factory.mktemp("s"), counts)
    n = len(full)
    rows = np.array(data.draw(st.lists(st.integers(-n, n - 1), max_size=12)), dtype=np.int64)
    np.testing.assert_array_equal(array[rows], full[rows])
    np.testing.assert_array_equal(array[rows.tolist()], full[rows.tolist()])
    positions = np.array(
        data.draw(st.lists(st.integers(0, 2), min_size=len(rows), max_size=len(rows))),
        dtype=np.int64,
    )
    np.testing.assert_array_equal(array[rows, positions], full[rows, positions])  # pairwise
    np.testing.assert_array_equal(array[rows, :, 1], full[rows, :, 1])
    mask = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    np.testing.assert_array_equal(array[mask], full[mask])
    i = data.draw(st.integers(-n, n - 1))
    np.testing.assert_array_equal(array[i], full[i])
    np.testing.assert_array_equal(array[i, 2], full[i, 2])


def test_array_protocol_and_errors(tmp_path):
    array, full = _sharded(tmp_path, [2, 3])
    assert array.shape == (5, 3, 2) and array.dtype == np.float32 and len(array) == 5
    np.testing.assert_array_equal(np.asarray(array), full)
    np.testing.assert_array_equal(array[...], full)
    np.testing.assert_array_equal(array[np.array([[0, 4], [1, 2]])], full[[[0, 4], [1, 2]]])
    with pytest.raises(IndexError):
        array[5]
    with pytest.raises(IndexError):
        array[np.array([0, -6])]
    with pytest.raises(IndexError):
        array[np.array([True, False])]


def test_reads_only_the_shards_it_needs(tmp_path):
    array, full = _sharded(tmp_path, [2, 2, 2, 2])
    np.testing.assert_array_equal(array[np.array([5, 4])], full[[5, 4]])
    assert sorted(array._maps) == [2]  # one shard opened
    np.testing.assert_array_equal(array[1:3], full[1:3])
    assert sorted(array._maps) == [0, 1, 2]


@pytest.fixture
def store(tmp_path):
    return write_synthetic_store(tmp_path / "store", n_images=20, fail_every=6, schema=2)


def test_sharded_store_equals_the_single_file_store(store, tmp_path):
    plain = write_synthetic_store(tmp_path / "plain", n_images=20, fail_every=6, schema=1)
    assert store.schema_version == 2 and plain.schema_version == 1
    assert store.images == plain.images
    for layer in plain.layers:
        np.testing.assert_array_equal(
            np.asarray(store.activations(layer)), plain.activations(layer)
        )
    table = json.loads((store.path / "shards.json").read_text())
    shards = table["layers"]["3"]
    assert [s["rows"] for s in shards] == [9, 8] and len(table["layers"]["embed"]) == 1
    first = np.load(store.path / shards[0]["file"], mmap_mode="r")  # a plain .npy
    np.testing.assert_array_equal(first, plain.activations(3)[:9])
    assert sorted(p.name for p in store.path.iterdir()) == [
        "images.jsonl",
        "layer_3",
        "layer_embed",
        "meta.json",
        "shards.json",
    ]


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda s: (s.path / "layer_3" / "r000_00001.npy").unlink(), "r000_00001.npy is missing"),
        (
            lambda s: (s.path / "layer_3" / "r000_00000.npy").write_bytes(
                (s.path / "layer_3" / "r000_00000.npy").read_bytes()[:-3]
            ),
            "r000_00000.npy is truncated",
        ),
        (lambda s: (s.path / "shards.json").unlink(), "shards.json: the shard list is missing"),
        (
            lambda s: (s.path / "shards.json").write_text(
                json.dumps({"layers": {"3": [{"file": "../x.npy", "rows": 17}], "embed": []}})
            ),
            "bad shard file name",
        ),
        (
            lambda s: (s.path / "shards.json").write_text(
                (s.path / "shards.json").read_text().replace('"rows": 8', '"rows": 7')
            ),
            "r000_00001.npy holds \\(8, 9, 4\\)",
        ),
    ],
)
def test_missing_or_truncated_shards_fail_at_open_with_their_name(store, damage, message):
    damage(store)
    with pytest.raises(SoftSAEError, match=message):
        open_store(store.path)


def test_garbled_shard_values_are_caught(store):
    shard = store.path / "layer_3" / "r000_00001.npy"
    data = bytearray(shard.read_bytes())
    offset = len(npy_header(np.dtype("float16"), (8, 9, 4)))
    data[-2:] = np.array([np.nan], dtype=np.float16).tobytes()
    assert len(data) > offset
    shard.write_bytes(bytes(data))
    with pytest.raises(SoftSAEError, match="row 16 holds NaN"):
        open_store(store.path).activations(3)


def test_analysis_reads_both_schemas_alike(store, tmp_path):
    from softsae_vision.analysis.reading import iter_chunks
    from softsae_vision.analysis.top_activations import top_activations
    from softsae_vision.sae import TopKSAE

    plain = write_synthetic_store(tmp_path / "plain", n_images=20, fail_every=6, schema=1)
    patches = plain.token_indices("patch")
    for rows in (None, np.array([16, 3, 4, 5, 0])):
        a = list(iter_chunks(plain, 3, patches, 4, rows=rows))
        b = list(iter_chunks(store, 3, patches, 4, rows=rows))
        assert len(a) == len(b)
        for (rows_a, acts_a), (rows_b, acts_b) in zip(a, b, strict=True):
            np.testing.assert_array_equal(rows_a, rows_b)
            np.testing.assert_array_equal(acts_a.numpy(), acts_b.numpy())
    sae = TopKSAE(4, 8, k=2, seed=0)
    top_a = top_activations(sae, plain, 3, n_top=3, chunk_images=5)
    top_b = top_activations(sae, store, 3, n_top=3, chunk_images=5)
    np.testing.assert_array_equal(top_a.scores, top_b.scores)
    np.testing.assert_array_equal(top_a.images, top_b.images)
