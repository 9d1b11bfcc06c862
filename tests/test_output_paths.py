"""Outputs never replace what is not ours (issue: "no path clobbered"): a FIFO, a device, a
socket or someone's file at an output path is refused with one line and left as it was; a
prepared path may not leave the repository. Every victim is made under a temporary directory."""

from __future__ import annotations

import os
import re
import socket
import stat

import pytest

from conftest import CONF_DIR, reprolab
from reprolab.config import ConfigError, load_config


def victims(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    device = tmp_path / "null-like"
    os.mknod(device, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # a character device, here only
    sock_path = tmp_path / "sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    return {"a FIFO": fifo, "a device": device, "a socket": sock_path}, server


def test_compose_refuses_to_replace_a_fifo_a_device_or_a_socket(tmp_path):
    found, server = victims(tmp_path)
    try:
        for kind, path in found.items():
            before = path.stat()
            done = reprolab(tmp_path, "compose", "-o", str(path), check=False)
            assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
            (line,) = done.stderr.strip().splitlines()
            assert f"{path} is {kind}, not a regular file" in line and "choose another output path" in line
            after = path.stat()
            assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)
            assert not list(tmp_path.glob(".*.tmp"))
    finally:
        server.close()


def test_a_prepared_path_over_someones_file_or_outside_the_repository_is_refused(tmp_path):
    notes = tmp_path / "notes.npz"
    notes.write_text("my notes, not arrays\n")
    done = reprolab(
        tmp_path, "prepare", "data=synthetic_small", f"data.prepared_path={notes}", "tracking=none", check=False
    )
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "is not an .npz array file" in line and "move it aside" in line
    assert notes.read_text() == "my notes, not arrays\n"
    with pytest.raises(ConfigError, match=re.escape("data.prepared_path: '../../x.npz' leaves the repository")):
        load_config(["data.prepared_path=../../x.npz"], CONF_DIR)
