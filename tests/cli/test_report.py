import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from softsae_vision.cli import main
from tests._fixtures_render import assert_figure, render_fixtures


@pytest.fixture(scope="session")
def fx(tmp_path_factory):
    return render_fixtures(tmp_path_factory)


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.links += [v for k, v in attrs if k in ("href", "src") and v]


@pytest.mark.slow
def test_report_is_offline_and_complete(fx, tmp_path, capsys):
    out = tmp_path / "report"
    banner = "features from random weights are not semantic"
    args = ["report", str(fx.soft_all_run), str(fx.store), "--out", str(out), "--no-progress"]
    args += ["--banner", banner, "--n-features", "1", "--top", "2", "--n-boot", "20"]
    args += ["--kmap-images", "1", "--pdf"]
    assert main(args) == 0
    page = out / "index.html"
    assert str(page) in capsys.readouterr().out
    text = page.read_text()
    assert banner in text and "<script" not in text
    parser = Links()
    parser.feed(text)
    assert "img" in parser.tags
    for link in parser.links:
        if link.startswith("#"):  # table of contents
            assert f'id="{link[1:]}"' in text
            continue
        assert not re.match(r"^[a-z]+:|^/", link), f"not a relative link: {link}"
        assert (out / link).is_file(), f"the report links to a missing file: {link}"
    for section in ("Training", "Evaluation", "Features", "k maps", "k and image complexity"):
        assert f"<h2>{section}" in text
    assert "Not available" not in text  # every section applies to a SoftSAE on patches + CLS
    for png in Path(out).rglob("*.png"):
        assert_figure(png, min_width=150, min_height=100)
    assert "fvu" in text and "Spearman" in text
    pngs, pdfs = list(out.rglob("*.png")), list(out.rglob("*.pdf"))
    assert pngs and {p.with_suffix("") for p in pdfs} == {p.with_suffix("") for p in pngs}
    assert text.count(">PDF</a>") == len(pdfs)  # --pdf: each caption links its PDF


def test_report_notes_sections_that_do_not_apply(fx, tmp_path):
    from softsae_vision.viz.report import build_report

    page = build_report(
        fx.soft_run, fx.cls_store, tmp_path, n_features=1, n_top=1, n_boot=10, kmap_images=0
    )
    text = page.read_text()
    assert text.count("Not available") >= 2  # features, k maps, complexity need patches
    assert "needs patch tokens" in text
    assert (tmp_path / "training" / "curves.png").is_file()
    assert not list(tmp_path.rglob("*.pdf")) and ">PDF</a>" not in text  # PNGs unless asked


def test_report_compares_runs_side_by_side(fx, tmp_path, capsys):
    out = tmp_path / "both"
    args = ["report", str(fx.soft_run), str(fx.topk_run), str(fx.store), "--out", str(out)]
    args += ["--no-progress", "--n-features", "1", "--top", "2", "--n-boot", "10"]
    args += ["--kmap-images", "1"]
    assert main(args) == 0
    text = (out / "index.html").read_text()
    names = [fx.soft_run.name, fx.topk_run.name]
    # one sub-folder of figures per run; the comparison figure once
    assert (out / names[0] / "kmaps" / "lowest.png").is_file()
    assert (out / names[0] / "features" / "features.json").is_file()
    assert not (out / names[1] / "kmaps").exists()  # TopK: constant k, nothing drawn
    assert (out / "compare" / "pareto.png").is_file()
    assert "Not applicable" in text and "on every patch" in text
    assert text.count("Not applicable") == 2  # k maps and complexity of the TopK only
    # a table of contents whose anchors exist
    parser = Links()
    parser.feed(text)
    anchors = [link[1:] for link in parser.links if link.startswith("#")]
    assert len(anchors) == 6 and all(f'id="{a}"' in text for a in anchors)
    for link in parser.links:
        if not link.startswith("#"):
            assert (out / link).is_file(), link
    # metrics defined where first shown, once; both runs as columns of one table
    assert text.count("fraction of variance unexplained") == 1
    assert f"{names[0]}: patch tokens" in text and f"{names[1]}: patch tokens" in text
    assert str(fx.store.resolve()) in text  # paths absolute, not relative to the cwd


def test_report_shows_feature_names(fx, tmp_path):
    import json
    import shutil

    from softsae_vision.viz.report import build_report

    run = tmp_path / "named"
    shutil.copytree(fx.soft_run, run)
    names = {"features": [{"feature": f, "name": f"word{f}", "score": 0.5} for f in range(32)]}
    (run / "features.json").write_text(json.dumps(names))
    page = build_report(run, fx.store, tmp_path / "r", n_features=2, n_top=1, n_boot=10)
    text = page.read_text()
    assert "“word" in text and "softsae name" in text
    assert text.count("<table>") >= 2 and "(in memory)" not in text
