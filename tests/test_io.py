import json
import os
import stat
from pathlib import Path

import pytest

from softsae_vision._io import atomic_write, write_json_atomic


def test_atomic_write_gives_shareable_permissions(tmp_path):
    write_json_atomic(tmp_path / "a.json", {"x": 1})
    mode = stat.S_IMODE(os.stat(tmp_path / "a.json").st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask
    assert (tmp_path / "a.json").read_text() == '{\n  "x": 1\n}\n'


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    target = tmp_path / "b.txt"
    target.write_text("old")

    def boom(tmp):
        Path(tmp).write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, boom)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["b.txt"]


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_writer_that_recreates_the_file_still_gets_shareable_permissions(tmp_path):
    def recreate(tmp):  # what safetensors' save_file does
        os.unlink(tmp)
        fd = os.open(tmp, os.O_CREAT | os.O_WRONLY, 0o600)
        os.write(fd, b"data")
        os.close(fd)

    atomic_write(tmp_path / "w.bin", recreate)
    write_json_atomic(tmp_path / "c.json", {})
    assert _mode(tmp_path / "w.bin") == _mode(tmp_path / "c.json")


def test_saved_weights_have_the_same_permissions_as_the_config(tmp_path):
    from softsae_vision.sae import TopKSAE

    TopKSAE(8, 16, k=2).save(tmp_path / "run")
    assert _mode(tmp_path / "run" / "sae.safetensors") == _mode(tmp_path / "run" / "config.json")
    old = os.umask(0o022)
    try:
        TopKSAE(8, 16, k=2).save(tmp_path / "run2")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "run2" / "sae.safetensors") == 0o644


def test_stale_temporaries_are_removed_and_nothing_else(tmp_path):
    from softsae_vision._io import remove_stale_temporaries

    names = [".config.json.k3j2h1.tmp", ".sae.safetensors.abc.tmp", ".lock", "config.json", "x.tmp"]
    for name in names:
        (tmp_path / name).write_text("x")
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == sorted(names[:2])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[2:])


def test_folder_lock_names_the_holder_and_is_released(tmp_path):
    from softsae_vision._io import folder_lock
    from softsae_vision.errors import SoftSAEError

    held = rf"another test job \(pid {os.getpid()} on host"
    with (
        folder_lock(tmp_path / "f", "test job"),
        pytest.raises(SoftSAEError, match=held),
        folder_lock(tmp_path / "f", "test job"),
    ):
        pass
    with folder_lock(tmp_path / "f", "test job"):
        pass


def test_compact_json_keeps_short_lists_on_one_line_and_utf8(tmp_path):
    from softsae_vision._io import write_json_atomic

    obj = {"grid": [14, 14], "name": "café", "layers": [{"layer": 6, "d": 384}]}
    write_json_atomic(tmp_path / "m.json", obj, compact=True)
    text = (tmp_path / "m.json").read_text(encoding="utf-8")
    assert '"grid": [14, 14]' in text and "café" in text and text.endswith("}\n")
    assert json.loads(text) == obj
    write_json_atomic(tmp_path / "i.json", obj)
    assert json.loads((tmp_path / "i.json").read_text()) == obj
    assert '"grid": [\n' in (tmp_path / "i.json").read_text()  # indent=2: one item a line


def test_json_dumps_round_trips_undecodable_file_names():
    from softsae_vision._io import json_dumps

    name = os.fsdecode(b"img_\xff.png")
    assert json.loads(json_dumps({"path": name}))["path"] == name


def test_csv_and_npz_writers(tmp_path):
    import csv

    import numpy as np

    from softsae_vision._io import write_csv_atomic, write_npz_atomic

    path = write_csv_atomic(tmp_path / "t.csv", ["a", "b"], [[1, "x"], [2.5, "y,z"]])
    with open(path, newline="") as f:
        assert list(csv.reader(f)) == [["a", "b"], ["1", "x"], ["2.5", "y,z"]]
    path = write_npz_atomic(tmp_path / "a.npz", {"x": np.arange(3), "q": np.array("k_hat")})
    assert path == tmp_path / "a.npz" and sorted(p.name for p in tmp_path.iterdir()) == [
        "a.npz",
        "t.csv",
    ]
    with np.load(path) as z:
        assert z["x"].tolist() == [0, 1, 2] and str(z["q"]) == "k_hat"


@pytest.mark.parametrize(
    "module", ["softsae_vision.data.store", "softsae_vision.data.store_format"]
)
def test_old_store_json_writer_paths_warn_and_write_the_compact_layout(tmp_path, module):
    import importlib

    with pytest.warns(DeprecationWarning, match="compact=True"):
        writer = importlib.import_module(module).write_json_atomic
    writer(tmp_path / "m.json", {"grid": [2, 3]})
    assert '"grid": [2, 3]' in (tmp_path / "m.json").read_text()
