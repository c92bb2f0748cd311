"""Images unpacked into a folder and run from it as an unprivileged user under bwrap."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NOBODY = 65534  # on every Debian system (base-passwd); needs no useradd


@dataclass(frozen=True)
class Unpacked:
    """An image's layers extracted in order into ``root``, and its config."""

    root: Path
    config: dict[str, Any]

    @property
    def env(self) -> dict[str, str]:
        return dict(e.split("=", 1) for e in self.config["Env"])

    def run(self, argv: Sequence[str], *, uid: int = NOBODY,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``argv`` in the image as ``uid``: bwrap itself runs as that user (setpriv), with
        the host's network (the test's servers listen on 127.0.0.1) and nothing else of it."""
        bwrap = shutil.which("bwrap")
        setpriv = shutil.which("setpriv")
        assert bwrap and setpriv, "bwrap and setpriv are needed: run scripts/setup"
        command = [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", bwrap,
                   "--tmpfs", "/"]
        for entry in sorted(self.root.iterdir()):  # the image has no /dev or /proc to mount on
            if entry.is_symlink():
                command += ["--symlink", str(entry.readlink()), f"/{entry.name}"]
            elif entry.name != "tmp":
                command += ["--ro-bind", str(entry), f"/{entry.name}"]
        command += ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--unshare-all",
                    "--share-net", "--die-with-parent", "--new-session", "--clearenv"]
        for key, value in sorted(self.env.items()):
            command += ["--setenv", key, value]
        command += ["--chdir", "/", "--", *argv]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              check=False)


def unpack(archive: Path, parent: Path | None = None) -> Unpacked:
    """Extract the OCI archive's layers into a new folder others may enter (the image runs
    as an unprivileged user, who must reach it); the caller removes ``root`` when done."""
    root = Path(tempfile.mkdtemp(prefix="venvseal-image-", dir=parent or "/tmp"))
    root.chmod(0o755)
    with tarfile.open(archive) as tar:
        def blob(digest: str) -> bytes:
            f = tar.extractfile("blobs/sha256/" + digest.removeprefix("sha256:"))
            assert f is not None
            return f.read()

        index = json.loads(blob(json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
                                ["manifests"][0]["digest"]))
        config = json.loads(blob(index["config"]["digest"]))
        for i, layer in enumerate(index["layers"]):
            file = root.parent / f"{root.name}.layer-{i}.tar.gz"
            file.write_bytes(blob(layer["digest"]))
            try:
                subprocess.run(["tar", "-xzf", str(file), "-C", str(root)], check=True)
            finally:
                file.unlink()
    return Unpacked(root, config["config"])
