"""A run's source: the project's code and configuration as they were on disk (committed or
not: staged and unstaged edits, new files git does not ignore), as a deterministic tar archive
with a digest and a manifest. In a git repository it is also kept as a commit object under
`refs/reprolab/sources/` (the way `dvc exp` keeps experiments under `refs/exps/`), so
`git diff HEAD <commit>` shows what differed; the archive lets a run carry its code without
the repository. "Dirty" means that source differs from HEAD, not that outputs changed.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from reprolab.sources import PACKAGE_DIR

SCHEMA = 1  # of the archive's manifest: a newer one is refused, not misread


# What a run's source is: the package, its configuration and how it installs.
SOURCE_PATHS = ("src", "conf", "pyproject.toml", "requirements.lock")
SOURCE_REF = "refs/reprolab/sources"
ARCHIVE = "source.tar.gz"
MANIFEST = "reprolab-source.json"  # inside the archive: schema, files and their digests, the commit


# A fixed identity and date make the same source the same commit object, whoever records it.
_FIXED_GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "reprolab",
    "GIT_AUTHOR_EMAIL": "reprolab@localhost",
    "GIT_COMMITTER_NAME": "reprolab",
    "GIT_COMMITTER_EMAIL": "reprolab@localhost",
    "GIT_AUTHOR_DATE": "1970-01-01T00:00:00Z",
    "GIT_COMMITTER_DATE": "1970-01-01T00:00:00Z",
}


def project_root() -> Path:
    """The folder the running package was installed from (`<root>/src/reprolab`)."""
    return PACKAGE_DIR.parents[1]


def _git(root: Path, *args: str, env: Optional[dict[str, str]] = None) -> Optional[str]:
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
            env={**os.environ, **(env or {})},
        )
        return done.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


@dataclass(frozen=True)
class Source:
    """The source a run used: its files' digest, the archive's bytes, and, in git, HEAD, the
    commit object that holds the source (HEAD itself when nothing differs) and whether it differs."""

    digest: str
    archive: bytes
    files: dict[str, str]  # path -> SHA-256
    head: Optional[str] = None
    commit: Optional[str] = None
    dirty: Optional[bool] = None

    def tags(self) -> dict[str, str]:
        tags = {"reprolab.source.digest": self.digest}
        if self.head:
            tags["mlflow.source.git.commit"] = self.head
        if self.commit:
            tags["reprolab.source.commit"] = self.commit
        if self.dirty is not None:
            tags["reprolab.git_dirty"] = str(self.dirty).lower()
        return tags


def _source_files(root: Path) -> dict[str, Path]:
    """The source files by their path in the project: as git sees them (tracked and untracked,
    not ignored), else every file under SOURCE_PATHS but caches; for a package installed
    outside a project, its own Python files."""
    if (root / "src" / "reprolab").resolve() != PACKAGE_DIR:
        return {f"src/reprolab/{p.relative_to(PACKAGE_DIR)}": p for p in sorted(PACKAGE_DIR.rglob("*.py"))}
    listed = _git(root, "ls-files", "-co", "--exclude-standard", "-z", "--", *SOURCE_PATHS)
    if listed is not None:
        names = [name for name in listed.split("\0") if name]
    else:
        names = []
        for top in SOURCE_PATHS:
            path = root / top
            if path.is_file():
                names.append(top)
            elif path.is_dir():
                names.extend(
                    str(p.relative_to(root))
                    for p in path.rglob("*")
                    if p.is_file() and "__pycache__" not in p.parts and ".egg-info" not in str(p)
                )
    return {name: root / name for name in sorted(set(names)) if (root / name).is_file()}


# Files that look like secrets are never captured (names first, then key headers in the first
# 64 KiB): a run's source archive and its commit go wherever the store goes. Written by hand
# (the usual name patterns and key headers, as detect-secrets' and gitleaks' rules start from):
# a detector's full rule set would flag test fixtures and digests in code as often as secrets.
SECRET_NAMES = re.compile(
    r"^(\.env(\..*)?|.*\.env|id_(rsa|dsa|ecdsa|ed25519)(\.pub)?|.*\.(pem|key|p12|pfx|jks|keystore|kdbx)|"
    r"\.netrc|\.pypirc|\.npmrc|\.git-credentials|.*credentials.*\.(json|ya?ml|ini|txt)|credentials|"
    r"secrets?\..*|.*service[-_]account.*\.json)$",
    re.IGNORECASE,
)
SECRET_CONTENT = re.compile(
    rb"-----BEGIN ([A-Z]+ )*PRIVATE KEY( BLOCK)?-----|AKIA[0-9A-Z]{16}|\"private_key\"\s*:|xox[baprs]-[0-9A-Za-z-]{10,}"
)


def secret_reason(path: Path) -> Optional[str]:
    """Why `path` looks like a secret (its name, or a key in its content); None when it does not."""
    if SECRET_NAMES.match(path.name):
        return f"its name, {path.name}"
    try:
        with path.open("rb") as stream:
            head = stream.read(1 << 16)
    except OSError:
        return None
    return "a private key or access token in it" if SECRET_CONTENT.search(head) else None


def _without_secrets(paths: dict[str, Path]) -> tuple[dict[str, Path], list[str]]:
    """The files that do not look like secrets, and the names of those left out (each said once
    on stderr, naming the file and why, never its content)."""
    kept, left_out = {}, []
    for name, path in paths.items():
        reason = secret_reason(path)
        if reason is None:
            kept[name] = path
            continue
        left_out.append(name)
        print(
            f"reprolab: warning: {name} looks like a secret ({reason}): it is not captured in the run's source; keep "
            f"secrets out of {', '.join(SOURCE_PATHS[:2])}/ (e.g. in the environment) or list them in .gitignore",
            file=sys.stderr,
        )
    return kept, left_out


def source_digest(files: dict[str, str]) -> str:
    """One digest of a set of files: their paths and contents' digests, in path order."""
    return hashlib.sha256(json.dumps(sorted(files.items())).encode()).hexdigest()


def _archive(paths: dict[str, Path], manifest: dict) -> bytes:
    """A tar.gz of the files, byte for byte the same for the same files (no dates, no owners)."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as zipped, tarfile.open(fileobj=zipped, mode="w") as tar:

        def add(name: str, content: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content), 0o644
            tar.addfile(info, io.BytesIO(content))

        add(MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
        for name, path in paths.items():
            add(name, path.read_bytes())
    return buffer.getvalue()


def _git_capture(root: Path, secrets: list[str]) -> tuple[Optional[str], Optional[str], Optional[bool]]:
    """HEAD, a commit object holding HEAD with the source paths as on disk but `secrets`, and
    whether they differ. A temporary index is used: the user's index and work tree are not touched."""
    head = _git(root, "rev-parse", "--verify", "-q", "HEAD")
    if not head or _git(root, "rev-parse", "--show-toplevel") != str(root.resolve()):
        return None, None, None
    import tempfile

    with tempfile.TemporaryDirectory(prefix="reprolab-index-") as scratch:
        env = {"GIT_INDEX_FILE": str(Path(scratch) / "index"), **_FIXED_GIT_IDENTITY}
        if _git(root, "read-tree", "HEAD", env=env) is None:
            return head, None, None
        present = [path for path in SOURCE_PATHS if (root / path).exists()]
        if _git(root, "add", "-A", "--", *present, env=env) is None:
            return head, None, None
        if secrets and _git(root, "rm", "-q", "--cached", "--ignore-unmatch", "--", *secrets, env=env) is None:
            return head, None, None
        tree = _git(root, "write-tree", env=env)
    if tree is None:
        return head, None, None
    if tree == _git(root, "rev-parse", "HEAD^{tree}"):
        return head, head, False
    commit = _git(root, "commit-tree", tree, "-p", head, "-m", "reprolab: the source of a run", env=_FIXED_GIT_IDENTITY)
    if commit:
        _git(root, "update-ref", f"{SOURCE_REF}/{commit}", commit)
    return head, commit, True


@functools.lru_cache(maxsize=4)
def capture_source(root: Optional[Path] = None) -> Source:
    """The running project's source (once per process: the code that runs does not change)."""
    root = root or project_root()
    paths, secrets = _without_secrets(_source_files(root))
    files = {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in paths.items()}
    digest = source_digest(files)
    head, commit, dirty = (
        _git_capture(root, secrets) if (root / "src" / "reprolab").resolve() == PACKAGE_DIR else (None,) * 3
    )
    manifest = {"schema": SCHEMA, "digest": digest, "files": files, "git_head": head, "git_commit": commit}
    return Source(digest, _archive(paths, manifest), files, head, commit, dirty)


def read_archive(archive: Path, into: Path) -> dict:
    """Unpack a source archive into `into`; return its manifest, with `altered` listing the
    files whose bytes no longer match the manifest (or that are missing or extra)."""
    with tarfile.open(archive, mode="r:gz") as tar:
        tar.extractall(into, filter="data")
    if not (into / MANIFEST).is_file():  # git's archive of a commit: nothing to check against
        manifest: dict[str, Any] = {"schema": SCHEMA, "digest": None, "files": None}
    else:
        manifest = json.loads((into / MANIFEST).read_text())
        (into / MANIFEST).unlink()
    if manifest.get("schema", 0) > SCHEMA:
        raise ValueError(f"its source archive has schema {manifest['schema']}; this reprolab reads up to {SCHEMA}")
    found = {
        str(p.relative_to(into)): hashlib.sha256(p.read_bytes()).hexdigest() for p in into.rglob("*") if p.is_file()
    }
    recorded = manifest["files"] if manifest["files"] is not None else found  # git's archive: as found
    manifest["altered"] = sorted(name for name in set(found) | set(recorded) if found.get(name) != recorded.get(name))
    manifest["digest_now"] = source_digest(found)
    return manifest
