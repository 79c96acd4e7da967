"""Rebuild ``assets/images/`` and ``assets/LICENSES.md`` from their licensed sources.

The bundled images are crops and downscales of files from two packages. Both are pinned: every
source file's SHA-256 is listed in ``build_assets.json`` (next to this script, with each
source's licence and each output's crop and labels) and the script stops if one differs
(``--skip-checksums`` turns that into a warning, but then the output and LICENSES.md no longer
match).

How to get the inputs:

1. scikit-image 0.26.0 (PyPI wheel), which ships its sample images in ``skimage/data/``::

       pip install scikit-image==0.26.0

   The folder is found through importlib; pass ``--skimage-data DIR`` to use another copy.

2. The Debian bookworm package ``lomiri-wallpapers-16.04``, version 20.04.0-2 (.deb SHA-256
   a99ff6a3bfe451e4cc0682ecb3cc82e71740626d59e4845ae34a0a0e45421eab)::

       apt-get download lomiri-wallpapers-16.04=20.04.0-2     # on Debian bookworm
       # or fetch it from any Debian mirror:
       # https://deb.debian.org/debian/pool/main/l/lomiri-wallpapers/lomiri-wallpapers-16.04_20.04.0-2_all.deb
       dpkg -x lomiri-wallpapers-16.04_20.04.0-2_all.deb lomiri

   and pass ``--lomiri-dir lomiri/usr/share/backgrounds``. Without dpkg: ``ar x`` the .deb and
   unpack ``data.tar.xz``. The licence of each file is in the package's
   ``usr/share/doc/lomiri-wallpapers-16.04/copyright``.

Then, from the repository root::

    python scripts/build_assets.py --lomiri-dir lomiri/usr/share/backgrounds

writes the JPEGs to ``--out`` (default ``assets/images``) and the licence table to
``--licenses`` (default ``LICENSES.md`` next to the ``--out`` folder). With Pillow 13.0.0 the
result is byte-identical to the committed files; another Pillow (another libjpeg or resampler)
gives the same file names and sizes with near-identical pixels.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import PIL
from PIL import Image

log = logging.getLogger("build_assets")

REPO = Path(__file__).resolve().parents[1]
MAX_SIDE = 512  # longer side of every output image, in pixels (smaller sources are kept as is)
JPEG_QUALITY = 90
COMPLEXITY = ("simple", "medium", "complex")


class BuildError(Exception):
    """A missing or unexpected input; reported as one line."""


TABLE = Path(__file__).with_name("build_assets.json")
"""The data: packages, pinned source files and output images (one entry each)."""


@dataclass(frozen=True)
class Package:
    """Where source files come from, as LICENSES.md names it."""

    label: str
    prefix: str  # folder of the images inside the package
    upstream: str | None = None  # default ``original`` of its sources


@dataclass(frozen=True)
class Source:
    """One licensed source file."""

    package: Package
    filename: str
    sha256: str
    original: str  # where the package says the image comes from
    author: str
    licence: str
    prior: str | None = None  # what the package's copy already changed from the original


@dataclass(frozen=True)
class Asset:
    """One output image: a source, optionally cropped, with its hand labels."""

    name: str
    source: str  # key into SOURCES
    box: tuple[int, int, int, int] | None  # (left, top, right, bottom) in source pixels
    complexity: str
    shows: str


def load_table(path: Path) -> tuple[dict[str, Package], dict[str, Source], list[Asset]]:
    """(packages, sources, assets) of the JSON table at ``path``; a bad entry is a BuildError."""
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
        packages = {key: Package(**entry) for key, entry in table["packages"].items()}
        sources = {}
        for key, entry in table["sources"].items():
            package = packages[entry.pop("package")]
            entry.setdefault("original", package.upstream)
            sources[key] = Source(package, **entry)
        assets = []
        for entry in table["assets"]:
            box = entry.pop("box", None)
            assets.append(Asset(box=None if box is None else tuple(box), **entry))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise BuildError(f"{path}: not a valid asset table ({type(err).__name__}: {err})") from None
    return packages, sources, assets


PACKAGES, SOURCES, ASSETS = load_table(TABLE)
SKIMAGE, LOMIRI = PACKAGES["skimage"], PACKAGES["lomiri"]
LOMIRI_UPSTREAM = LOMIRI.upstream

COLUMNS = ("File", "Shows", "Complexity", "Source", "Author", "Licence", "Modification")

# The prose repeats MAX_SIDE and JPEG_QUALITY: keep them in step.
LICENSES_HEADER = """\
# Bundled images: sources and licences

`assets/images/` holds a small set of real photographs (plus one digital gradient) used by
`softsae demo` and the tests. They were picked to span visual complexity, from plain sky and
walls to foliage, gravel and clutter, so that a SoftSAE's per-input k has something to show.
Every file is public domain, CC0 1.0 or CC BY 4.0, so the set can be redistributed with this
repository. `tests/test_assets.py` checks that this table and the folder agree.

Licences:

- **Public domain**: no restrictions. Stated as public domain by the package that ships the
  image (NASA and SpaceX photographs, and images their authors released).
- **CC0-1.0**: Creative Commons CC0 1.0 Universal public-domain dedication,
  <https://creativecommons.org/publicdomain/zero/1.0/>.
- **CC-BY-4.0**: Creative Commons Attribution 4.0 International,
  <https://creativecommons.org/licenses/by/4.0/>. Attribution is the *Author* column below; the
  changes we made are in the *Modification* column. The files here are themselves under CC BY
  4.0, by the same authors.

Where each licence statement comes from:

- **scikit-image 0.26.0** (the PyPI wheel; files under `skimage/data/`): the licence and origin
  are in the docstring of each loader in `skimage/data/_fetchers.py` (for example
  `skimage.data.coffee`: "No copyright restrictions. CC0 by the photographer (Rachel
  Michetti)."). scikit-image's code is BSD-3-Clause; that licence does not cover these images.
- **lomiri-wallpapers-16.04 20.04.0-2** (Debian bookworm package; files under
  `/usr/share/backgrounds/`; upstream <{upstream}>):
  the licence and author of each file are in the package's
  `/usr/share/doc/lomiri-wallpapers-16.04/copyright` (machine-readable Debian format).

How the files were made (with Pillow): the source was converted to RGB, cropped to the box
(left, top, right, bottom, in source pixels) given under *Modification* where there is one,
shrunk with Lanczos resampling so the longer side is at most 512 px where it was larger, and
saved as JPEG at quality 90. Crops of one photograph are separate files with the same source.

*Complexity* is a rough hand label (simple / medium / complex) for how much visual structure the
image has. It is not ground truth; the demo compares it with the predicted k.

## Images

"""

LICENSES_FOOTER = """
## Considered and left out

- scikit-image `coins`, `immunohistochemistry`: "no known copyright restrictions", not an
  explicit public-domain or CC0 statement. `moon`, `page`, `stereo_motorcycle`: no licence
  stated in the package. `colorwheel`, `logo`, `horse`, `chessboard`: not photographs.
- Other lomiri-wallpapers files (Bridge, Dragonfly, analogpattern, free, greentock and the 20.04
  set): CC BY-SA, not accepted here.
- Debian `gnome-backgrounds`, `mate-backgrounds`, `plasma-workspace-wallpapers`,
  `ukui-wallpapers`: GPL, LGPL or CC BY-SA artwork.
- matplotlib's `sample_data/grace_hopper.jpg`: the package states no licence for the image.
"""


def default_skimage_data() -> Path | None:
    """Return the installed scikit-image's ``data`` folder, or None if it is not installed."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def sha256_of(path: Path) -> str:
    """Return the hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_sources(dirs: dict[Package, Path], verify: bool) -> None:
    """Fail unless every source file exists (and, if ``verify``, has its pinned SHA-256)."""
    for source in SOURCES.values():
        path = dirs[source.package] / source.filename
        if not path.is_file():
            raise BuildError(
                f"{path} not found; is {dirs[source.package]} the {source.package.label} folder "
                f"{source.package.prefix}? (see the docstring of {Path(__file__).name})"
            )
        actual = sha256_of(path)
        if actual == source.sha256:
            continue
        msg = f"{path} has SHA-256 {actual}, expected {source.sha256} ({source.package.label})"
        if verify:
            raise BuildError(msg + "; pass --skip-checksums to build from it anyway")
        log.warning("%s; building anyway, LICENSES.md may no longer describe the output", msg)


def make_image(path: Path, box: tuple[int, int, int, int] | None) -> tuple[Image.Image, tuple]:
    """Return the processed RGB image and its size before downscaling (after any crop)."""
    with Image.open(path) as src:
        image = src.convert("RGB")
    if box is not None:
        image = image.crop(box)
    cropped_size = image.size
    scale = MAX_SIDE / max(image.size)
    if scale < 1:
        new_size = (round(image.width * scale), round(image.height * scale))
        image = image.resize(new_size, Image.Resampling.LANCZOS)
    return image, cropped_size


def modification(source: Source, box: tuple | None, cropped_size: tuple, size: tuple) -> str:
    """Return the *Modification* cell: every change from the original, in order."""
    parts = [source.prior] if source.prior else []
    if box is not None:
        parts.append(f"cropped to box (left, top, right, bottom) = {box}")
    if size != cropped_size:
        parts.append(f"resized to {size[0]}x{size[1]} (Lanczos)")
    parts.append(f"saved as RGB JPEG, quality {JPEG_QUALITY}")
    return "; ".join(parts)


def table_row(asset: Asset, modified: str) -> str:
    """Return the LICENSES.md table row of one asset."""
    src = SOURCES[asset.source]
    where = f"{src.package.label}, `{src.package.prefix}/{src.filename}` (original: {src.original})"
    cells = (f"`{asset.name}`", asset.shows, asset.complexity, where, src.author, src.licence)
    return "| " + " | ".join((*cells, modified)) + " |"


def licenses_text(rows: list[str]) -> str:
    """Return the whole LICENSES.md for the given table rows."""
    header = LICENSES_HEADER.format(upstream=LOMIRI_UPSTREAM)
    table = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS), *rows]
    return header + "\n".join(table) + "\n" + LICENSES_FOOTER


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then move it into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def build(dirs: dict[Package, Path], out: Path, licenses: Path) -> int:
    """Write every asset into ``out`` and the licence table to ``licenses``; return total bytes."""
    out.mkdir(parents=True, exist_ok=True)
    rows, total = [], 0
    for asset in ASSETS:
        src = SOURCES[asset.source]
        image, cropped_size = make_image(dirs[src.package] / src.filename, asset.box)
        target = out / asset.name
        write_atomic(
            target, lambda p, im=image: im.save(p, "JPEG", quality=JPEG_QUALITY, optimize=True)
        )
        total += target.stat().st_size
        crop = f" crop {asset.box}" if asset.box else ""
        log.info("%s <- %s%s, %dx%d", asset.name, src.filename, crop, *image.size)
        rows.append(table_row(asset, modification(src, asset.box, cropped_size, image.size)))
    text = licenses_text(rows)
    write_atomic(licenses, lambda p: _write_text(p, text))
    stray = sorted({p.name for p in out.iterdir()} - {a.name for a in ASSETS})
    if stray:
        log.warning("%s also holds files this script does not make: %s", out, ", ".join(stray))
    return total


def _self_check() -> None:
    """Catch edits to the tables that would produce a broken LICENSES.md."""
    names = [a.name for a in ASSETS]
    assert len(set(names)) == len(names), "an output name is used twice"
    for asset in ASSETS:
        assert asset.source in SOURCES, f"{asset.name}: unknown source {asset.source!r}"
        assert asset.complexity in COMPLEXITY, f"{asset.name}: bad complexity"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Rebuild assets/images and assets/LICENSES.md from scikit-image's sample "
        "data and the Debian package lomiri-wallpapers-16.04 (see this file's docstring).",
    )
    p.add_argument(
        "--skimage-data",
        type=Path,
        default=None,
        help="scikit-image 0.26.0's skimage/data folder (default: the installed package's)",
    )
    p.add_argument(
        "--lomiri-dir",
        type=Path,
        required=True,
        help="usr/share/backgrounds of the unpacked lomiri-wallpapers-16.04_20.04.0-2_all.deb",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=REPO / "assets" / "images",
        help="folder for the JPEGs (default: assets/images)",
    )
    p.add_argument(
        "--licenses",
        type=Path,
        default=None,
        help="where to write the licence table (default: LICENSES.md next to --out)",
    )
    p.add_argument(
        "--skip-checksums",
        action="store_true",
        help="warn instead of stopping when a source file differs from the pinned version",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log every file written")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s"
    )
    _self_check()
    skimage_data = args.skimage_data or default_skimage_data()
    if skimage_data is None:
        log.error(
            "scikit-image is not installed; pip install scikit-image==0.26.0 or pass "
            "--skimage-data DIR"
        )
        return 2
    out = args.out.resolve()
    licenses = (args.licenses or out.parent / "LICENSES.md").resolve()
    dirs = {SKIMAGE: skimage_data, LOMIRI: args.lomiri_dir}
    log.info("Pillow %s; scikit-image data %s; lomiri %s", PIL.__version__, *dirs.values())
    try:
        check_sources(dirs, verify=not args.skip_checksums)
        total = build(dirs, out, licenses)
    except BuildError as err:
        log.error("%s", err)
        return 2
    print(f"wrote {len(ASSETS)} images ({total / 1024:.0f} KiB) to {out} and {licenses}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
