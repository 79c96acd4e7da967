"""The bundled images and assets/LICENSES.md must agree, so nothing ships without a licence."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

ASSETS = Path(__file__).resolve().parents[1] / "assets"
IMAGES = ASSETS / "images"
LICENSES = ASSETS / "LICENSES.md"

COLUMNS = ["File", "Shows", "Complexity", "Source", "Author", "Licence", "Modification"]
ALLOWED_LICENCES = {"Public domain", "CC0-1.0", "CC-BY-4.0"}
COMPLEXITY = {"simple", "medium", "complex"}
MAX_TOTAL_BYTES = 10 * 1024 * 1024
MAX_SIDE = 512


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def parse_licence_table(text: str) -> list[dict[str, str]]:
    """Return the rows of the first Markdown table whose header is COLUMNS, as dicts."""
    lines = text.splitlines()
    header = next(
        (
            i
            for i, line in enumerate(lines)
            if line.lstrip().startswith("|") and _cells(line) == COLUMNS
        ),
        None,
    )
    if header is None:
        raise AssertionError(f"{LICENSES} has no table with header {COLUMNS}")
    rows = []
    for line in lines[header + 2 :]:  # skip the |---| separator
        if not line.lstrip().startswith("|"):
            break
        cells = _cells(line)
        assert len(cells) == len(COLUMNS), f"row has {len(cells)} cells: {line}"
        rows.append(dict(zip(COLUMNS, cells, strict=True)))
    return rows


@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    return parse_licence_table(LICENSES.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def listed(rows: list[dict[str, str]]) -> list[str]:
    return [r["File"].strip("`") for r in rows]


def test_parser_reads_a_table_and_rejects_a_missing_header():
    text = (
        "intro\n\n| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS) + "\n"
        "| `a.jpg` | sky | simple | pkg 1.0, `x.png` | Jane | CC0-1.0 | none |\n\nafter\n"
    )
    (row,) = parse_licence_table(text)
    assert row["File"] == "`a.jpg`" and row["Licence"] == "CC0-1.0"
    with pytest.raises(AssertionError, match="no table"):
        parse_licence_table("| File | Shows |\n|---|---|\n")


def test_every_listed_file_exists_once(listed: list[str]):
    assert 20 <= len(listed) <= 60
    assert len(set(listed)) == len(listed), "a file is listed twice"
    missing = [name for name in listed if not (IMAGES / name).is_file()]
    assert not missing, f"listed in LICENSES.md but not in assets/images: {missing}"


def test_every_file_in_images_is_listed(listed: list[str]):
    on_disk = {p.name for p in IMAGES.iterdir()}
    unlisted = sorted(on_disk - set(listed))
    assert not unlisted, f"in assets/images but not in LICENSES.md: {unlisted}"


def test_rows_have_licence_author_source_and_complexity(rows: list[dict[str, str]]):
    for r in rows:
        name = r["File"]
        assert r["Licence"] in ALLOWED_LICENCES, f"{name}: licence {r['Licence']!r}"
        assert r["Complexity"] in COMPLEXITY, f"{name}: complexity {r['Complexity']!r}"
        for col in ("Shows", "Source", "Author", "Modification"):
            assert r[col], f"{name}: empty {col}"
    counts = {c: sum(r["Complexity"] == c for r in rows) for c in COMPLEXITY}
    assert min(counts.values()) >= 5, f"complexity classes too unbalanced: {counts}"


def test_images_open_as_small_rgb_jpegs(listed: list[str]):
    for name in listed:
        with Image.open(IMAGES / name) as im:
            assert im.format == "JPEG", name
            assert im.mode == "RGB", name
            assert max(im.size) <= MAX_SIDE, f"{name}: {im.size}"
            assert min(im.size) >= 128, f"{name}: {im.size} is too small to be useful"
            im.load()


def test_total_size_under_limit():
    total = sum(p.stat().st_size for p in IMAGES.iterdir() if p.is_file())
    assert total < MAX_TOTAL_BYTES, f"assets/images is {total / 1e6:.1f} MB"
