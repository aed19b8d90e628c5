"""Real photos of people and archival photographs (seventh import, issue 11): the git sources
that train.sources.git_sources adds to its registry. What each holds, its licence, counts and what
was left out: train/sources/DATACARD.md ("Seventh import: real photos of people").

Why: the AI side holds 2,297 photorealistic Krea 2 portraits, while the real side had almost no
photos of people (clothes, cartons, cars, Corel scenes), so a model could learn "a person in the
picture = AI", the worst error a moderation product can make. The shipped model also flags
archival black-and-white photos. Every rule here keeps camera photos only: no drawings, renders,
composited or annotated images, and for restoration repositories the degraded inputs only, never
the restored outputs.
"""
from __future__ import annotations

from train.sources.git_import import GitRule, GitSource

# DeOldify's test images before they moved to Git LFS (2018-11-06): the last commit whose
# test_images/ blobs are the photos themselves (287 files; later commits hold LFS pointers).
_DEOLDIFY_PHOTOS = "71c772922bba175e53e4ebe9fe783f8311cea37a"
# The "Faded*" files are faded copies of other photos in the folder (Dolores1920s, overmiller,
# DutchBabyCoupleEllis, 1910Racket, Sphinx) and FatMensShop.jpg repeats FatMenShop.jpg.
_DEOLDIFY_REPEATS = ("test_images/Faded*", "test_images/FatMensShop.jpg")

# mmpose's test data holds one or a few images of each pose dataset. Kept: the human datasets
# whose images are camera photos. Left out: animals, FreiHAND (hands composited onto random
# backgrounds), RHD (rendered hands), Human-Art's drawn and 3D "virtual humans", ExLPose (near
# black), FLD (near blank), and the next frames of the same video clip (300VW, PoseTrack, JHMDB).
_MMPOSE = "tests/data/"
_MMPOSE_PEOPLE = tuple(GitRule(_MMPOSE + glob, "real", "people") for glob in (
    "300w/*", "300wlp/*", "aflw/*", "aic/*", "coco/*", "cofw/*", "crowdpose/*", "deepfasion2/*",
    "lapa/*", "mhp/*", "mpii/*", "ochuman/*", "onehand10k/*", "panoptic/*", "wflw/*",
    "interhand2.6m/*", "mpi_inf_3dhp/*", "h36m/S*/*/*.jpg", "humanart/real_human/**",
    "posetrack18/images/val/*/*", "posetrack18/videos/*/000000.jpg",
    "jhmdb/*_ri_med_0/*", "300vw/001/imgs/000006.jpg", "300vw/401/imgs/000731.jpg"))

# WIDER FACE validation images a quantisation script calibrates on, resized by the author to
# 416x416. Left out: the few that are not photos (album covers, a campaign poster, a magazine
# page, a collage, a drawn-on selfie, a "click here" screenshot).
_WIDER = "Model_compression/Quantization/Pytorch/PTQ/representative_dataset/"
_WIDER_NOT_PHOTOS = tuple(_WIDER + name for name in (
    "2_Demonstration_Demonstration_Or_Protest_2_914.jpg", "2_Demonstration_Political_Rally_2_219.jpg",
    "2_Demonstration_Political_Rally_2_896.jpg", "3_Riot_Riot_3_166.jpg", "3_Riot_Riot_3_963.jpg",
    "3_Riot_Riot_3_993.jpg", "6_Funeral_Funeral_6_760.jpg", "7_Cheering_Cheering_7_427.jpg"))

PEOPLE_SOURCES: tuple[GitSource, ...] = (
    GitSource("deoldify-archival", "jantic/DeOldify", _DEOLDIFY_PHOTOS,
              "MIT (repository LICENSE); photos of many origins (mostly public-domain archives)",
              (GitRule("test_images/*", "real", "archival-photo", exclude=_DEOLDIFY_REPEATS),),
              notes="The black-and-white and sepia photographs DeOldify's author colorizes to "
                    "test it (1838-1950s: street scenes, portraits, families, workers, soldiers; "
                    "Dorothea Lange, Ansel Adams, Library of Congress scans), the uncolorized "
                    "inputs. Pinned to the last commit before the folder moved to Git LFS"),
    GitSource("old-photo-inputs", "microsoft/Bringing-Old-Photos-Back-to-Life",
              "33875eccf4ebcd3665cf38cc56f3a0ce563d3a9c", "MIT (repository LICENSE)",
              (GitRule("test_images/old/*", "real", "archival-photo"),
               GitRule("test_images/old_w_scratch/*", "real", "archival-photo")),
              held_out=True,  # scanned prints no training has seen: the archival rate's check
              notes="The degraded old photos the restoration model is tested on (scanned "
                    "prints with scratches, creases and fading; autochromes). Inputs only: the "
                    "restored results (imgs/) are left out"),
    GitSource("codeformer-inputs", "sczhou/CodeFormer", "b33cc7d639d6545bfcccc7e0bc6ae51f24e79c2b",
              "S-Lab License 1.0 (repository; non-commercial); photos of public figures",
              (GitRule("inputs/gray_faces/*", "real", "archival-photo"),
               GitRule("inputs/cropped_faces/Solvay_*", "real", "archival-photo"),
               GitRule("inputs/whole_imgs/*", "real", "people",
                       exclude=("inputs/whole_imgs/stable_diffusion*",))),
              notes="The face-restoration demo's real-world inputs: old black-and-white and "
                    "childhood photos of public figures (512 px face crops), two Solvay 1927 "
                    "faces and group photos. Left out: the CelebA-Test faces (synthetic degradations), "
                    "masked_faces (white strokes drawn on) and a Stable Diffusion image in "
                    "whole_imgs at some commits"),
    GitSource("deepface-test-photos", "serengil/deepface",
              "243209fd7b46ecdecf72665cc25219f6e8181f25", "MIT (repository LICENSE); press photos",
              (GitRule("tests/unit/dataset/*.jpg", "real", "people",
                       exclude=("tests/unit/dataset/*_reflection.jpg",)),
               GitRule("tests/integration/dataset/*.jpg", "real", "people")),
              # held out: press portraits are the worst false positive measured (the shipped
              # adapter flags 81 %), and 64 photos of 15 faces would teach those faces, not the
              # kind; kept unseen, they measure whether the other photos of people transfer
              held_out=True,
              notes="deepface's face-verification test photos: press and event photos of about "
                    "fifteen public figures, several photos each (red carpets, stages, studio "
                    "portraits, a group selfie), 330-4,352 px. img11_reflection.jpg (a mirrored "
                    "copy of img11) is left out"),
    GitSource("mmpose-test-people", "open-mmlab/mmpose", "759b39c13fea6ba094afc1fa932f51dc1b11cbf9",
              "Apache-2.0 (repository); each image under its dataset's terms (COCO, MPII, "
              "CrowdPose, OCHuman, AIC, 300W, WFLW, COFW, AFLW, LaPa, H3.6M...: research use)",
              _MMPOSE_PEOPLE,
              notes="One to five images of each human pose, face and hand dataset mmpose tests "
                    "its loaders on: sports, street, crowd and indoor photos, face close-ups, "
                    "lab captures (Human3.6M, MPI-INF-3DHP, InterHand, CMU Panoptic)"),
    GitSource("wider-face-sample", "vishalw-iitk/Widerface_Yolov5",
              "cbae228a9750b8c6caabf508810d05fb1e1fad5d",
              "none stated at the repository root (a YOLOv5 copy inside is GPL-3.0); WIDER FACE "
              "images: CC BY-NC-ND 4.0 (the dataset's card), and these resized copies are "
              "derivatives",
              (GitRule(_WIDER + "*.jpg", "real", "people", exclude=_WIDER_NOT_PHOTOS),),
              default=False,
              notes="200 WIDER FACE photos (parades, marching bands, handshakes, protests, "
                    "riots, press conferences, stages, sports; many people per photo), resized "
                    "by the repository's author to 416x416 (aspect not kept). The 8 that are "
                    "not photos are left out. No licence stated, so opt-in "
                    "(--only wider-face-sample)"),
    GitSource("crowd-photos", "princenarula222/People-Counting",
              "8a42c5c6be15aa69ea76068f71c912d9796614ff", "none stated (repository)",
              (GitRule("ShanghaiTech/part_B/*/images/*.jpg", "real", "people"),
               GitRule("raw/images/*.jpg", "real", "people")),
              default=False,
              notes="The author's own crowd-counting photos (laid out like ShanghaiTech, but "
                    "of groups and street crowds in India), 1024x768 and two raw inputs. The "
                    "count plots (result/, raw/output/) are left out. No licence stated, so "
                    "opt-in (--only crowd-photos)"),
)
