"""Modules renamed so no function hides its module; the old import paths keep working."""

import importlib
import os
import subprocess
import sys

import pytest

OLD_SPARSE = "softsae_vision.ops._soft_topk_sparse"


@pytest.mark.parametrize(
    ("old", "new", "names"),
    [
        ("softsae_vision.ops.soft_topk", "softsae_vision.ops.lapsum_topk", ["soft_topk"]),
        ("softsae_vision.ops.hard_topk", "softsae_vision.ops.topk_select", ["hard_topk_sparse"]),
        (OLD_SPARSE, "softsae_vision.ops.soft_codes", ["SelectedCodes"]),
        ("softsae_vision.training.evaluate", "softsae_vision.training.evaluation", ["evaluate"]),
        ("softsae_vision.data.sources", "softsae_vision.data.source", ["open_source"]),
    ],
)
def test_old_paths_reexport_the_new_modules(old, new, names):
    old_module, new_module = importlib.import_module(old), importlib.import_module(new)
    for name in names:
        assert getattr(old_module, name) is getattr(new_module, name)


PROBE = """
import softsae_vision.ops as ops, softsae_vision.training as training, softsae_vision as sv
from softsae_vision.ops.soft_topk import soft_topk
from softsae_vision.ops.hard_topk import hard_topk
from softsae_vision.training.evaluate import evaluate
from softsae_vision.training import evaluate as package_evaluate
assert ops.soft_topk is soft_topk and ops.hard_topk is hard_topk, "ops functions replaced"
import torch
from softsae_vision.sae import TopKSAE
sae, x = TopKSAE(8, 32, k=2), torch.randn(20, 8)
for fn in (evaluate, package_evaluate, training.evaluate, sv.evaluate):
    assert fn(sae, [x], device="cpu")["n_rows"] == 20
print("ok")
"""


def test_importing_an_old_path_leaves_the_package_names_callable():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=600, env=env
    )
    assert out.stdout.strip() == "ok", out.stderr
