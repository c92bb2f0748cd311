"""The image archive: an OCI image layout in one tar file, written atomically, and read back;
or the layout as a folder, whose blobs are hard links to the store's kept layers.

The archive holds ``oci-layout``, ``index.json`` and ``blobs/sha256/``, plus docker's
``manifest.json`` naming the same blobs, so ``skopeo``, ``podman load`` and ``docker load``
all read it. Blobs are copied in by the kernel (``copy_file_range``), never through Python.

It is written to ``.NAME.<pid>.tmp`` beside ``NAME`` and renamed into place. The temp file
is removed on any error or interrupt, and is flock'ed while written: a process killed
outright (SIGKILL) leaves it behind, and the next archive written to the same folder
removes every such file no live process holds. After an app edit, an archive venvseal
wrote at the same path keeps its unchanged layers and only its tail is written again
(:mod:`venvseal.oci.archivefile`).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from venvseal.errors import UsageError
from venvseal.oci.archivefile import Member, write_tar
from venvseal.oci.layers import ImageError, Layer
from venvseal.oci.model import OCI_INDEX, OCI_MANIFEST, Blob, Digest, Reference, sha256_digest


class ArchiveError(UsageError):
    """A file given as an image archive is not one ``venvseal image`` wrote (exit 2)."""


def canonical_json(doc: object) -> bytes:
    """Sorted keys, no spaces: the same document always gives the same digest."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def blob_name(digest: str) -> str:
    return "blobs/sha256/" + digest.removeprefix("sha256:")


def write_archive(out: Path, tag: Reference, *, manifest: bytes, config: bytes,
                  layers: Sequence[tuple[Layer, Path]], ledger: Path | None = None) -> int:
    """Write the OCI layout archive (with docker's manifest.json) to ``out``; its size.

    Members go from what changes least to what changes most, so that after an app edit the
    archive written before (recorded in ``ledger``) keeps all but its tail
    (:mod:`venvseal.oci.archivefile`): the layout's folders and ``oci-layout``, the layer
    blobs in the manifest's order (toolchain runtime, dependencies, app), then the config,
    the manifest, ``index.json`` and docker's ``manifest.json``.
    """
    config_digest = sha256_digest(config)
    members = [Member.folder("blobs"), Member.folder("blobs/sha256"),
               Member.of_bytes("oci-layout", canonical_json({"imageLayoutVersion": "1.0.0"}))]
    seen: set[str] = set()
    for layer, file in layers:
        if layer.digest not in seen:
            seen.add(layer.digest)
            members.append(Member(blob_name(layer.digest), layer.size, layer.digest, file))
    members.append(Member.of_bytes(blob_name(config_digest), config))
    members.append(Member.of_bytes(blob_name(sha256_digest(manifest)), manifest))
    docker = canonical_json([{"Config": blob_name(config_digest), "RepoTags": [str(tag)],
                              "Layers": [blob_name(layer.digest) for layer, _ in layers]}])
    members += [Member.of_bytes("index.json", _index(manifest, tag)),
                Member.of_bytes("manifest.json", docker)]
    return write_tar(out, members, ledger=ledger)


def _index(manifest: bytes, tag: Reference) -> bytes:
    """The layout's index.json: the one manifest, with its name as containerd reads it."""
    return canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [{
        "mediaType": OCI_MANIFEST, "digest": sha256_digest(manifest), "size": len(manifest),
        "annotations": {"io.containerd.image.name": str(tag),
                        "org.opencontainers.image.ref.name": tag.tag or "latest"}}]})


# A layout folder --------------------------------------------------------------------------


def write_layout(folder: Path, tag: Reference, *, manifest: bytes, config: bytes,
                 layers: Sequence[tuple[Layer, Path]]) -> int:
    """Write the image as an OCI image layout in ``folder`` (empty, or a layout written
    before); the bytes of its blobs.

    Blobs are hard links to the files given (the store's kept layers) where the file system
    allows, so nothing is copied; a copy otherwise. ``index.json`` is written last and
    atomically: it is what names the image (the folder holds that one image). Other blobs,
    an earlier image's, are removed after it.
    """
    names = set(os.listdir(folder))
    if names and "oci-layout" not in names:
        raise UsageError(f"{folder} is a folder but no OCI image layout; give an empty "
                         "folder, one 'venvseal image' wrote, or a FILE for an archive")
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # one writer at a time: each removes the other's blobs
        return _fill_layout(folder, tag, manifest=manifest, config=config, layers=layers)
    finally:
        os.close(fd)


def _fill_layout(folder: Path, tag: Reference, *, manifest: bytes, config: bytes,
                 layers: Sequence[tuple[Layer, Path]]) -> int:
    blobs_dir = folder / "blobs" / "sha256"
    blobs_dir.mkdir(parents=True, exist_ok=True)
    _remove_dead_temps(blobs_dir)
    blobs: dict[str, bytes | tuple[Path, int]] = {sha256_digest(manifest): manifest,
                                                  sha256_digest(config): config}
    for layer, file in layers:
        blobs.setdefault(layer.digest, (file, layer.size))
    for digest, data in blobs.items():
        _place_blob(blobs_dir / digest.removeprefix("sha256:"), data)
    write_small(folder / "oci-layout", canonical_json({"imageLayoutVersion": "1.0.0"}))
    write_small(folder / "index.json", _index(manifest, tag))
    keep = {d.removeprefix("sha256:") for d in blobs}
    for entry in os.scandir(blobs_dir):
        if entry.name not in keep and not entry.name.startswith("."):
            os.unlink(entry.path)
    return sum(len(d) if isinstance(d, bytes) else d[1] for d in blobs.values())


def _place_blob(dest: Path, data: bytes | tuple[Path, int]) -> None:
    """``dest`` holding ``data`` (content-addressed: one already there is kept)."""
    if dest.exists():
        return
    if isinstance(data, bytes):
        write_small(dest, data)
        return
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(data[0], tmp)
    except OSError:  # another file system, or hard links refused (fs.protected_hardlinks)
        shutil.copyfile(data[0], tmp)
    os.replace(tmp, dest)


def write_small(path: Path, data: bytes) -> None:
    """``path`` replaced by ``data`` atomically (temp named by this process, then rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _remove_dead_temps(folder: Path) -> None:
    """Remove ``.NAME.<pid>.tmp`` files whose process is gone (killed while writing)."""
    for entry in os.scandir(folder):
        pid = entry.name.rsplit(".", 2)[-2] if entry.name.endswith(".tmp") else ""
        if entry.name.startswith(".") and pid.isdigit() and not _alive(int(pid)):
            os.unlink(entry.path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


# Reading ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ArchiveImage:
    """An image read from an archive: its manifest and blobs (streamed from the archive)."""

    manifest: bytes
    media_type: str
    digest: Digest
    blobs: tuple[Blob, ...]
    tag: str | None


@contextmanager
def open_archive(path: Path) -> Iterator[ArchiveImage]:
    """Read an archive ``venvseal image`` wrote (any single-image OCI layout tar works)."""
    try:
        tar = tarfile.open(path, "r:")  # noqa: SIM115 (closed by the with below)
    except (OSError, tarfile.TarError) as err:
        raise ArchiveError(f"{path}: not an image archive ({err}); write one with "
                           "'venvseal image -o FILE'") from err
    with tar:
        index = json.loads(_member(tar, path, "index.json"))
        manifests = index.get("manifests") or []
        if len(manifests) != 1:
            raise ArchiveError(f"{path}: index.json lists {len(manifests)} manifests; "
                               "venvseal pushes archives of exactly one image")
        desc = manifests[0]
        data = _member(tar, path, blob_name(desc["digest"]))
        if sha256_digest(data) != desc["digest"]:
            raise ImageError(f"{path}: the manifest does not hash to {desc['digest']}; the "
                             "archive is damaged: write it again")
        manifest = json.loads(data)
        blobs = [_archive_blob(tar, path, d) for d in [manifest["config"], *manifest["layers"]]]
        unique = {b.digest: b for b in blobs}
        ref_name = (desc.get("annotations") or {}).get("org.opencontainers.image.ref.name")
        yield ArchiveImage(data, desc.get("mediaType", OCI_MANIFEST), Digest(desc["digest"]),
                           tuple(unique.values()), ref_name)


def _member(tar: tarfile.TarFile, path: Path, name: str) -> bytes:
    try:
        f = tar.extractfile(name)
    except KeyError:
        f = None
    if f is None:
        raise ArchiveError(f"{path}: no {name} in it, so it is no OCI image archive; write "
                           "one with 'venvseal image -o FILE'")
    with f:
        return f.read()


def _archive_blob(tar: tarfile.TarFile, path: Path, desc: Mapping[str, Any]) -> Blob:
    name = blob_name(desc["digest"])
    try:
        member = tar.getmember(name)
    except KeyError:
        raise ArchiveError(f"{path}: {name} is missing; the archive is incomplete") from None
    if member.size != desc["size"]:
        raise ImageError(f"{path}: {name} has {member.size} bytes, the manifest says "
                         f"{desc['size']}; the archive is damaged: write it again")

    def opener() -> AbstractContextManager[BinaryIO]:
        f = tar.extractfile(member)
        assert f is not None
        return cast(AbstractContextManager[BinaryIO], f)

    return Blob(Digest(desc["digest"]), int(desc["size"]), opener)

