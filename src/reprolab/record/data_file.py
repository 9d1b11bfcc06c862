"""A user's data file as a run records it: its SHA-256 and its MD5, which is DVC's address
of the file in its cache and remote, and its bytes kept in the project's DVC cache.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional


def keep_in_dvc_cache(path: Path, md5: str, root: Path) -> Optional[Path]:
    """Put a file's bytes into the DVC cache of the project at `root` under their MD5, where
    `dvc add` would put them, without touching the workspace, its .dvc files or the index; the
    object's path, or None outside a DVC project. `reprolab reproduce` looks there for a run's
    data once the file itself has changed."""
    if not (root / ".dvc").is_dir():
        return None
    from dvc.repo import Repo
    from dvc_objects.fs.local import LocalFileSystem

    with Repo(str(root)) as repo:
        cache = repo.cache.local
        kept = Path(cache.oid_to_path(md5))
        if not kept.is_file():
            cache.add(str(path.resolve()), LocalFileSystem(), md5)
    return kept


def file_digests(path: Path) -> dict[str, str]:
    """A file's SHA-256 and MD5 (DVC's cache address), in one read."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            sha.update(block)
            md5.update(block)
    return {"sha256": sha.hexdigest(), "md5": md5.hexdigest()}
