"""Rebuild ``assets/images/`` and ``assets/LICENSES.md`` from their licensed sources.

The bundled images are crops and downscales of files from two packages. Both are pinned: every
source file's SHA-256 is listed below and the script stops if one differs (``--skip-checksums``
turns that into a warning, but then the output and LICENSES.md no longer match).

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


@dataclass(frozen=True)
class Package:
    """Where source files come from, as LICENSES.md names it."""

    label: str
    prefix: str  # folder of the images inside the package


SKIMAGE = Package("scikit-image 0.26.0 (PyPI wheel)", "skimage/data")
LOMIRI = Package(
    "Debian package lomiri-wallpapers-16.04 20.04.0-2 (bookworm)", "usr/share/backgrounds"
)
LOMIRI_UPSTREAM = "https://gitlab.com/ubports/development/core/lomiri-wallpapers"


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


def _lomiri(filename: str, sha256: str, author: str, licence: str) -> Source:
    return Source(LOMIRI, filename, sha256, LOMIRI_UPSTREAM, author, licence)


_SK_SAMPLE = "scikit-image sample data"
_ELO = "Aitzol Berasategi"
_FREESPACE = 'Trevor "Freespace"'

SOURCES: dict[str, Source] = {
    "astronaut": Source(
        SKIMAGE,
        "astronaut.png",
        "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
        "NASA Great Images database, https://flic.kr/p/r9qvLn",
        "NASA",
        "Public domain",
    ),
    "brick": Source(
        SKIMAGE,
        "brick.png",
        "7966caf324f6ba843118d98f7a07746d22f6a343430add0233eca5f6eaaa8fcf",
        "CC0Textures Bricks25, https://cc0textures.com/view.php?tex=Bricks25",
        "CC0Textures",
        "CC0-1.0",
        "scikit-image's copy is already a perspective-corrected, rotated, greyscale crop of the "
        "original",
    ),
    "camera": Source(
        SKIMAGE,
        "camera.png",
        "b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a",
        _SK_SAMPLE,
        "Lav Varshney",
        "CC0-1.0",
    ),
    "cell": Source(
        SKIMAGE,
        "cell.png",
        "8d23a7fb81f7cc877cd09f330357fc7f595651306e84e17252f6e0a1b3f61515",
        f"{_SK_SAMPLE} (Müller et al., Optics Express 2018)",
        "Paul Müller et al.",
        "CC0-1.0",
    ),
    "chelsea": Source(
        SKIMAGE,
        "chelsea.png",
        "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
        _SK_SAMPLE,
        "Stefan van der Walt",
        "CC0-1.0",
    ),
    "clock": Source(
        SKIMAGE,
        "clock_motion.png",
        "f029226b28b642e80113d86622e9b215ee067a0966feaf5e60604a1e05733955",
        _SK_SAMPLE,
        "Stefan van der Walt",
        "Public domain",
    ),
    "coffee": Source(
        SKIMAGE,
        "coffee.png",
        "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
        _SK_SAMPLE,
        "Rachel Michetti",
        "CC0-1.0",
    ),
    "grass": Source(
        SKIMAGE,
        "grass.png",
        "b6b6022426b38936c43a4ac09635cd78af074e90f42ffa8227ac8b7452d39f89",
        "DeviantArt, https://www.deviantart.com/linolafett/art/Grass-01-434853879",
        "linolafett",
        "CC0-1.0",
        "scikit-image's copy is already a greyscale 512x512 crop of the original",
    ),
    "gravel": Source(
        SKIMAGE,
        "gravel.png",
        "c48615b451bf1e606fbd72c0aa9f8cc0f068ab7111ef7d93bb9b0f2586440c12",
        "CC0Textures Gravel04, https://cc0textures.com/view.php?tex=Gravel04",
        "CC0Textures",
        "CC0-1.0",
        "scikit-image's copy is already a rescaled, greyscale 512x512 crop of the original",
    ),
    "hubble": Source(
        SKIMAGE,
        "hubble_deep_field.jpg",
        "3a19c5dd8a927a9334bb1229a6d63711b1c0c767fb27e2286e7c84a3e2c2f5f4",
        "HubbleSite, http://hubblesite.org/newscenter/archive/releases/2012/37/image/a/",
        "NASA",
        "Public domain",
    ),
    "retina": Source(
        SKIMAGE,
        "retina.jpg",
        "38a07f36f27f095e818aea7b96d34202c05176d30253c66733f2e00379e9e0e6",
        "Wikimedia Commons, "
        "https://commons.wikimedia.org/wiki/File:Fundus_photograph_of_normal_left_eye.jpg",
        "Mikael Häggström",
        "CC0-1.0",
    ),
    "rocket": Source(
        SKIMAGE,
        "rocket.jpg",
        "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c",
        "SpaceX Photos, https://www.flickr.com/photos/spacexphotos/16511594820/",
        "SpaceX",
        "Public domain",
    ),
    "text": Source(
        SKIMAGE,
        "text.png",
        "bd84aa3a6e3c9887850d45d606c96b2e59433fbef50338570b63c319e668e6d1",
        "Wikipedia, https://en.wikipedia.org/wiki/File:Corner.png",
        "unknown (Wikipedia upload)",
        "Public domain",
    ),
    "fig": _lomiri(
        "Picture_0B_by_freespace.jpg",
        "c8c0ab18e48d9e0419fe42881112137f3afafc27dfddc29ec3a6d54c56d225ad",
        _FREESPACE,
        "CC-BY-4.0",
    ),
    "brushes": _lomiri(
        "Picture_1A_by_freespace.jpg",
        "89e86af38d04daaef975665dc2127e9fa76f0fd68f4eea105a2d0ae3390b010b",
        _FREESPACE,
        "CC-BY-4.0",
    ),
    "wine": _lomiri(
        "Wine_by_Jakkub_Mede.jpg",
        "d2e96e6d4da40dd804b3d0ce295e94de04a2d7d9b6785d42cd9d92ba58bced74",
        "Jakub Mede",
        "CC-BY-4.0",
    ),
    "aitzgorri": _lomiri(
        "aitzgorri_by_Aitzol_Berasategi.jpg",
        "66268e7b48f8854d36a28765fac6e23ec1aee251daa6da1f64715f201020ad36",
        _ELO,
        "CC-BY-4.0",
    ),
    "friends": _lomiri(
        "friends_by_Aitzol_Berasategi.jpg",
        "cc40e313c74e421edffe3403def413c16878ce14661cce7ec5915baeab35538d",
        _ELO,
        "CC-BY-4.0",
    ),
    "life": _lomiri(
        "life_by_Aitzol_Berasategi.jpg",
        "4c119350ead80201fe256850c3d316309ddfb4bdf10b235ce982dcde0c667c05",
        _ELO,
        "CC-BY-4.0",
    ),
    "picos": _lomiri(
        "picosdeeuropa_by_Aitzol_Berasategi.jpg",
        "414d0072b2f6f2c555deafeaef6e45c4fed6fa9ad26eba6560ca8803959cf97a",
        _ELO,
        "CC-BY-4.0",
    ),
    "seeding": _lomiri(
        "seeding_by_Clements_Engelhardt.jpg",
        "a5634d1ab5e41a3568e92d4a894a500c92b891f9ff734e50bd224d6e185a605f",
        "Clemens Engelhardt",
        "CC0-1.0",
    ),
    "sunset": _lomiri(
        "sunset_by_Aitzol_Berasategi.jpg",
        "474dab6a4b9f94dc76c29dfe30e9f5db4af0fd2e33fe5d695f8152b371efca18",
        _ELO,
        "CC-BY-4.0",
    ),
    "umang": _lomiri(
        "umang_by_Abhishek_Mudgal.jpg",
        "bfb425545e77e9f0eb1b037b607fc9ed4a446f3b0f04aa2879be3556073c57ef",
        "Abhishek Mudgal",
        "CC-BY-4.0",
    ),
}

# In LICENSES.md order. Crops were chosen by eye to give plain, medium and busy regions.
ASSETS: list[Asset] = [
    Asset(
        "astronaut.jpg",
        "astronaut",
        None,
        "medium",
        "portrait of astronaut Eileen Collins in an orange suit, flag and shuttle model behind",
    ),
    Asset(
        "brick_wall.jpg",
        "brick",
        None,
        "medium",
        "brick wall, regular repeating pattern (greyscale)",
    ),
    Asset(
        "cameraman.jpg",
        "camera",
        None,
        "medium",
        "man with a tripod camera on a lawn, buildings behind (greyscale)",
    ),
    Asset(
        "cell.jpg",
        "cell",
        None,
        "simple",
        "single round cell on a smooth grey background (phase image, greyscale)",
    ),
    Asset("cat_face.jpg", "chelsea", None, "medium", "close-up of a tabby cat's face"),
    Asset(
        "clock_blurred.jpg",
        "clock",
        None,
        "simple",
        "motion-blurred clock on a plain grey wall (greyscale)",
    ),
    Asset(
        "coffee_cup.jpg",
        "coffee",
        None,
        "medium",
        "espresso cup and spoon on a saucer on a wooden table",
    ),
    Asset(
        "grass_texture.jpg",
        "grass",
        None,
        "complex",
        "dense grass blades filling the frame (greyscale)",
    ),
    Asset(
        "gravel_texture.jpg",
        "gravel",
        None,
        "complex",
        "gravel stones filling the frame (greyscale)",
    ),
    Asset(
        "hubble_deep_field.jpg",
        "hubble",
        None,
        "complex",
        "Hubble eXtreme Deep Field: hundreds of galaxies on black",
    ),
    Asset(
        "retina.jpg",
        "retina",
        None,
        "medium",
        "fundus photograph of a retina: orange disc with vessels on black",
    ),
    Asset(
        "retina_macula.jpg",
        "retina",
        (500, 450, 900, 850),
        "simple",
        "crop: smooth orange macula with a few thin vessels",
    ),
    Asset(
        "retina_optic_disc.jpg",
        "retina",
        (40, 400, 440, 800),
        "medium",
        "crop: bright optic disc where the vessels converge",
    ),
    Asset(
        "rocket_launch_pad.jpg",
        "rocket",
        None,
        "medium",
        "Falcon 9 rocket between lattice towers under a dusk sky",
    ),
    Asset(
        "handwriting.jpg",
        "text",
        None,
        "complex",
        "handwritten symbols and ruled lines on a light surface, photographed at an angle "
        "(greyscale)",
    ),
    Asset(
        "fig_in_bowl.jpg",
        "fig",
        None,
        "medium",
        "halved fig in a red wooden bowl on concrete, hard shadow",
    ),
    Asset(
        "fig_closeup.jpg",
        "fig",
        (1050, 600, 1850, 1350),
        "medium",
        "crop: cut fig showing seeds, red bowl around it",
    ),
    Asset(
        "red_bowl.jpg",
        "fig",
        (1950, 650, 2400, 1100),
        "simple",
        "crop: plain red lacquered bowl surface",
    ),
    Asset("concrete_plain.jpg", "fig", (0, 150, 300, 600), "simple", "crop: plain grey concrete"),
    Asset(
        "concrete_cracked.jpg",
        "fig",
        (0, 1100, 640, 1740),
        "medium",
        "crop: weathered, cracked concrete",
    ),
    Asset(
        "paint_brushes.jpg",
        "brushes",
        None,
        "complex",
        "many paint brushes with coloured bristles, cluttered close-up",
    ),
    Asset(
        "living_room.jpg",
        "wine",
        None,
        "complex",
        "room with drum, beanbag, pallet table, wine bottle, speaker, glass-block wall",
    ),
    Asset(
        "beanbag_fabric.jpg",
        "wine",
        (450, 2920, 1550, 3520),
        "simple",
        "crop: plain beige fabric of a beanbag",
    ),
    Asset(
        "mountain_meadow.jpg",
        "aitzgorri",
        None,
        "medium",
        "meadow, autumn forest and a limestone ridge under overcast sky",
    ),
    Asset("overcast_sky.jpg", "aitzgorri", (0, 0, 600, 300), "simple", "crop: pale overcast sky"),
    Asset(
        "meadow_grass.jpg",
        "aitzgorri",
        (600, 1500, 1700, 2056),
        "medium",
        "crop: green meadow grass with a few fallen leaves",
    ),
    Asset(
        "autumn_forest.jpg",
        "aitzgorri",
        (0, 720, 800, 1230),
        "complex",
        "crop: orange larch forest, many trees and branches",
    ),
    Asset(
        "dogs_at_window.jpg",
        "friends",
        None,
        "medium",
        "two spaniels looking out of a wooden house",
    ),
    Asset(
        "white_siding.jpg",
        "friends",
        (1150, 100, 2050, 1000),
        "simple",
        "crop: white horizontal wooden wall siding",
    ),
    Asset(
        "forest_stream.jpg",
        "life",
        None,
        "complex",
        "woodland stream over rocks, trees and foliage everywhere",
    ),
    Asset(
        "forest_canopy.jpg",
        "life",
        (1700, 0, 2700, 600),
        "complex",
        "crop: dense leaves and branches",
    ),
    Asset(
        "mountain_trail.jpg",
        "picos",
        None,
        "complex",
        "rocky peaks with snow, clouds, a trail through a meadow",
    ),
    Asset("blue_sky.jpg", "picos", (1600, 0, 2400, 420), "simple", "crop: clear blue sky"),
    Asset("cloud.jpg", "picos", (350, 100, 1150, 700), "simple", "crop: white cloud on blue sky"),
    Asset(
        "rock_face.jpg",
        "picos",
        (1500, 500, 2900, 1400),
        "complex",
        "crop: craggy limestone cliff with snow patches",
    ),
    Asset(
        "meadow_path.jpg",
        "picos",
        (300, 1500, 1500, 2448),
        "medium",
        "crop: eroded dirt path across a meadow",
    ),
    Asset(
        "dandelion_meadow.jpg",
        "seeding",
        None,
        "medium",
        "dandelion seed heads in a meadow against low sun, shallow focus",
    ),
    Asset(
        "dandelion_closeup.jpg",
        "seeding",
        (700, 150, 2500, 1750),
        "medium",
        "crop: one dandelion clock, blurred background",
    ),
    Asset(
        "blurred_grass.jpg",
        "seeding",
        (1700, 2000, 3700, 2988),
        "simple",
        "crop: out-of-focus dark grass",
    ),
    Asset(
        "sunset_hills.jpg",
        "sunset",
        None,
        "medium",
        "sun setting over hills, frosty hilltop with a stone table",
    ),
    Asset(
        "evening_sky.jpg",
        "sunset",
        (2800, 0, 4272, 900),
        "simple",
        "crop: smooth blue evening sky",
    ),
    Asset(
        "frosty_hilltop.jpg",
        "sunset",
        (0, 1900, 1500, 2848),
        "complex",
        "crop: grass, stones and snow patches in low light",
    ),
    Asset(
        "colour_gradient.jpg",
        "umang",
        None,
        "simple",
        "digital abstract: smooth colour gradients with one fold (not a photograph)",
    ),
]

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
    write_atomic(licenses, lambda p: p.write_text(text, encoding="utf-8"))
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
