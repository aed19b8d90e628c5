"""The git-repository sources that train.sources.git_import imports: one `GitSource` per repository,
pinned to a commit, plus the resolvers that name the generator of each file from the repository's
own metadata. What each source holds, its licence, counts and confounds: train/sources/DATACARD.md
("Sources from git repositories").

Generators are named `<family>/<variant>` (e.g. `flux/flux.1-dev`, `gpt-image/gpt-4o`); the
manifest's `group` column is `gen:<generator>`, and leave-one-generator-out folds can group by the
family (the part before the slash).
"""
from __future__ import annotations

import functools
import io
import json
import re

from PIL import Image

from train.sources.git_import import Ctx, GitRule, GitSource
from train.sources.git_sources_heldout import HELDOUT_GENERATOR_SOURCES
from train.sources.git_sources_people import PEOPLE_SOURCES
from train.sources.git_sources_products import PRODUCT_SOURCES

# ----------------------------------------------------------------------------------------------
# Resolvers: (path in the repository, Ctx) -> generator, or None to drop the file.

# Checkpoint file names in ComfyUI workflows -> generator. First match wins; upscalers ignored.
_COMFY_MODELS = (
    (r"flux1-kontext", "flux/flux.1-kontext-dev"), (r"flux1-fill", "flux/flux.1-fill-dev"),
    (r"flux1-canny", "flux/flux.1-canny-dev"), (r"flux1-schnell", "flux/flux.1-schnell"),
    (r"flux1-dev", "flux/flux.1-dev"), (r"flux2", "flux/flux.2-dev"),
    (r"sd_xl_turbo", "sdxl/sdxl-turbo"), (r"cosxl_edit", "sdxl/cosxl-edit"),
    (r"sd_xl_(base_)?1\.0", "sdxl/sdxl-1.0"), (r"sd3\.5_large", "sd3/sd3.5-large"),
    (r"sd3_medium", "sd3/sd3-medium"), (r"stable_cascade", "stable-cascade/stable-cascade"),
    (r"aura_flow_0\.(\d)", "auraflow/auraflow-0.{0}"), (r"chroma", "chroma/chroma"),
    (r"cosmos_predict2", "cosmos/cosmos-predict2-2b"), (r"hidream_i1", "hidream/hidream-i1"),
    (r"hidream_e1", "hidream/hidream-e1"), (r"hunyuan_dit_1\.2", "hunyuan-dit/hunyuan-dit-1.2"),
    (r"lumina_2", "lumina/lumina-image-2"), (r"omnigen2", "omnigen/omnigen2"),
    (r"qwen_image_edit", "qwen-image/qwen-image-edit"), (r"qwen_image", "qwen-image/qwen-image"),
    (r"z_image_turbo", "z-image/z-image-turbo"),
    (r"v1-5|512-inpainting|anything-v3|aom3|abyssorange|cardosanime", "sd15/sd1.5-finetune"),
    (r"v2-1_768|sd21-unclip|wd-illusion", "sd2/sd2.1"),
)
_IGNORED_MODELS = re.compile(r"esrgan|upscale", re.I)


def comfy_workflow_model(path: str, ctx: Ctx) -> str | None:
    """The generator named by the workflow a ComfyUI example PNG embeds (its `prompt` text chunk:
    ckpt_name / unet_name inputs). None when there is no workflow, the workflow names models of
    two families, or the image is a screenshot of the node graph (wider than 2100 px)."""
    try:
        img = Image.open(io.BytesIO(ctx.blob(path)))
        graph = json.loads(img.info.get("prompt") or "{}")
    except (OSError, ValueError):
        return None
    if img.size[0] > 2100:
        return None
    names = {v for node in graph.values() if isinstance(node, dict)
             for k, v in (node.get("inputs") or {}).items()
             if k in ("ckpt_name", "unet_name") and isinstance(v, str)}
    found = set()
    for name in names:
        if _IGNORED_MODELS.search(name):
            continue
        for pattern, generator in _COMFY_MODELS:
            m = re.search(pattern, name, re.I)
            if m:
                found.add(generator.format(*m.groups()))
                break
        else:
            return None  # a model we cannot name
    families = {g.split("/")[0] for g in found}
    if len(families) != 1:
        return None
    return sorted(found)[0] if len(found) == 1 else f"{families.pop()}/mixed"


comfy_workflow_model.version = 2  # type: ignore[attr-defined]  # wd-illusion is SD 2.1-based


def _horde_family(model: str) -> str:
    m = model.lower()
    if "xl" in m or m in ("fustercluck",):
        return "sdxl"
    if m == "stable_diffusion_2.1":
        return "sd2"
    return "sd15"  # the Horde's other community models are Stable Diffusion 1.5 fine-tunes


@functools.lru_cache(maxsize=4)
def _horde_models(ctx: Ctx) -> dict[str, str]:
    styles = json.loads(ctx.text("styles.json") or "{}")
    return {re.sub(r"[^a-z0-9]", "_", k, flags=re.I).lower(): v.get("model", "")
            for k, v in styles.items() if isinstance(v, dict)}


def horde_style_model(path: str, ctx: Ctx) -> str | None:
    """AI Horde style previews are named <style>_<person|place|thing>.webp, the style name with
    every non-alphanumeric character as "_" (preview_generator/index.js); styles.json at the same
    commit names each style's model."""
    m = re.fullmatch(r".*/(.+)_(person|place|thing)\.webp", path)
    if not m:
        return None
    model = _horde_models(ctx).get(m.group(1))
    if not model:
        return None
    slug = re.sub(r"[^a-z0-9.]+", "-", model.lower()).strip("-")
    return f"{_horde_family(model)}/{slug}"


horde_style_model.version = 1  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------------------------
# The sources

_BSDS = "BSDS500/data/images/"
# The Gemini app stamps a sparkle logo into the bottom-right corner (up to ~14 % of the height
# from the bottom edge); reposts add handles and "ai" badges there too. Crop the bottom 16 %.
_GEMINI_MARK = (0, 0, 0.16, 0)
# FLUX-Style-CheatSheet saves each prompt's four seeds as one 2x2 composite (its
# workflows/batch-flux.json: ImageGridComposite2x2, then resized to 1024 px): keep the top-left
# quadrant, one single generation per prompt, never the grid.
_TOP_LEFT_OF_2X2 = (0, 0.5, 0.5, 0)
# EnragedAntelope's SD 3.5 Large galleries (artists, styles) share one layout: ComfyUI's PNGs with
# the workflow embedded, which names the checkpoint per file.
_SD35_GALLERY = (GitRule("gallery-assets/*.png", "fake", "ai-style-preview",
                         generator_from=comfy_workflow_model),)

GIT_SOURCES: tuple[GitSource, ...] = (
    # --- AI images -------------------------------------------------------------------------------
    GitSource("gpt4o-gallery", "jamez-bondos/awesome-gpt4o-images",
              "3ed4dbb0f1ae6f7385c81e1fcea48d9eefd2e596", "CC-BY-4.0 (gallery)",
              (GitRule("cases/*/*", "fake", "ai-gallery", "gpt-image/gpt-4o"),
               GitRule("gpt-image-1/examples/*", "fake", "ai-gallery", "gpt-image/gpt-image-1",
                       exclude=("gpt-image-1/examples/*input*",),
                       licence="OpenAI example images (see gpt-image-1/NOTICE-openai.md)")),
              notes="ChatGPT GPT-4o image generation cases collected from X (2025), one image per "
                    "case; OpenAI's own gpt-image-1 examples (their edit inputs left out)"),
    GitSource("nano-banana-gallery", "PicoTrex/Awesome-Nano-Banana-images",
              "7d344750a40e9061821d4fdf1ef22bdc3a970ead", "Apache-2.0 (gallery)",
              (GitRule("images/case*/output*", "fake", "ai-gallery", "gemini-image/nano-banana",
                       trim=_GEMINI_MARK),
               GitRule("images/pro_case*/output*", "fake", "ai-gallery",
                       "gemini-image/nano-banana-pro", trim=_GEMINI_MARK)),
              notes="Gemini 2.5 Flash Image (Nano Banana) and Nano Banana Pro outputs collected "
                    "from X; the edit inputs (input*.jpg: photos and art of unknown origin) are "
                    "left out. The bottom 16 % is cropped: the Gemini app's sparkle logo sits in "
                    "the bottom-right corner of most outputs, with some posters' handles"),
    GitSource("ai-horde-styles", "amiantos/AI-Horde-Styles",
              "c61af24fcc15abcb7bc6e01cc981bac4eaef7d6f", "CC0-1.0",
              (GitRule("preview_generator/images/*.webp", "fake", "ai-style-preview",
                       generator_from=horde_style_model),),
              notes="AI Horde style previews: one person, place and thing prompt per style, "
                    "rendered on the Horde with the style's model (styles.json): SDXL fine-tunes "
                    "(AlbedoBase XL) and SD 1.5 fine-tunes (DreamShaper and others), late 2023"),
    GitSource("nano-banana-pro-prompts", "samuxbuilds/awesome-prompts",
              "43c81bb3af690a5a1bd4a6bd8a97a869bf504765", "MIT (gallery; images posted on X by "
              "many authors)",
              (GitRule("public/media/*/pg-*", "fake", "ai-gallery", "gemini-image/nano-banana-pro",
                       trim=_GEMINI_MARK),
               GitRule("public/media/*/nb-*", "fake", "ai-gallery", "gemini-image/nano-banana-pro",
                       trim=_GEMINI_MARK)),
              notes="Nano Banana Pro outputs: pg-* from promptgather.io's nano-banana-pro listing "
                    "(scripts/import-promptgather.ts), nb-* from the awesome-nanobanana-pro README "
                    "(scripts/importNanoBananaPro.ts); mostly photorealistic portraits, selfies, "
                    "street and product scenes, also 3D figures, posters, icons. WebP re-encoded "
                    "by the gallery (about 1024 px). The other media (imported from an "
                    "awesome-nano-banana case list, Nano Banana 2.5 or unknown) are left out. "
                    "Bottom 16 % cropped like nano-banana-gallery (Gemini sparkle logo)"),
    GitSource("sdxl-style-previews", "xuyiqing88/ComfyUI-SDXL-Style-Preview",
              "5fafd746e3ad9e2e2b21bfd6c9158347b2a83d0b",
              "none stated (README: previews generated by the author with SDXL, free to download)",
              (GitRule("style-preview/*.png", "fake", "ai-style-preview", "sdxl/unspecified"),),
              notes="One preview per style of a ComfyUI prompt-styler node (587 styles, late "
                    "2024): SDXL renders of varied subjects (portraits, products, origami, "
                    "coloring pages, posters, photo styles), each prompt written for its style, "
                    "unlike the Horde's three prompts. Downscaled by the author to 450 px wide "
                    "PNG (resampled: fine generator traces are weakened). The checkpoint is not "
                    "recorded per image (\"SDXL base, Lightning or fine-tunes\"). No licence "
                    "stated, so opt-in (--only sdxl-style-previews)",
              default=False),
    # --- modern generators missing above (sixth search): FLUX.1, SD3.5, Krea 2, FLUX.2 ----------
    # Why: the AI images above are GPT-image, Gemini and SDXL/SD 1.5 only; issue 11 asks for
    # at least 5 modern generators. DATACARD.md, "Sixth search".
    GitSource("flux-artist-styles", "andygock/FLUX-Style-CheatSheet",
              "8f532cbc5ee3a2abd05eee3fe48ae96a68fdfc21", "MIT (repository LICENSE)",
              (GitRule("img/flux/*.webp", "fake", "ai-style-preview", "flux/flux.1-dev",
                       trim=_TOP_LEFT_OF_2X2),),
              notes="FLUX.1 [dev] (fp8, ComfyUI, 20 steps, 2025) renders of \"style of <artist>\" "
                    "for 884 artists: paintings, drawings, illustrations, some photo styles. "
                    "Each file is a 2x2 grid of four seeds resized to 1024 px, so the top-left "
                    "quadrant is kept: one generation per artist, 512 px (downscaled 2x by the "
                    "author, WebP; written as PNG after the crop). img/types/ (the SD-era "
                    "examples of the fork's origin, 2023) is left out"),
    GitSource("sd35-artist-styles", "EnragedAntelope/Artists-SD35L",
              "f28b471e3bc990fd6933a55240a8cfe1dcd2d795", "MIT (repository LICENSE)",
              _SD35_GALLERY,
              notes="Stable Diffusion 3.5 Large renders of one prompt per artist (129: "
                    "\"<subject>, by <artist>\"), 1024 px PNG as ComfyUI saved them; the "
                    "embedded workflow names sd3.5_large (resolved per file; late 2024)"),
    GitSource("sd35-style-gallery", "EnragedAntelope/Styles-SD35L",
              "edd33455c10af7582c111b173553dc6441d7bd67", "MIT (repository LICENSE)",
              _SD35_GALLERY,
              notes="Stable Diffusion 3.5 Large renders of one prompt per art or photo style "
                    "(147: oil painting, pixel art, portrait and aerial photography...), 1024 px "
                    "PNG with the workflow embedded (sd3.5_large, resolved per file)"),
    GitSource("krea2-identity-gallery", "EnragedAntelope/comfyui-identity-forge",
              "d6101eb19ae8a39f3541245693252f3c7234f436", "MIT (repository LICENSE)",
              (GitRule("gallery/*/images/*", "fake", "ai-gallery", "krea/krea-2"),),
              notes="The gh-pages galleries of a ComfyUI character-prompt node (August 2026; the "
                    "pinned commit is the gh-pages branch): photorealistic full-body portraits of "
                    "people in costume (cosplay 1,826), archetypes (237) and creatures (233), "
                    "indoors and outdoors, made with the Krea 2 text-to-image model (each "
                    "gallery's workflow JSON: krea2_raw_int8 with the turbo LoRA at 0.6, 10 "
                    "steps, 1664x2432), downscaled by the author to 600x876 JPEG. One generator "
                    "and one composition (a person, centred): cap or weight it per source"),
    GitSource("mflux-reference-outputs", "filipstrand/mflux",
              "97ac5e6280e8c65e48a609722229eb9d03ef2cbe", "MIT (repository LICENSE)",
              (GitRule("tests/resources/reference_flux2_klein_tiger_swim.png", "fake",
                       "ai-reference-output", "flux/flux.2-klein-4b"),
               GitRule("tests/resources/reference_flux2_klein_9b_tiger_swim.png", "fake",
                       "ai-reference-output", "flux/flux.2-klein-9b"),
               GitRule("tests/resources/reference_ideogram4_jazz_fest.png", "fake",
                       "ai-reference-output", "ideogram/ideogram-4"),
               GitRule("tests/resources/reference_krea2_turbo.png", "fake",
                       "ai-reference-output", "krea/krea-2-turbo")),
              notes="The reference outputs mflux's text-to-image tests compare against, the model "
                    "named by each test (tests/image_generation/): FLUX.2 Klein 4B and 9B (one "
                    "prompt and seed), Ideogram 4 (a poster), Krea 2 Turbo. The other references "
                    "are edits, upscales or under 384 px; the README assets are collages"),
    GitSource("comfyui-examples", "comfyanonymous/ComfyUI_examples",
              "f9431bb000ce792094ff345446e22cac1ea6cef3",
              "permissive (\"use, copy, modify and/or distribute for any purpose\", LICENSE)",
              (GitRule("**/*.png", "fake", "ai-workflow-example",
                       generator_from=comfy_workflow_model,
                       exclude=("inpaint/**", "3d/**", "flux/flux_fill_*", "controlnet/**")),),
              held_out=True,
              notes="ComfyUI's example outputs, the generator read from the workflow each PNG "
                    "embeds: 15 families (FLUX.1/.2, SD3/3.5, HiDream, Qwen-Image, Chroma, "
                    "Z-Image, Lumina 2, AuraFlow, Hunyuan-DiT, Cosmos, OmniGen2, Stable Cascade, "
                    "SDXL, SD 1.5/2.1 fine-tunes). Held out: a few images of many generators"),
    # --- real photos -----------------------------------------------------------------------------
    GitSource("bsds500", "BIDS/BSDS500", "a04b7c6c3a9f0ace74bf205c72a43d32e1c72722",
              "Berkeley BSDS terms (research and education; Corel images)",
              (GitRule(_BSDS + "*/*.jpg", "real", "photo"),),
              notes="Berkeley Segmentation Data Set 500: 481x321 scans of Corel stock photos "
                    "(people, animals, streets, buildings, landscapes), 1990s film"),
    GitSource("exif-samples", "ianare/exif-samples", "5332a9cf0220e9c6c93f88a187daa90808051e10",
              "CC-BY-SA-4.0 (user contributions) / per-file (exif.org samples)",
              (GitRule("jpg/**/*", "real", "photo",
                       exclude=("jpg/invalid/**", "jpg/corrupted.jpg", "jpg/xmp/BlueSquare.jpg",
                                "jpg/PaintTool_sample.jpg", "jpg/orientation/**")),),
              notes="Camera and phone JPEGs collected to test EXIF readers (Canon, Nikon, Fuji, "
                    "Kodak, Olympus, Sony, iPhone, Nokia...); most are tiny thumbnails below the "
                    "96 px floor. jpg/orientation (one waterfall photo 16 times, with the "
                    "orientation drawn on it) is left out"),
    GitSource("clothing-photos", "alexeygrigorev/clothing-dataset-small",
              "11961516512414bf9f6c150a832cfd21b54a6b54", "CC0-1.0",
              (GitRule("*/*/*.jpg", "real", "photo"),),
              notes="Phone photos of clothes (3,781, top-10 classes of the clothing dataset), "
                    "taken by about 30 people at home: garments on floors, beds, hangers, tiled "
                    "and wooden floors, some worn. 400 px wide JPEGs, re-encoded by the "
                    "collector; the one licensed source of everyday indoor phone photos here"),
    GitSource("pedestrian-frames", "LS-chen/Pedestrian-behavior-detection-and-prediction",
              "26cfc4cd4ddf0de0f55cabcde39f2d9dd0571a13",
              "none stated (repository); frames of public pedestrian video recordings, research use",
              (GitRule("JPEGImages/*.jpg", "real", "photo"),),
              notes="A pedestrian-detection set in VOC layout: 1,569 frames, mostly 720x576 (PAL "
                    "SD video camera, some interlacing) and 640x480, of German city streets, "
                    "shopping streets, tram stops and a few indoor scenes; people walking, cars, "
                    "bikes. Frames are sparse samples of sequences (neighbours differ), but "
                    "scenes repeat. The repository states no licence, so this source is opt-in "
                    "(--only pedestrian-frames), not part of the default corpus",
              default=False),
    # --- real photos with text in the scene, and stock-style photos (fifth search) ---------------
    # Why: starter-v2 flags real photos holding text (signs, packaging, documents) and polished
    # stock photos as AI; the reals above have almost none. DATACARD.md, "Fifth search".
    GitSource("grocery-packages", "marcusklasson/GroceryStoreDataset",
              "fc80ba90f803d79d0383df52c5a4ac5de99ff6fc", "MIT (repository LICENSE)",
              (GitRule("dataset/*/Packages/**/*.jpg", "real", "photo",
                       exclude=("dataset/iconic-images-and-descriptions/**",)),),
              notes="Grocery Store Dataset (WACV 2019): phone photos taken in Swedish grocery "
                    "stores of juice, milk, yoghurt and oat-drink cartons held in front of the "
                    "shelf: printed packaging text, brand logos and shelf price labels. 348 px "
                    "square, resized by the authors. The fruit and vegetable photos (little "
                    "text) and the downloaded iconic product images are left out"),
    GitSource("alpr-benchmarks", "openalpr/benchmarks",
              "9790ed20d475be1e940a7e2a3f492a97c2ebed9b", "AGPL-3.0 (repository LICENSE)",
              (GitRule("endtoend/*/*", "real", "photo",
                       exclude=("endtoend/usimages/car-10.png",)),),
              notes="OpenALPR's end-to-end benchmark: phone and camera photos of parked and "
                    "moving cars with readable licence plates (Brazil 115, 1280 px phone photos "
                    "in car parks; Europe 108; US 222, and 21 PNGs, 19 of them pixel copies). "
                    "The plate crops and sample plates of seg_and_ocr/, the speed/ copies and "
                    "one car cut out onto white (usimages/car-10.png) are left out"),
    GitSource("unsplash-test-photos", "SqueezeSoftware/test_files",
              "ba32ed75f9788f6004d749bdf6d725975e6dd98c", "Unsplash License (Unsplash/README.md)",
              (GitRule("Unsplash/jpg_original/*.jpg", "real", "photo"),),
              notes="Professional photos from Unsplash (1,800-6,000 px JPEGs: portraits, food, "
                    "interiors, street, products, shallow depth of field). Only these: the "
                    "repository's other folders are drawn test palettes, vector art and the "
                    "1990s Kodak set"),
    GitSource("mmocr-demo-photos", "open-mmlab/mmocr",
              "966296f26ac34cf0e96d40ab4a0a94c9a697909a",
              "Apache-2.0 (repository); the toy set's images are ICDAR 2015 (research use)",
              (GitRule("demo/demo_*.jp*g", "real", "photo"),
               GitRule("tests/data/det_toy_dataset/imgs/test/*.jpg", "real", "photo"),
               GitRule("tests/data/kie_toy_dataset/wildreceipt/*.jpeg", "real", "photo")),
              notes="MMOCR's demo and test photos: a dictionary page, a receipt, a blue plaque, a "
                    "mall sign, a shop sign, ten ICDAR 2015 Google Glass frames of shop fronts, a "
                    "WildReceipt receipt photo. Word crops and result renders left out"),
    GitSource("easyocr-examples", "JaidedAI/EasyOCR", "c4f3cd7225efd4f85451bd8b4a7646ae9a092420",
              "Apache-2.0 (repository)",
              (GitRule("examples/chinese.jpg", "real", "photo"),
               GitRule("examples/french.jpg", "real", "photo"),
               GitRule("examples/japanese.jpg", "real", "photo"),
               GitRule("examples/korean.png", "real", "photo"),
               GitRule("examples/thai.jpg", "real", "photo")),
              notes="EasyOCR's five example photos of street and road signs (Chinese, French, "
                    "Japanese, Korean, Thai). Its other examples are a poster, diagrams and "
                    "result renders"),
    GitSource("phone-scan-documents", "slug183/phone-scan",
              "175945bcb9fc0888d1901d7ba0b830efb69dc0a3",
              "none stated (README: a dataset of documents digitized by smartphones)",
              (GitRule("dataset/1_*/IMA/*.jpg", "real", "photo"),),
              default=False, held_out=True,
              notes="PHONE-SCAN: Russian A4 documents (contracts, invoices, forms, statutes) "
                    "photographed with Samsung Galaxy S23+/S23 Ultra phones by several users, "
                    "cropped to the page by the phone (700-2,500 px). The 0_* folders (300 dpi "
                    "flatbed scans and their originals) are left out. No licence stated, so "
                    "opt-in (--only phone-scan-documents) and held out: evaluated (photographed "
                    "documents, a kind starter-v2 flagged), never trained on"),
    GitSource("icdar2015-test", "ocr-algorithm-and-data/ICDAR2015",
              "50f031dff55faec509f34d58b0b073e14a129360",
              "ICDAR 2015 Robust Reading terms (research use; the mirror states none)",
              (GitRule("End2End/TestSet/Imgs/*.jpg", "real", "photo"),),
              default=False, held_out=True,
              notes="ICDAR 2015 incidental scene text, the 500 test images: 1280x720 Google "
                    "Glass frames in Singapore malls and streets, shop fronts and signs seen in "
                    "passing (some blur). A mirror of a registration-only download, so opt-in "
                    "(--only icdar2015-test) and held out: evaluated (real photos with text), "
                    "never trained on. Word crops (WordRecognition/) left out"),
    GitSource("immich-test-assets", "immich-app/test-assets",
              "ec56cc6c1d76c45bc9615dc6ea232470a2b0a3a1", "public domain (README)",
              (GitRule("albums/**/*", "real", "photo"),
               GitRule("metadata/**/*", "real", "photo"),
               GitRule("formats/motionphoto/*.jpg", "real", "photo"),
               GitRule("formats/webp/*", "real", "photo"),
               GitRule("formats/jpg/*", "real", "photo")),
              held_out=True,
              notes="Immich's end-to-end test photos: phone photos (Pixel and Samsung motion "
                    "photos with their video appended), nature and text scenes"),
    GitSource("coco128", "lightly-ai/coco128_yolo", "6d6f7a059ea63efffdbe48aca2d52c04d4c510e9",
              "COCO images: Flickr terms of each image (CC-BY family)",
              (GitRule("images/train2017/*.jpg", "real", "photo"),),
              held_out=True,
              notes="The first 128 COCO train2017 images: everyday Flickr photos of people, "
                    "food, streets, animals, interiors (images/val2017 is the same 128)"),
    # --- real photos of people and archival photographs (seventh search) ------------------------
    *PEOPLE_SOURCES,
    # --- held-out modern generators, evaluation only (eighth search) ---------------------------
    *HELDOUT_GENERATOR_SOURCES,
    # --- AI product photography (ninth search) ------------------------------------------------
    *PRODUCT_SOURCES,
)

GIT_REGISTRY: dict[str, GitSource] = {s.name: s for s in GIT_SOURCES}
assert len(GIT_REGISTRY) == len(GIT_SOURCES), "git source names must be unique"
