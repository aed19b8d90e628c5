"""Each git source's own rules (train/sources/git_sources*.py): which files of its repository
become training images, with which label, generator and category. The importer's mechanics
(pinned commits, metadata stripping, the index) are tested in test_importer_git.py."""
from __future__ import annotations

import io
import json
from collections import Counter

from PIL import Image, PngImagePlugin

from tests.test_importer_git import noise
from train.sources import git_import as ig
from train.sources.git_import import GitSource
from train.sources.git_sources import GIT_SOURCES
from train.sources.gitread import Entry


def test_text_photo_rules_keep_camera_photos_only():
    """The fifth search's rules (real photos with text): each keeps the camera photos of its
    repository and leaves out the look-alikes next to them (downloaded product shots, flatbed
    scans, plate crops, a cut-out car, word crops)."""
    def chosen(name: str, paths: list[str]) -> list[str]:
        src = next(s for s in GIT_SOURCES if s.name == name)
        assert all(r.label == "real" for r in src.rules)
        return [e.path for e, _ in ig.select([Entry(p, "0" * 40, 1) for p in paths], src.rules)]

    assert chosen("grocery-packages", [
        "dataset/train/Packages/Juice/Bravo-Apple-Juice/Bravo-Apple-Juice_001.jpg",
        "dataset/iconic-images-and-descriptions/Packages/Juice/Bravo-Apple-Juice/x.jpg",
        "dataset/train/Fruit/Apple/Granny-Smith/Granny-Smith_001.jpg",
    ]) == ["dataset/train/Packages/Juice/Bravo-Apple-Juice/Bravo-Apple-Juice_001.jpg"]
    assert chosen("alpr-benchmarks", [
        "endtoend/br/AYO9034.jpg", "endtoend/usimages/car-01.png", "endtoend/usimages/car-10.png",
        "endtoend/br/AYO9034.txt", "seg_and_ocr/usimages/ar1487.png", "speed/usimages/car-01.png",
    ]) == ["endtoend/br/AYO9034.jpg", "endtoend/usimages/car-01.png"]
    assert chosen("phone-scan-documents", [
        "dataset/1_2/IMA/1_2_02_1.jpg", "dataset/0_1/IMA/0_1_02_1.jpg",
        "dataset/0_0/IMA/0_0_02_1.jpg",
    ]) == ["dataset/1_2/IMA/1_2_02_1.jpg"]
    assert chosen("icdar2015-test", [
        "End2End/TestSet/Imgs/img_1.jpg", "WordRecognition/TrainingSet/word_1.png",
    ]) == ["End2End/TestSet/Imgs/img_1.jpg"]
    assert chosen("mmocr-demo-photos", [
        "demo/demo_kie.jpeg", "demo/resources/det_vis.png", "tests/data/rec_toy_dataset/imgs/1.jpg",
    ]) == ["demo/demo_kie.jpeg"]
    assert chosen("unsplash-test-photos", [
        "Unsplash/jpg_original/a-unsplash.jpg", "Unsplash/png_converted/a-unsplash.png",
        "wcDogg/jpg_24-bit_limited-palette/72dpi/bars.jpg",
    ]) == ["Unsplash/jpg_original/a-unsplash.jpg"]
    # no licence stated (or a registration-only mirror): opt-in, like pedestrian-frames, and
    # evaluated only (split=heldout, which training refuses)
    text_sets = {"phone-scan-documents", "icdar2015-test"}
    assert {s.name for s in GIT_SOURCES if not s.default} >= text_sets
    assert {s.name for s in GIT_SOURCES if s.held_out} >= text_sets
    assert all(s.split == "train" for s in GIT_SOURCES if s.name in {
        "grocery-packages", "alpr-benchmarks", "unsplash-test-photos", "mmocr-demo-photos",
        "easyocr-examples"})


def test_modern_generator_rules_keep_single_generations():
    """The sixth search's rules: FLUX-Style-CheatSheet's 2x2 seed grids become their top-left
    generation, the SD3.5 galleries are named from the workflow ComfyUI embedded (a checkpoint in
    a sub-folder), and mflux keeps its text-to-image references only (not edits, upscales or
    the small ones)."""
    def src_named(name: str) -> GitSource:
        return next(s for s in GIT_SOURCES if s.name == name)

    flux = src_named("flux-artist-styles")
    quadrants = [noise(512, 512, seed) for seed in range(4)]
    grid = Image.new("RGB", (1024, 1024))
    for i, q in enumerate(quadrants):
        grid.paste(q, ((i % 2) * 512, (i // 2) * 512))
    buf = io.BytesIO()
    grid.save(buf, "WEBP", lossless=True)
    chosen = ig.select([Entry(p, "0" * 40, 1) for p in (
        "img/flux/style of Aaron Horkey.webp", "img/types/00-photo.webp")], flux.rules)
    assert [e.path for e, _ in chosen] == ["img/flux/style of Aaron Horkey.webp"]
    out, item = ig.process_blob(chosen[0][0], buf.getvalue(), chosen[0][1], flux, Counter())
    kept = Image.open(io.BytesIO(out)).convert("RGB")
    assert kept.size == (512, 512) and kept.tobytes() == quadrants[0].tobytes()
    assert item.orig.endswith("#trim=0,0,512,512")

    class FakeCtx:
        def blob(self, path: str) -> bytes:
            info = PngImagePlugin.PngInfo()
            info.add_text("prompt", json.dumps({"37": {
                "class_type": "CheckpointLoaderSimple",
                "inputs": {"ckpt_name": "SD3\\sd3.5_large.safetensors"}}}))
            png = io.BytesIO()
            noise(64, 64, 1).save(png, "PNG", pnginfo=info)
            return png.getvalue()

    sd35 = src_named("sd35-artist-styles").rules[0]
    assert sd35.generator_from("gallery-assets/AkihikoYoshida.png", FakeCtx()) == "sd3/sd3.5-large"

    mflux = src_named("mflux-reference-outputs")
    paths = [f"tests/resources/reference_{n}.png" for n in (
        "flux2_klein_tiger_swim", "flux2_klein_9b_tiger_swim", "ideogram4_jazz_fest", "krea2_turbo",
        "flux2_klein_edit_dalmatian", "qwen_txt2img", "seedvr2_upscaled")]
    picked = {e.path: r.generator for e, r in ig.select([Entry(p, "0" * 40, 1) for p in paths],
                                                         mflux.rules)}
    assert picked == {paths[0]: "flux/flux.2-klein-4b", paths[1]: "flux/flux.2-klein-9b",
                      paths[2]: "ideogram/ideogram-4", paths[3]: "krea/krea-2-turbo"}


def test_people_rules_keep_camera_photos_of_people_only():
    """The seventh search's rules (real photos of people, archival photos): each keeps the
    photos and leaves out what sits next to them: faded or repeated copies, restored outputs,
    synthetic degradations, drawn-on masks, an AI image, rendered or composited hands, drawn
    "virtual humans", next frames of one clip, posters and album covers, count plots."""
    def chosen(name: str, paths: list[str]) -> dict[str, str]:
        src = next(s for s in GIT_SOURCES if s.name == name)
        assert all(r.label == "real" for r in src.rules)
        return {e.path: r.category for e, r in ig.select([Entry(p, "0" * 40, 1) for p in paths],
                                                         src.rules)}

    assert chosen("deoldify-archival", [
        "test_images/1908FamilyPhoto.jpg", "test_images/FadedDelores.PNG",
        "test_images/FatMensShop.jpg", "result_images/1908FamilyPhoto.jpg",
    ]) == {"test_images/1908FamilyPhoto.jpg": "archival-photo"}
    assert chosen("old-photo-inputs", [
        "test_images/old/a.png", "test_images/old_w_scratch/d.png", "imgs/0001.jpg",
    ]) == {"test_images/old/a.png": "archival-photo", "test_images/old_w_scratch/d.png":
           "archival-photo"}
    assert chosen("codeformer-inputs", [
        "inputs/gray_faces/Einstein01.png", "inputs/cropped_faces/0143.png",
        "inputs/cropped_faces/Solvay_conference_1927_0018.png", "inputs/masked_faces/00105.png",
        "inputs/whole_imgs/00.jpg", "inputs/whole_imgs/stable_diffusion_00.jpg",
    ]) == {"inputs/gray_faces/Einstein01.png": "archival-photo",
           "inputs/cropped_faces/Solvay_conference_1927_0018.png": "archival-photo",
           "inputs/whole_imgs/00.jpg": "people"}
    assert list(chosen("deepface-test-photos", [
        "tests/unit/dataset/img11.jpg", "tests/unit/dataset/img11_reflection.jpg",
        "tests/integration/dataset/target.jpg", "icon/deepface-icon.png",
    ])) == ["tests/unit/dataset/img11.jpg", "tests/integration/dataset/target.jpg"]
    mm = "tests/data/"
    kept = [mm + p for p in (
        "coco/000000000785.jpg",
        "h36m/S1/S1_Directions_1.54138969/S1_Directions_1.54138969_000001.jpg",
        "humanart/real_human/acrobatics/000000000590.jpg", "300vw/001/imgs/000006.jpg",
        "posetrack18/videos/000001_mpiinew_test/000000.jpg",
        "jhmdb/Frisbee_catch_f_cm_np1_ri_med_0/00001.png")]
    left_out = [mm + p for p in (
        "h36m/BF_IUV_gt/S1_Directions_1.54138969_000001_IUV.png",
        "humanart/2D_virtual_human/digital_art/000000001648.jpg", "freihand/00000355.jpg",
        "rhd/00111.png", "zebra/810.jpg", "300vw/001/imgs/000009.jpg",
        "posetrack18/videos/000001_mpiinew_test/000001.jpg",
        "jhmdb/Frisbee_catch_f_cm_np1_ri_med_1/00001.png")]
    assert list(chosen("mmpose-test-people", kept + left_out)) == kept
    wider = "Model_compression/Quantization/Pytorch/PTQ/representative_dataset/"
    assert list(chosen("wider-face-sample", [
        wider + "0_Parade_Parade_0_102.jpg", wider + "3_Riot_Riot_3_166.jpg",
        "Worked_on_yolov5/yolov5/data/images/bus.jpg",
    ])) == [wider + "0_Parade_Parade_0_102.jpg"]
    assert list(chosen("crowd-photos", [
        "ShanghaiTech/part_B/train_data/images/IMG_1.jpg", "raw/images/IMG_1.jpg",
        "raw/output/IMG_1.png", "result/IMG_1.png",
    ])) == ["ShanghaiTech/part_B/train_data/images/IMG_1.jpg", "raw/images/IMG_1.jpg"]


def test_people_sources_opt_ins_and_held_out():
    # no licence stated in the repository: opt-in, like pedestrian-frames
    people = {s.name: s for s in GIT_SOURCES if s.name in {
        "deoldify-archival", "old-photo-inputs", "codeformer-inputs", "deepface-test-photos",
        "mmpose-test-people", "wider-face-sample", "crowd-photos"}}
    assert len(people) == 7
    # the press portraits and the scanned prints are the project's held-out check of the rest
    assert {n for n, s in people.items() if s.split == "heldout"} == {
        "deepface-test-photos", "old-photo-inputs"}
    assert {n for n, s in people.items() if not s.default} == {"wider-face-sample", "crowd-photos"}


def test_heldout_generator_rules_keep_single_generations_of_the_named_model():
    """The eighth search's galleries are evaluated only (split=heldout: they can never change
    train.csv or a training's view bank), and each keeps the images of its own generator: no
    other model's half of a comparison, screenshots, grids or edits of an uploaded photo."""
    from train.sources.git_sources_heldout import HELDOUT_GENERATOR_SOURCES
    assert all(s.held_out and s.split == "heldout" for s in HELDOUT_GENERATOR_SOURCES)
    assert {s.name for s in HELDOUT_GENERATOR_SOURCES} <= {s.name for s in GIT_SOURCES}

    def picked(name: str, paths: list[str]) -> dict[str, str]:
        src = next(s for s in GIT_SOURCES if s.name == name)
        return {e.path: r.generator for e, r in ig.select([Entry(p, "0" * 40, 1) for p in paths],
                                                         src.rules)}

    ideogram = ["images/portrait_case1/output.jpg", "images/comparison_case2/output3.jpg",
                "images/poster_case5/output2.jpg", "images/comparison_case15/output2.jpg"]
    assert picked("ideogram4-gallery", ideogram + [
        "images/comparison_case1/output.jpg", "images/comparison_case6/output.png",
        "images/comparison_case10/output.jpg", "images/poster_case5/output.jpg",
        "images/poster_case9/output.jpg", "images/comparison_case15/output.jpg",
        "images/logo.jpg", "images/leaderboard.png",
    ]) == dict.fromkeys(ideogram, "ideogram/ideogram-4")
    seedream = ["images/1-1.jpg", "images/3-2.jpg", "images/47-1.jpg"]
    assert picked("seedream5-gallery", seedream + [
        "images/2-2.jpg", "images/15-3.jpg", "images/32-1.jpg", "images/38-1.jpg",
        "images/banner.png",
    ]) == dict.fromkeys(seedream, "seedream/seedream-5.0-pro")
    assert list(picked("gpt-image-2-api-outputs", [
        "assets/generated/product-hero.png", "assets/generated/sticker-sheet.png",
        "docs/assets/generated/product-hero.png"])) == ["assets/generated/product-hero.png"]

    class FakeCtx:
        def text(self, path: str) -> str:
            assert path == "data/cases.json"
            return json.dumps({"cases": [
                {"id": 1, "category": "Photography & Realism", "prompt": "a street at dusk"},
                {"id": 2, "category": "Photography & Realism", "prompt": "参考上传的照片"},
                {"id": 3, "category": "Photography & Realism", "prompt": "keep the uploaded face"},
                {"id": 4, "category": "UI & Interfaces", "prompt": "a login page"},
                {"id": 24, "category": "Photography & Realism", "prompt": "a 3x3 grid"}]})

    resolve = next(s for s in GIT_SOURCES if s.name == "gpt-image-2-realism").rules[0].generator_from
    ctx = FakeCtx()
    assert {n: resolve(f"data/images/case{n}.jpg", ctx) for n in (1, 2, 3, 4, 24, 99)} == {
        1: "gpt-image/gpt-image-2", 2: None, 3: None, 4: None, 24: None, 99: None}
    assert resolve("data/images/cover.jpg", ctx) is None


def test_product_rules_keep_one_generator_and_hold_out_the_unseen_one():
    """The ninth search's AI product shots: the packshots and the first-stage SDXL-Lightning ads
    train; the inpainted second stage (SD 1.5 pixels over SDXL's), the box drawings and the
    masks are left out; Imagen 4, a generator no training has seen, is held out."""
    from train.sources.git_sources_products import PRODUCT_SOURCES
    assert {s.name for s in PRODUCT_SOURCES} <= {s.name for s in GIT_SOURCES}
    assert {s.name for s in PRODUCT_SOURCES if s.split == "heldout"} == {"imagen4-product-shots"}

    def picked(name: str, paths: list[str]) -> dict[str, str]:
        src = next(s for s in PRODUCT_SOURCES if s.name == name)
        return {e.path: r.generator for e, r in ig.select([Entry(p, "0" * 40, 1) for p in paths],
                                                         src.rules)}

    shop = "packages/frontend/public/products/"
    assert picked("nano-banana-pro-packshots", [shop + "CLO-0001.jpg", shop + ".gitkeep",
                                                "docs/screenshot.png"]) == {
        shop + "CLO-0001.jpg": "gemini-image/nano-banana-pro"}
    ads = "visuals/"
    assert picked("sdxl-lightning-product-ads", [
        ads + "product_photos/Office Chair_0_3.png", ads + "impaint_results/Bag_0_0.png",
        ads + "detection_results/Bag_0_0.png", ads + "segmentation_results/Bag_0_0.png",
    ]) == {ads + "product_photos/Office Chair_0_3.png": "sdxl/sdxl-lightning"}
    run = "Generated_Images/2025-11-07_11-07-57/"
    assert picked("imagen4-product-shots", [run + "images/image_001.jpg",
                                            run + "generation_summary.md"]) == {
        run + "images/image_001.jpg": "imagen/imagen-4"}
