"""The science report's README table: numbers from the results, written between the markers."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from science_report import (  # noqa: E402
    README_END,
    README_START,
    combine,
    differ_table,
    seed_table,
    synthetic_summary,
    update_readme,
)


def _row(rho, fvu, l0_over_k, spike=1.0):
    return {"spearman_l0": rho, "fvu": fvu, "l0_over_k": l0_over_k, "max_loss_ratio": spike}


RESULTS = {
    "synthetic": {
        "a": {"models": {"ours": _row(0.9, 0.20, 1.02), "topk": _row(0.3, 0.25, 1.0)}},
        "b": {"models": {"ours": _row(0.7, 0.40, 0.96, 2.5), "topk": _row(None, 0.30, 1.0)}},
    },
    "photos": {"wallpapers": {"models": {"ours": {"image_jpeg_bpp": {"r": 0.812}}}}},
}


def test_differ_table_summarises_each_recipe_against_topk():
    table = differ_table(RESULTS, {"ours": "our recipe", "missing": "never ran"}, "wallpapers")
    assert len(table) == 3  # header, rule, one row: a recipe that never ran is left out
    cells = [c.strip() for c in table[2].strip("|").split("|")]
    # recipe, regimes, mean ρ, min ρ, mean FVU, FVU ≤ TopK's, worst L0 vs K, spike, photo ρ
    assert cells == ["our recipe", "2", "0.80", "0.70", "0.300", "1 of 2", "-4.0%", "2.5×", "0.81"]


def test_update_readme_replaces_only_between_the_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{README_START}\nold table\n{README_END}\noutro\n")
    update_readme(readme, ["| new |", "| row |"])
    assert readme.read_text() == f"intro\n{README_START}\n| new |\n| row |\n{README_END}\noutro\n"
    readme.write_text("no markers here\n")
    with pytest.raises(SystemExit, match="no science-suite markers"):
        update_readme(readme, ["| x |"])


def test_combine_counts_the_runs_a_combined_part_came_from(tmp_path):
    import json

    first = {"quick": False, "steps": 10, "torch": "t", "seconds": 60, "parts": 5}
    first["synthetic"] = {"a": {"regime": {}, "models": {"m": _row(0.1, 0.5, 1.0)}}}
    second = {"quick": False, "steps": 10, "torch": "t", "seconds": 30}
    second["synthetic"] = {"a": {"regime": {}, "models": {"m": _row(0.2, 0.4, 1.0)}}}
    paths = []
    for i, part in enumerate((first, second)):
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_text(json.dumps(part))
    merged = combine(paths)
    assert merged["parts"] == 6 and merged["seconds"] == 90
    assert merged["synthetic"]["a"]["models"]["m"]["fvu"] == 0.4  # the later part wins
    assert "from 6 partial runs" in merged["note"]


def test_seed_rows_are_summarised_per_model_not_as_models_of_their_own():
    synthetic = {
        "a": {
            "models": {
                "ours": _row(0.9, 0.20, 1.0),
                "ours (seed 1)": _row(0.8, 0.30, 1.0),
                "ours (seed 2)": _row(0.7, 0.25, 1.0),
                "topk": _row(None, 0.40, 1.0),
            }
        }
    }
    table = seed_table(synthetic)
    assert len(table) == 3  # header, rule, one row: topk has no other seeds
    cells = [c.strip() for c in table[2].strip("|").split("|")]
    assert cells == ["a", "ours", "3", "0.250 [0.200, 0.300]", "0.80 [0.70, 0.90]"]
    summary = "\n".join(synthetic_summary(synthetic))
    assert "seed" not in summary and "| ours | 1 |" in summary
    assert seed_table({"a": {"models": {"ours": _row(0.9, 0.2, 1.0)}}}) == []
