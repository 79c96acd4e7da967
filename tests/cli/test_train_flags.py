"""`softsae train` / `sweep` flags come from the config dataclasses: names, defaults, types."""

import dataclasses

import pytest

from softsae_vision import SoftSAEError
from softsae_vision.cli import build_parser
from softsae_vision.cli.train import build_config, build_sae
from softsae_vision.sae import ARCH_CONFIGS, MatryoshkaSAE, SoftSAE, TopKSAE
from softsae_vision.training import TrainConfig


def _parse(*flags, command="train"):
    return build_parser().parse_args([command, "d.npy", "--out", "r", *flags])


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_every_config_field_is_a_flag(command):
    options = {
        opt for a in build_parser()._subparsers._group_actions[0].choices[command]._actions
        for opt in a.option_strings
    }  # fmt: skip
    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    fields += [f.name for c in ARCH_CONFIGS.values() for f in dataclasses.fields(c)]
    missing = [n for n in fields if "--" + n.replace("_", "-") not in options]
    assert not missing


def test_no_flags_give_the_dataclass_defaults():
    assert build_config(_parse()) == TrainConfig()
    sae = build_sae(_parse("--arch", "softsae", "--n-latents", "64", "--k", "4"), 16)
    assert isinstance(sae, SoftSAE) and sae.config == SoftSAE(16, 64, k=4).config


def test_flags_reach_the_config_and_the_model():
    args = _parse(
        "--no-calibrate-k", "--adam-betas", "0.8,0.99", "--k-anneal-from", "d",
        "--warmup-frac", "0.1", "--alpha-start", "1.0", "--precision", "fp32",
    )  # fmt: skip
    cfg = build_config(args)
    assert cfg.calibrate_k is False and cfg.adam_betas == (0.8, 0.99)
    assert (cfg.k_anneal_from, cfg.warmup_frac, cfg.alpha_start) == ("d", 0.1, 1.0)
    args = _parse("--k", "4", "--n-latents", "64", "--selection-grad",
                  "--k-loss-coeff", "0.5", "--estimator-lr-scale", "0.25")  # fmt: skip
    soft = build_sae(args, 16)
    assert soft.selection_grad and soft.k_loss_coeff == 0.5 and soft.estimator_lr_scale == 0.25
    args = _parse("--arch", "matryoshka", "--k", "4", "--n-latents", "64",
                  "--group-fractions", "0.25,0.25")  # fmt: skip
    sae = build_sae(args, 16)
    assert isinstance(sae, MatryoshkaSAE) and sae.group_sizes == [16, 16, 32]
    topk = build_sae(_parse("--arch", "topk", "--k", "4", "--n-latents", "64"), 16)
    assert isinstance(topk, TopKSAE) and topk.k == 4 and isinstance(topk.k, int)


def test_an_integer_field_refuses_a_fraction():
    with pytest.raises(SoftSAEError, match="--arch topk needs an integer --k, got 2.5"):
        build_sae(_parse("--arch", "topk", "--k", "2.5", "--n-latents", "64"), 16)


@pytest.mark.parametrize(
    "flags",
    [
        ["--estimator", "wide"],
        ["--k-anneal-from", "zero"],
        ["--precision", "fp8"],
        ["--adam-betas", "0.9"],
        ["--group-fractions", "a,b"],
    ],
)
def test_bad_values_are_argument_errors(flags, capsys):
    with pytest.raises(SystemExit) as exit:
        _parse(*flags)
    assert exit.value.code == 2 and flags[0] in capsys.readouterr().err


def test_sweep_keeps_its_list_flags():
    args = _parse("--arch", "topk,relu", "--k", "4,8", command="sweep")
    assert args.arch == ["topk", "relu"] and args.k == [4.0, 8.0]
