"""AI product photography (ninth import, issue 11): the git sources that train.sources.git_sources
adds to its registry. What each holds, its licence, counts and what was left out:
train/sources/DATACARD.md ("Ninth import: AI product photography").

Why: of the 45 gpt-image-1 images no training saw, the two-expert CPU candidate misses 29, and 16
of those are studio product shots (bottles, soap, a handbag, chairs, clothes on models). The
index holds thousands of real photos of products (clothes, grocery cartons) and almost no AI
ones, so "a product on a plain background" leans real. These are the few AI packshots and
product ads committed to GitHub with their generator named (a search of about 35 minutes found
no larger set).
"""
from __future__ import annotations

from train.sources.git_import import GitRule, GitSource

# The ProductAdsStableDiffusion pipeline: SDXL-Lightning renders a product scene
# (visuals/product_photos), then Grounding DINO boxes it, SAM masks it and SD 1.5 inpainting
# repaints around it. Only the first stage's images are one generator's; the inpainted ones
# (visuals/impaint_results: SDXL-Lightning pixels under SD 1.5 pixels) and the box and mask
# drawings are left out.
_PRODUCT_ADS = "visuals/product_photos/*.png"

PRODUCT_SOURCES: tuple[GitSource, ...] = (
    GitSource("nano-banana-pro-packshots", "dslounge/remark-ecomm-hacks-starter",
              "c9e2657c01f4eadcda631b1a49ed6a6da2a559a1", "MIT (README; no LICENSE file)",
              (GitRule("packages/frontend/public/products/CLO-*.jpg", "fake", "ai-product",
                       "gemini-image/nano-banana-pro"),),
              notes="100 e-commerce packshots of an invented outdoor-clothing shop (jackets, "
                    "trousers, hats, socks; flat lay or ghost mannequin on seamless white), "
                    "generated through the Gemini API with gemini-3-pro-image-preview (Nano "
                    "Banana Pro: docs/product-images.md and the generation script's default; the "
                    "script's --fast switch would use gemini-2.5-flash-image, not recorded per "
                    "file). Square JPEG: 41 at 2048 px, 59 at 1024 px"),
    GitSource("sdxl-lightning-product-ads", "vivekmse0205/ProductAdsStableDiffusion",
              "67f83bb443ce0537a8feb655656f20851aec8e3d", "MIT (repository LICENSE)",
              (GitRule(_PRODUCT_ADS, "fake", "ai-product", "sdxl/sdxl-lightning"),),
              notes="39 product ads in styled scenes (bags, luggage, perfume, cans, cups, shoes, "
                    "sunglasses, watches, vases, a couch), SDXL base 1.0 with ByteDance's "
                    "4-step SDXL-Lightning UNet (configs/config.yml), 1024 px PNG, 2024; product "
                    "names on labels are garbled. The inpainted second stage is left out"),
    GitSource("imagen4-product-shots", "BlockchainHB/cursor-command-library",
              # the images were deleted later: the last commit that holds them
              "422f903092a4880a28981b6befcaad68e9ebc4a8", "MIT (README badge; no LICENSE file)",
              (GitRule("Generated_Images/2025-11-07_11-07-57/images/*.jpg", "fake", "ai-product",
                       "imagen/imagen-4"),),
              # held out: a generator no training has seen, on the kind of image the candidate
              # misses; ten images of one product are too few to teach anything
              held_out=True,
              notes="10 shots of one invented coffee maker (one on white, nine in kitchens and "
                    "cafes), google/imagen-4 (generation_summary.md, one prompt file per "
                    "image), 1024 px JPEG, November 2025"),
)
