"""The code a run recorded (`RecordedCode`): its source archive, unpacked and checked against
the archive's manifest, and the digest of its training code as a run key holds it.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path

from reprolab.entrypoint import UserError, one_line
from reprolab.record.source import ARCHIVE, Source, read_archive

TRAINING_MODULE = "reprolab.training"  # the module whose import closure is "the training code"
THIS_CHECKOUT = "this checkout's code"


class CodeError(UserError, RuntimeError):
    """Recorded code that cannot be had, or that cannot train what it was given."""


@dataclass(frozen=True)
class RecordedCode:
    """The code a run recorded: its archive, its source as the run's tags describe it, the digest
    of its training code (as a run key holds it) and how messages name it."""

    archive: bytes
    source: Source
    training_digest: str
    label: str


def unpack(archive: bytes, folder: Path) -> dict:
    """The archive unpacked into `folder/code`; its manifest (`read_archive`)."""
    (folder / ARCHIVE).write_bytes(archive)
    try:
        return read_archive(folder / ARCHIVE, folder / "code")
    except (OSError, ValueError, KeyError, tarfile.TarError) as error:
        raise CodeError(f"the run's source archive is unreadable ({one_line(error)})") from error
