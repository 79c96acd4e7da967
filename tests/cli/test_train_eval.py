import json

import numpy as np
import pytest

from softsae_vision.cli import main
from softsae_vision.data.synthetic import SyntheticSparseData


@pytest.fixture(scope="module")
def npy(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    gen = SyntheticSparseData(d=32, n_atoms=64, max_active=6)
    np.save(root / "train.npy", gen.generate(2000, seed=1)[0].numpy())
    np.save(root / "test.npy", gen.generate(500, seed=2)[0].numpy())
    return root


def test_train_then_eval_json(npy, tmp_path, capsys):
    run = tmp_path / "run"
    args = [
        "train",
        str(npy / "train.npy"),
        "--out",
        str(run),
        "--arch",
        "softsae",
        "--k",
        "4",
        "--n-latents",
        "128",
        "--steps",
        "40",
        "--batch-size",
        "64",
        "--lr",
        "3e-3",
        "--estimator",
        "lean",
        "--device",
        "cpu",
        "--no-progress",
    ]
    assert main(args) == 0
    assert (run / "sae.safetensors").exists() and (run / "metrics.jsonl").exists()
    config = json.loads((run / "config.json").read_text())
    assert config["hparams"]["estimator"] == "lean" and config["data"]["kind"] == "npy"
    capsys.readouterr()
    assert main(["eval", str(run), str(npy / "test.npy"), "--json", "--device", "cpu"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["n_rows"] == 500 and 0 < metrics["fvu"] < 1
    for key in ("cosine", "l0_mean", "l0_std", "l0_p50", "dead_latents", "k_hat_mean"):
        assert key in metrics
    assert main(["eval", str(run), str(npy / "test.npy"), "--device", "cpu"]) == 0
    assert "fvu" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("make_data", "extra", "message"),
    [
        (lambda p: np.save(p, np.zeros((0, 8), np.float32)), [], "empty"),
        (lambda p: np.save(p, np.zeros(8, np.float32)), [], "2-D"),
        (lambda p: p.write_bytes(b"not an array"), [], "not a readable .npy"),
        (lambda p: np.save(p, np.full((50, 8), np.nan, np.float32)), [], "NaN"),
        (lambda p: np.save(p, np.ones((50, 8), np.float32)), ["--k", "0"], "0 < k"),
        (lambda p: np.save(p, np.ones((50, 8), np.float32)), ["--k", "64"], "0 < k"),
    ],
)
def test_bad_input_is_one_line_error(tmp_path, capsys, make_data, extra, message):
    data = tmp_path / "bad.npy"
    make_data(data)
    code = main(
        [
            "train",
            str(data),
            "--out",
            str(tmp_path / "run"),
            "--n-latents",
            "64",
            "--steps",
            "3",
            "--batch-size",
            "8",
            "--device",
            "cpu",
            "--no-progress",
            *extra,
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "run" / "sae.safetensors").exists()


def test_eval_of_mismatched_width_and_non_run(npy, tmp_path, capsys):
    run = tmp_path / "run"
    main(
        [
            "train",
            str(npy / "train.npy"),
            "--out",
            str(run),
            "--arch",
            "topk",
            "--k",
            "4",
            "--n-latents",
            "64",
            "--steps",
            "5",
            "--batch-size",
            "32",
            "--device",
            "cpu",
            "--no-progress",
        ]
    )
    np.save(tmp_path / "wide.npy", np.ones((10, 33), np.float32))
    assert main(["eval", str(run), str(tmp_path / "wide.npy")]) == 2
    assert "d_in=32" in capsys.readouterr().err
    assert main(["eval", str(tmp_path), str(npy / "test.npy")]) == 2
    assert "not an SAE run" in capsys.readouterr().err
