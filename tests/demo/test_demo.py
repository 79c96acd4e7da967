"""The demo end to end on a reduced setting: few images, few steps, random weights."""

import re
import shutil
from pathlib import Path

import pytest

from softsae_vision.cli import main
from softsae_vision.demo.images import ASSETS, DemoSettings, compare, run_image_demo, verdict

SMALL = DemoSettings(
    model="timm/test_vit",
    image_size=None,
    layer=-1,
    k=4,
    n_latents=64,
    steps=20,
    batch_size=64,
    n_features=3,
    n_boot=50,
)


def linked_files(html_path: Path) -> list[str]:
    html = html_path.read_text()
    return re.findall(r'(?:src|href)="([^"#]+)"', html)


@pytest.mark.slow
def test_image_demo_writes_reports_whose_links_all_exist(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for path in sorted(ASSETS.glob("*.jpg"))[:6]:
        shutil.copy(path, images / path.name)
    result = run_image_demo(
        tmp_path / "out", SMALL, images=images, offline=True, device="cpu", progress=False
    )
    assert not result.pretrained
    for report in (result.report, result.baseline_report):
        html = report.read_text()
        assert "RANDOM backbone weights" in html
        links = linked_files(report)
        assert links, "the report should reference its figures"
        for link in links:
            assert not link.startswith(("http:", "https:", "/")), link
            assert (report.parent / link).exists(), link
    comparison = result.summary["comparison"]
    assert comparison["fvu_winner"] in ("softsae", "topk", "tie")
    assert comparison["fvu"]["topk"] == result.summary["topk"]["fvu"]
    assert result.summary["softsae"]["l0_mean"] == pytest.approx(4, rel=0.25)
    assert result.summary["topk"]["l0_mean"] <= 4


def test_synthetic_demo_command(tmp_path, capsys):
    assert (
        main(
            [
                "demo",
                "--synthetic",
                "--out",
                str(tmp_path),
                "--steps",
                "30",
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "softsae" in out and "topk" in out and "Spearman" in out
    assert (tmp_path / "summary.json").exists()


def test_verdict_names_the_winner_and_the_gap():
    summary = {
        "softsae": {"fvu": 0.0235, "l0_mean": 16.0, "dead_frac": 0.22},
        "topk": {"fvu": 0.0225, "l0_mean": 16.0, "dead_frac": 0.41},
    }
    comparison = compare(summary)
    assert comparison["fvu_winner"] == "topk"
    assert comparison["fvu_gap_relative"] == pytest.approx(0.001 / 0.0235)
    text = " ".join(verdict(comparison))
    assert text.startswith("TopK reconstructs better: 4.3% lower FVU")
    assert "dead latents 22% vs 41%" in text
    summary["topk"]["fvu"] = 0.02351
    assert compare(summary)["fvu_winner"] == "tie"
    assert "tie" in verdict(compare(summary))[0]
