"""Property-based: whatever a tar or zip holds, unpacking never writes outside its output.

Hypothesis draws archives of members with hostile names (``..``, absolute, ``.``), links to
anywhere, hard links, devices and odd modes. Either ``unpack`` refuses the archive with
UnsafeMemberError, or the tree it wrote is wholly inside the output, holds no link that is
absolute or leads out, and no special file. In both cases nothing beside the output changed.
A small budget (``max_examples``) keeps it within seconds in CI.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import tempfile
import warnings
import zipfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from venvseal.fetch.archive import unpack
from venvseal.fetch.errors import UnsafeMemberError

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])

PART = st.sampled_from(["a", "b", "..", ".", "", "c d", "é"])
NAME = st.one_of(
    st.lists(PART, min_size=1, max_size=4).map("/".join),
    st.lists(PART, min_size=1, max_size=3).map(lambda parts: "/" + "/".join(parts)),
)
TARGET = st.one_of(NAME, st.sampled_from(["/etc/passwd", "/", "../../x", "a/../..", ""]))
KIND = st.sampled_from(["file", "dir", "symlink", "hardlink", "fifo", "chr"])
MODE = st.sampled_from([0o644, 0o755, 0o4755, 0o777, 0o000, 0o1777])
MEMBER = st.tuples(KIND, NAME, TARGET, MODE, st.binary(max_size=8))
MEMBERS = st.lists(MEMBER, max_size=8)


def tar_bytes(members: list[tuple[str, str, str, int, bytes]]) -> bytes:
    buf = io.BytesIO()
    types = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
             "fifo": tarfile.FIFOTYPE, "chr": tarfile.CHRTYPE, "file": tarfile.REGTYPE}
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for kind, name, target, mode, data in members:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = types[kind], mode, 1
            if kind in ("symlink", "hardlink"):
                info.linkname = target
            if kind == "file":
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return buf.getvalue()


def zip_bytes(members: list[tuple[str, str, str, int, bytes]]) -> bytes:
    buf = io.BytesIO()
    kinds = {"dir": stat.S_IFDIR, "symlink": stat.S_IFLNK, "hardlink": stat.S_IFREG,
             "fifo": stat.S_IFIFO, "chr": stat.S_IFCHR, "file": stat.S_IFREG}
    with zipfile.ZipFile(buf, "w") as zipped, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Duplicate name": wanted here
        for kind, name, target, mode, data in members:
            if not name:
                continue  # zipfile cannot write a member without a name
            info = zipfile.ZipInfo(name + ("/" if kind == "dir" else ""))
            info.create_system, info.external_attr = 3, (kinds[kind] | mode) << 16
            zipped.writestr(info, target.encode() if kind == "symlink" else data)
    return buf.getvalue()


def snapshot(root: Path) -> list[tuple[str, int]]:
    """Every entry under ``root`` (links not followed) with its type bits."""
    found = []
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            found.append((str(path.relative_to(root)), stat.S_IFMT(path.lstat().st_mode)))
    return sorted(found)


def check_unpack(archive_name: str, data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        box = Path(folder)
        (box / "decoy").mkdir()
        (box / "decoy" / "keep").write_text("keep")
        archive = box / archive_name
        archive.write_bytes(data)
        out = box / "deep" / "out"
        out.parent.mkdir()
        before = snapshot(box)
        try:
            unpack(archive, out)
        except UnsafeMemberError:
            pass
        else:
            top = os.path.realpath(out)
            for rel, kind in snapshot(out):
                assert kind in (stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK), rel
                path = out / rel
                if kind == stat.S_IFLNK:  # checked here on its own, not by the code under test
                    assert not os.readlink(path).startswith("/"), rel
                    assert os.path.realpath(path).startswith(top + os.sep), rel
                if kind == stat.S_IFREG:
                    assert path.stat().st_mode & 0o7777 in (0o644, 0o755), rel
        after = [entry for entry in snapshot(box) if not entry[0].startswith("deep/out")]
        assert after == before
        assert (box / "decoy" / "keep").read_text() == "keep"


@SETTINGS
@given(MEMBERS)
def test_a_tar_never_writes_outside_its_output(members: list[tuple[str, str, str, int,
                                                                   bytes]]) -> None:
    check_unpack("a.tar", tar_bytes(members))


@SETTINGS
@given(MEMBERS)
def test_a_zip_never_writes_outside_its_output(members: list[tuple[str, str, str, int,
                                                                   bytes]]) -> None:
    check_unpack("a.zip", zip_bytes(members))
