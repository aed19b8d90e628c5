"""Reading a pinned commit of a local git repository (a clone or a bare mirror) without a work
tree: `git ls-tree -r -l <commit>` for the file list and sizes, one `git cat-file --batch` process
for the blobs. Nothing is checked out and nothing from the repository is executed.

Reserved repositories (kept for independent evaluation) are refused here by name, before any git
command runs, as well as by the source definitions (train.sources.git_import).
"""
from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from train.sources.fetch import SourceError
from train.sources.package_spec import is_reserved  # the Debian wallpaper patterns

# Repositories reserved for independent evaluation: never fetched, imported, trained or tuned on.
RESERVED_REPOS = frozenset({
    "ml72/ai-image-classifier-playground",
    "ai-image-gen/generator-testing",
    "laboratoriet/real-or-ai-game",
    "kaivalyagandhi/ai-or-not-game",
    "drewnoakes/metadata-extractor-images",
})
LFS_MAGIC = b"version https://git-lfs.github.com/spec/v1"
_COMMIT = re.compile(r"[0-9a-f]{40}")


def is_reserved_repo(repo: str) -> bool:
    """True for a reserved repository ("owner/name", any case, with or without github.com/ or .git)
    and for any repository named like a reserved Debian wallpaper package."""
    key = repo.strip().lower().removesuffix(".git").removesuffix("/")
    for prefix in ("https://", "http://", "git@", "github.com/", "github.com:", "github:"):
        key = key.removeprefix(prefix)
    key = key.removeprefix("github.com/").removeprefix("github.com:")
    return key in RESERVED_REPOS or is_reserved(key.rsplit("/", 1)[-1])


def refuse_reserved(repo: str) -> None:
    if is_reserved_repo(repo):
        raise SourceError(f"{repo} is reserved for independent evaluation: it must never be "
                          "fetched, imported, trained or tuned on")


@dataclass(frozen=True)
class Entry:
    path: str  # inside the repository
    sha: str  # blob id
    size: int  # bytes (from ls-tree -l); -1: the object is missing here


def _git(git_dir: Path, *args: str, data: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(git_dir), *args], input=data, capture_output=True)


def remote_urls(git_dir: Path) -> list[str]:
    res = _git(git_dir, "config", "--get-regexp", r"^remote\..*\.url$")
    return [line.split(None, 1)[1] for line in res.stdout.decode().splitlines() if " " in line]


def check_commit(git_dir: Path, repo: str, commit: str) -> None:
    """The pinned commit must be in the local repository (else a one-line SourceError that says
    how to get it). A local repository whose remote is a reserved repository is refused."""
    refuse_reserved(repo)
    for url in remote_urls(git_dir):
        refuse_reserved(url)
    if not _COMMIT.fullmatch(commit):
        raise SourceError(f"{repo}: pinned commit {commit!r} is not a 40-hex commit id")
    res = _git(git_dir, "cat-file", "-t", commit)
    if res.returncode != 0 or res.stdout.strip() != b"commit":
        raise SourceError(f"{repo}: pinned commit {commit} is not in {git_dir.name}; run "
                          f"`git -C <clone> fetch origin {commit}` (or clone again) and retry")


def list_files(git_dir: Path, commit: str) -> tuple[list[Entry], int]:
    """Blobs of the commit (regular files; symlinks and submodules left out), and how many
    entries were left out."""
    res = _git(git_dir, "ls-tree", "-r", "-l", "-z", "--full-tree", commit)
    if res.returncode != 0:
        raise SourceError(f"git ls-tree {commit} failed: {res.stderr.decode().strip()[-200:]}")
    entries, skipped = [], 0
    for record in res.stdout.split(b"\0"):
        if not record:
            continue
        meta, path = record.split(b"\t", 1)
        mode, kind, sha, size = meta.split()
        if kind != b"blob" or mode not in (b"100644", b"100755"):
            skipped += 1
            continue
        # a blob missing from a partial mirror is listed with size "BAD": -1, read as missing
        entries.append(Entry(path.decode("utf-8", "surrogateescape"), sha.decode(),
                             int(size) if size.isdigit() else -1))
    entries.sort(key=lambda e: e.path)
    return entries, skipped


class BlobReader:
    """One `git cat-file --batch` process; read(sha) -> bytes, or None when the object is missing
    (a partial mirror lacks large files)."""

    def __init__(self, git_dir: Path):
        self.proc = subprocess.Popen(["git", "-C", str(git_dir), "cat-file", "--batch"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)

    def read(self, sha: str) -> bytes | None:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(sha.encode() + b"\n")
        self.proc.stdin.flush()
        header = self.proc.stdout.readline().split()
        if len(header) < 2 or header[1] == b"missing" or len(header) != 3:
            return None
        size = int(header[2])
        data = self.proc.stdout.read(size)
        self.proc.stdout.read(1)  # the newline after the object
        return data

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)

    def __enter__(self) -> "BlobReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_bytes(git_dir: Path, commit: str, path: str) -> bytes:
    """A file of the commit (b"" when absent or missing from a partial mirror)."""
    res = _git(git_dir, "show", f"{commit}:{path}")
    return res.stdout if res.returncode == 0 else b""


def read_text(git_dir: Path, commit: str, path: str) -> str:
    """A text file of the commit ("" when absent): sidecar metadata such as a styles list."""
    return read_bytes(git_dir, commit, path).decode("utf-8", "replace")


def is_lfs_pointer(data: bytes) -> bool:
    return len(data) < 1024 and data.startswith(LFS_MAGIC)


def find_local(repo: str, roots: list[Path]) -> Path | None:
    """The local clone of `repo` under one of `roots`, in these layouts: <root>/<owner>+<name>/repo
    (the fetch mirror), <root>/<owner>+<name>, <root>/<owner>/<name>, <root>/<name>. Bare or not."""
    owner, name = repo.split("/", 1)
    for root in roots:
        for cand in (root / f"{owner}+{name}" / "repo", root / f"{owner}+{name}",
                     root / owner / name, root / name):
            if (cand / "HEAD").is_file() or (cand / ".git").exists():
                return cand
    return None


def iter_blobs(git_dir: Path, entries: list[Entry]) -> Iterator[tuple[Entry, bytes | None]]:
    with BlobReader(git_dir) as reader:
        for entry in entries:
            yield entry, reader.read(entry.sha)
