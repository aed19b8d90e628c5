"""Held-out modern generators (eighth import, issue 11): galleries of generators no training here
has seen, imported as `split=heldout` only, so they measure generalisation and never change
`train.csv` (a training's pool and view bank stay as they were). What each holds, its licence
and what was left out: train/sources/DATACARD.md ("Eighth import: held-out generators").

Why: the held-out AI set had 54 images (1 to 7 per generator) and none from Midjourney,
Seedream, Ideogram or GPT-Image-2, the generators a moderation queue sees today.
"""
from __future__ import annotations

import functools
import json
import re

from train.sources.git_import import Ctx, GitRule, GitSource

# Ideogram 4.0 gallery: one folder per case (the logo and leaderboard sit above them). Kept:
# portraits, posters and the comparison cases whose every image is Ideogram's. Left out:
# comparison_case1 (ten models, unlabelled), 6-9 (screenshots of a review site), 10-11 (Ideogram
# and GPT Image 2 in unknown order), 15's ComfyUI screenshot, poster 5's chat screenshot and
# poster 9 (a layout sketch).
_IDEOGRAM_LEFT_OUT = (
    *(f"images/comparison_case{n}/*" for n in (1, 6, 7, 8, 9, 10, 11)),
    "images/poster_case9/*", "images/poster_case5/output.jpg",
    "images/comparison_case15/output.jpg")
_IDEOGRAM_RULES = (GitRule("images/*/*", "fake", "ai-gallery", "ideogram/ideogram-4",
                           exclude=_IDEOGRAM_LEFT_OUT),)

# Seedream 5.0 Pro gallery: data/prompts.yaml tags every entry seedream-5.0-pro; image N-1 is
# the entry's Seedream output, and N-2 is Seedream's too except in the comparison entries (2, 6,
# 14, 15, 17, 18, 36, 43, 44: the other model; 15's images carry the model names). Left out: 32
# and 39 (grids), 33 (a storyboard), 34 (an edit of a reference image), 21 and 22 (a character
# sheet and a manga page), 38 (a platform's "AI" label in a corner: a giveaway).
_SEEDREAM_LEFT_OUT = {21, 22, 32, 33, 34, 38, 39}
_SEEDREAM_SECOND = (3, 8, 9, 10, 12, 16, 19, 41, 45, 46, 47)
_SEEDREAM_RULES = (
    *(GitRule(f"images/{n}-1.jpg", "fake", "ai-gallery", "seedream/seedream-5.0-pro")
      for n in range(1, 48) if n not in _SEEDREAM_LEFT_OUT),
    *(GitRule(f"images/{n}-2.jpg", "fake", "ai-gallery", "seedream/seedream-5.0-pro")
      for n in _SEEDREAM_SECOND),
)

# freestylefly's GPT-Image-2 gallery: data/cases.json gives each case's category and prompt.
# Kept: "Photography & Realism" cases made from a prompt alone. Left out: prompts that edit an
# uploaded or reference image (their pixels are partly a photo), and the collages, grids and
# side-by-side pairs (seen on a contact sheet of the kept cases).
_GPT_IMAGE_2_COLLAGES = {24, 28, 219, 311, 349, 425, 467}
_EDIT_WORDING = re.compile(
    r"refer|upload|provided|attached|input image|this (photo|image|picture)|"
    r"the (photo|image|picture) (above|below)|original (photo|image)|"
    r"参考|上传|原图|这张|图中|照片中|提供的|附件|垫图", re.I)


@functools.lru_cache(maxsize=4)
def _realism_cases(ctx: Ctx) -> frozenset[int]:
    cases = json.loads(ctx.text("data/cases.json"))["cases"]
    return frozenset(c["id"] for c in cases
                     if c["category"] == "Photography & Realism"
                     and not _EDIT_WORDING.search(c["prompt"])
                     and c["id"] not in _GPT_IMAGE_2_COLLAGES)


def gpt_image_2_realism_case(path: str, ctx: Ctx) -> str | None:
    """data/images/caseN.jpg -> gpt-image/gpt-image-2 for the kept photographic cases, else None."""
    match = re.fullmatch(r"data/images/case(\d+)\.jpg", path)
    if match is None or int(match.group(1)) not in _realism_cases(ctx):
        return None
    return "gpt-image/gpt-image-2"


HELDOUT_GENERATOR_SOURCES: tuple[GitSource, ...] = (
    GitSource("ideogram4-gallery", "EvoLinkAI/awesome-ideogram-4.0-prompts",
              "7a16c2333975f54278de6685c717bbab21450e13",
              "CC-BY-4.0 (LICENSE; images reposted from X, each case links its post)",
              _IDEOGRAM_RULES, held_out=True,
              notes="Ideogram 4.0 outputs (2026) collected from X: portraits, posters full of "
                    "typography, and side-by-side prompts; JPEG re-encoded by X, 1,152-2,048 px"),
    GitSource("seedream5-gallery", "velokey-ai/awesome-seedream-5.0-pro-prompts",
              "605800c70041465f5d5e9facdf1caaf7b5dc7140",
              "CC-BY-4.0 (README badge; no LICENSE file; images collected from X)",
              _SEEDREAM_RULES, held_out=True,
              notes="Seedream 5.0 Pro outputs collected from X, about half photorealistic people "
                    "and street portraits; JPEG, short side 672-4,096 px"),
    GitSource("gpt-image-2-api-outputs", "AzhuTech/awesome-gpt-image-2-prompts",
              "fbe97c2f3f13e6dbd10c46f9b566524f248647b0", "CC0-1.0 (LICENSE)",
              (GitRule("assets/generated/*.png", "fake", "ai-gallery", "gpt-image/gpt-image-2",
                       exclude=("assets/generated/rpg-ability-icons.png",
                                "assets/generated/sticker-sheet.png",
                                "assets/generated/isometric-workflow.png",
                                "assets/generated/minimal-saas-hero.png")),),
              held_out=True,
              notes="GPT-Image-2 PNGs the author generated through the API (catalog/prompts.json "
                    "names the model; each file carried a C2PA manifest, stripped here); "
                    "1024-1536 px, untouched. Two icon/sticker grids and two UI mock-ups left out"),
    GitSource("gpt-image-2-realism", "freestylefly/awesome-gpt-image-2",
              "3a9c63baa03e6bbe2f28c89a2654cf9845466646",
              "MIT (LICENSE; images reposted from X, data/cases.json links each post)",
              (GitRule("data/images/case*.jpg", "fake", "ai-gallery",
                       generator_from=gpt_image_2_realism_case),),
              held_out=True,
              notes="GPT-Image-2 community outputs, the 'Photography & Realism' cases made from a "
                    "prompt alone (no edits of uploaded photos, no collages or grids); JPEG via X, 800-"
                    "1,122 px short side. Some show real celebrities' faces, generated"),
    GitSource("midjourney-profile-tests", "cheekymohnkey/midjourney-profile-tester",
              "8720bc2b96695e3a67a437f896372a5b3a91420d", "MIT (LICENSE)",
              (GitRule("profile_results_backup/*/*.jpg", "fake", "ai-gallery",
                       "midjourney/midjourney-v7", limit=175),),
              held_out=True,
              notes="Midjourney outputs of 34 test prompts (documentary portrait, street, food, "
                    "wildlife, product, art styles) under ten style profiles, one seed. v7 is "
                    "inferred (the prompts use --quality 4, a v7-only value); the author "
                    "downscaled every image to 1024x573 JPEG q90, so all share one size. 175 of "
                    "the 350 kept (lowest pixel hashes): the same prompts repeat per profile"),
)
