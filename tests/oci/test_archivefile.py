"""An archive written again after an app edit: only its tail is written, the bytes are the
same as a full write's, and an old file that is not exactly the one venvseal wrote (changed,
truncated, replaced, a link, another user's, its record damaged) is written whole, never
written through. A writer killed in the middle leaves no partial file at the path."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.image import edited_closure, stored_fake_build

from venvseal.oci import archivefile
from venvseal.oci.archive import open_archive
from venvseal.oci.image import BuiltImage, archive_ledger, build_blobs, save
from venvseal.oci.layers import ImageError
from venvseal.oci.model import Reference
from venvseal.store.core import Store

TESTS = Path(__file__).parents[1]
EDIT = "4" * 32 + "-x-2"


@dataclass(frozen=True)
class Images:
    """A first image and the image after an app edit, their layers kept in a store."""

    tag: Reference
    first: BuiltImage
    edited: BuiltImage
    ledger: Path
    base: Path

    def save(self, image: BuiltImage, out: Path) -> int:
        return save(image, out, self.tag, ledger=self.ledger)

    def fresh(self, image: BuiltImage) -> bytes:
        """The archive of ``image`` written whole, without a ledger."""
        out = self.base / "fresh" / "app.tar"
        out.parent.mkdir(exist_ok=True)
        save(image, out, self.tag)
        return out.read_bytes()


@pytest.fixture
def images(tmp_path: Path) -> Iterator[Images]:
    with Store(tmp_path / "store") as store:
        config, paths, runtime = stored_fake_build(tmp_path / "tree", store)
        first = build_blobs(config, paths, runtime, tmp_path, store=store)
        edited = build_blobs(config, edited_closure(store, paths, tmp_path, EDIT), runtime,
                             tmp_path, store=store)
        (tmp_path / "out").mkdir()
        yield Images(config.tag, first, edited, archive_ledger(store), tmp_path)


@pytest.fixture
def copied(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The files whose bytes the archive writer copies (the layer blobs), in order."""
    seen: list[Path] = []
    real = archivefile._TarWriter._copy

    def spy(self: archivefile._TarWriter, source: Path, size: int) -> None:
        seen.append(source)
        real(self, source, size)

    monkeypatch.setattr(archivefile._TarWriter, "_copy", spy)
    return seen


def settle() -> None:
    """Let the file times' clock tick: a change within the tick of venvseal's own write
    leaves them as they are (see archivefile's docstring)."""
    time.sleep(0.02)


def test_after_an_app_edit_only_the_tail_is_written(images: Images,
                                                    copied: list[Path]) -> None:
    out = images.base / "out" / "app.tar"
    images.save(images.first, out)
    inode = out.stat().st_ino
    copied.clear()
    settle()
    size = images.save(images.edited, out)
    assert copied == [images.edited.layer_files[2]]  # the app layer alone
    assert out.stat().st_ino == inode  # the old file, its prefix kept
    assert out.read_bytes() == images.fresh(images.edited)
    assert size == out.stat().st_size == len(images.fresh(images.edited))
    assert os.listdir(out.parent) == ["app.tar"]  # nothing of ours beside the user's file
    with open_archive(out) as image:
        assert image.digest == images.edited.manifest_digest
    # Back to the first image: its app layer is the one that differs now.
    copied.clear()
    settle()
    images.save(images.first, out)
    assert copied == [images.first.layer_files[2]]
    assert out.read_bytes() == images.fresh(images.first)


def test_the_same_image_again_copies_nothing(images: Images, copied: list[Path]) -> None:
    out = images.base / "out" / "app.tar"
    images.save(images.first, out)
    copied.clear()
    settle()
    images.save(images.first, out)
    assert copied == []
    assert out.read_bytes() == images.fresh(images.first)


def test_the_layers_come_first_and_what_changes_last(images: Images) -> None:
    out = images.base / "out" / "app.tar"
    images.save(images.edited, out)
    names = subprocess.run(["tar", "-tf", out], capture_output=True, text=True,
                           check=True).stdout.split()
    image = images.edited
    assert names == ["blobs/", "blobs/sha256/", "oci-layout",
                     *(f"blobs/sha256/{layer.digest[7:]}" for layer in image.layers),
                     f"blobs/sha256/{image.config_digest[7:]}",
                     f"blobs/sha256/{image.manifest_digest[7:]}", "index.json", "manifest.json"]


def _flip_a_byte(out: Path) -> None:
    """A byte of the first layer changed in place, the modification time put back."""
    st = out.stat()
    with out.open("r+b") as f:
        f.seek(3000)
        byte = f.read(1)
        f.seek(3000)
        f.write(bytes([byte[0] ^ 1]))
    os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))


def _truncate(out: Path) -> None:
    os.truncate(out, out.stat().st_size - 1024)


def _truncate_and_pad(out: Path) -> None:
    """Cut in the middle of the first layer, then zeros to the old size and time."""
    st = out.stat()
    os.truncate(out, 2000)
    os.truncate(out, st.st_size)
    os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))


def _replace_by_a_copy(out: Path) -> None:
    """Another file (a new inode) with the same bytes and times."""
    shutil.copy2(out, out.with_name("copy"))
    os.replace(out.with_name("copy"), out)


def _fifo(out: Path) -> None:
    """A pipe at the path: opening it for reading would wait for a writer."""
    out.unlink()
    os.mkfifo(out)


def _chmod(out: Path) -> None:
    out.chmod(0o664)


def _chown(out: Path) -> None:
    os.chown(out, 4321, 4321)  # another user's (the tests run as root)


def _damage_the_record(ledger: Path) -> None:
    for record in ledger.glob("*.json"):
        record.write_text("{not json")


def _another_paths_record(ledger: Path) -> None:
    for record in ledger.glob("*.json"):
        doc = json.loads(record.read_text())
        doc["path"] = "/elsewhere/app.tar"
        record.write_text(json.dumps(doc))


def _drop_the_record(ledger: Path) -> None:
    shutil.rmtree(ledger)


TAMPERED: dict[str, Callable[[Path], None]] = {
    "changed in place, time put back": _flip_a_byte,
    "truncated": _truncate,
    "truncated and padded back": _truncate_and_pad,
    "replaced by a copy": _replace_by_a_copy,
    "replaced by a pipe": _fifo,
    "made group-writable": _chmod,
    "another user's": _chown,
}
RECORDS: dict[str, Callable[[Path], None]] = {
    "record damaged": _damage_the_record,
    "record of another path": _another_paths_record,
    "no record": _drop_the_record,
}


@pytest.mark.parametrize("tamper", TAMPERED.values(), ids=TAMPERED.keys())
def test_an_old_file_changed_since_is_written_whole(images: Images, copied: list[Path],
                                                     tamper: Callable[[Path], None]) -> None:
    out = images.base / "out" / "app.tar"
    images.save(images.first, out)
    settle()
    tamper(out)
    copied.clear()
    images.save(images.edited, out)
    assert copied == list(images.edited.layer_files)  # every layer written again
    assert out.read_bytes() == images.fresh(images.edited)
    st = out.stat()
    assert (st.st_uid, st.st_mode & 0o777, st.st_nlink) == (os.geteuid(), 0o644, 1)


@pytest.mark.parametrize("damage", RECORDS.values(), ids=RECORDS.keys())
def test_without_a_sound_record_the_archive_is_written_whole(
        images: Images, copied: list[Path], damage: Callable[[Path], None]) -> None:
    out = images.base / "out" / "app.tar"
    images.save(images.first, out)
    damage(images.ledger)
    copied.clear()
    images.save(images.edited, out)
    assert copied == list(images.edited.layer_files)
    assert out.read_bytes() == images.fresh(images.edited)
    copied.clear()
    settle()
    images.save(images.first, out)  # recorded again: the next write keeps the prefix
    assert copied == [images.first.layer_files[2]]


@pytest.mark.parametrize("link", ["symlink", "hard link"])
def test_a_link_is_never_written_through(images: Images, copied: list[Path],
                                         link: str) -> None:
    out = images.base / "out" / "app.tar"
    images.save(images.first, out)
    other = images.base / "other.tar"
    if link == "symlink":  # the path now leads to the user's other file
        os.replace(out, other)
        os.symlink(other, out)
    else:  # the archive is also the user's other file
        os.link(out, other)
    before = other.read_bytes()
    copied.clear()
    images.save(images.edited, out)
    assert copied == list(images.edited.layer_files)
    assert other.read_bytes() == before
    assert not out.is_symlink() and out.stat().st_ino != other.stat().st_ino
    assert out.read_bytes() == images.fresh(images.edited)


def test_an_old_file_being_read_is_left_to_its_reader(images: Images,
                                                      copied: list[Path]) -> None:
    out = images.base / "out" / "app.tar"
    images.save(images.first, out)
    before = out.read_bytes()
    settle()
    with out.open("rb") as f:  # open in the reader alone once started
        reader = subprocess.Popen(["sleep", "60"], stdin=f)
    try:
        copied.clear()
        images.save(images.edited, out)
        assert copied == list(images.edited.layer_files)
        assert os.readlink(f"/proc/{reader.pid}/fd/0").endswith("(deleted)")
        with open(f"/proc/{reader.pid}/fd/0", "rb") as old:
            assert old.read() == before
    finally:
        reader.kill()
        reader.wait()
    assert out.read_bytes() == images.fresh(images.edited)


def test_a_failed_tail_leaves_no_partial_file(images: Images) -> None:
    out = images.base / "out" / "app.tar"
    images.save(images.first, out)
    settle()
    app_layer = images.base / "short.tar.gz"
    app_layer.write_bytes(b"shorter than the layer")
    broken = BuiltImage(images.edited.layers, (*images.edited.layer_files[:2], app_layer),
                        images.edited.config, images.edited.manifest)
    with pytest.raises(ImageError, match="ended after 22 of"):
        images.save(broken, out)
    assert os.listdir(out.parent) == []  # the old archive went with the failed write
    images.save(images.edited, out)
    assert out.read_bytes() == images.fresh(images.edited)


# Writes the first image at argv[2], then the edited one over it, and stops for good while
# copying the app layer (the old file moved aside and cut), after saying so.
WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from support.image import edited_closure, stored_fake_build
    from venvseal.oci import archivefile
    from venvseal.oci.image import archive_ledger, build_blobs, save
    from venvseal.store.core import Store

    def stuck(self, source, size):
        print("copying", flush=True)
        time.sleep(600)

    out, base = Path(sys.argv[2]), Path(sys.argv[3])
    with Store(base / "store") as store:
        config, paths, runtime = stored_fake_build(base / "tree", store)
        first = build_blobs(config, paths, runtime, base, store=store)
        save(first, out, config.tag, ledger=archive_ledger(store))
        edited = build_blobs(config, edited_closure(store, paths, base, sys.argv[4]),
                             runtime, base, store=store)
        time.sleep(0.02)
        archivefile._TarWriter._copy = stuck
        save(edited, out, config.tag, ledger=archive_ledger(store))
""")


def test_a_writer_killed_in_the_tail_leaves_no_partial_file(tmp_path: Path) -> None:
    out = tmp_path / "out" / "app.tar"
    out.parent.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(TESTS), str(out), str(tmp_path),
                             EDIT], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "copying"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # The path held the old archive, then nothing: the old file is the killed writer's temp.
    assert os.listdir(out.parent) == [f".app.tar.{proc.pid}.tmp"]
    with Store(tmp_path / "store-2") as store:  # any image will do
        config, paths, runtime = stored_fake_build(tmp_path / "tree-2", store)
        image = build_blobs(config, paths, runtime, tmp_path, store=store)
        size = save(image, out, config.tag, ledger=archive_ledger(store))
    assert os.listdir(out.parent) == ["app.tar"]  # the stale temp file removed
    assert size == out.stat().st_size
    with open_archive(out) as found:
        assert found.digest == image.manifest_digest
