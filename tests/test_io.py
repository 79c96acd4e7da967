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
