"""OCI images of a closure: three deterministic layers in an OCI image layout archive.

The layers are ordered by how often they change:

1. the toolchain runtime: the files of the :class:`~venvseal.closure.RuntimeClosure` (the
   interpreter, its standard library, the shared libraries the closure loads), at their paths;
2. the third-party dependencies: the relinked deps store path the closure links to
   (relinked.py, forest.py), at ``/venvseal/store/<relinked>/...``; it is the same for every
   app version built on the same dependencies and toolchain;
3. the app: the closure (its own files and its links into layer 2), and the fetched store
   paths it references.

The same inputs give the same bytes, hence the same digests (image-spec's "reproducible"
advice, and what Nix's dockerTools does): entries sorted, uid/gid 0 without names, every time
:data:`MTIME` (the store's own time, 1 s after the epoch), gzip without a name or time at a
fixed level. File modes are the store's (0444/0555) and the toolchain's; folders under
``/venvseal`` are 0755 rather than the store's 0555, so extracting a later layer into them, or a
derived image's build step, works without root's override.

The archive holds ``oci-layout``, ``index.json`` and ``blobs/sha256/``, plus docker's
``manifest.json`` naming the same blobs, so ``skopeo``, ``podman load`` and ``docker load``
all read it. Layers are streamed through temp files and hashed while written.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import stat
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any, BinaryIO, Literal, cast

from venvseal.assemble.textedit import expand
from venvseal.errors import UsageError, VenvsealError
from venvseal.oci.registry import (
    OCI_INDEX,
    OCI_MANIFEST,
    Blob,
    Digest,
    Reference,
    parse_reference,
    sha256_digest,
)
from venvseal.store.core import CANONICAL_MTIME, STORE_DIR

if TYPE_CHECKING:
    from venvseal.oci.runtime import RuntimeClosure
    from venvseal.pipeline import BuildResult
    from venvseal.recipe.model import Recipe

MTIME = CANONICAL_MTIME  # every entry's time: the store's, 1970-01-01T00:00:01Z
CREATED = "1970-01-01T00:00:01Z"
GZIP_LEVEL = 6  # gzip's and Go's default: docker's own choice; 9 saves ~2% for 2x the time
STORE_DIR_MODE = 0o755
ARCHITECTURE = "amd64"  # venvseal's toolchains are x86_64 Debian roots
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
# Containers expect a world-writable /tmp; it is no file of the runtime closure.
SKELETON = ((PurePosixPath("/tmp"), 0o1777),)
LAYER_NAMES = ("toolchain runtime", "dependencies", "app")

EntryKind = Literal["file", "dir", "symlink", "hardlink"]


class ImageError(VenvsealError):
    """The image cannot be made from the closure, or an archive is not one we can read."""


class ArchiveError(UsageError):
    """A file given as an image archive is not one ``venvseal image`` wrote (exit 2)."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One tar entry: ``target`` is a symlink's target or the path a hard link repeats."""

    path: PurePosixPath  # absolute, in the image
    kind: EntryKind
    mode: int
    host: Path | None = None
    size: int = 0
    target: str = ""
    content: bytes | None = None  # a file venvseal generated (no host file)


@dataclass(frozen=True, slots=True)
class LayerPlan:
    """What goes into one layer, sorted with every folder before what it holds."""

    what: str
    entries: tuple[Entry, ...]


@dataclass(frozen=True, slots=True)
class Layer:
    """A written layer: compressed digest and size, and the uncompressed tar's digest."""

    what: str
    digest: Digest
    size: int
    diff_id: Digest
    entries: int


class _Planner:
    """Collects a layer's entries, adding the folders they need (0755 unless given)."""

    def __init__(self) -> None:
        self._entries: dict[PurePosixPath, Entry] = {}
        self._inodes: dict[PurePosixPath, tuple[int, int]] = {}

    def add(self, path: PurePosixPath, host: Path, *, keep_dir_mode: bool) -> None:
        """Add ``host`` (not followed if a symlink) as ``path``."""
        try:
            st = os.lstat(host)
        except OSError as err:
            raise ImageError(f"cannot read {host} for {path} in the image ({err.strerror}); "
                             "rebuild the closure or fix the toolchain root") from err
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISDIR(st.st_mode):
            entry = Entry(path, "dir", mode if keep_dir_mode else STORE_DIR_MODE)
        elif stat.S_ISLNK(st.st_mode):
            entry = Entry(path, "symlink", 0o777, target=os.readlink(host))
        elif stat.S_ISREG(st.st_mode):
            entry = Entry(path, "file", mode, host=host, size=st.st_size)
            if st.st_nlink > 1:
                self._inodes[path] = (st.st_dev, st.st_ino)
        else:
            raise ImageError(f"{host} ({path} in the image) is not a file, folder or symlink; "
                             "an image holds no device nodes, sockets or pipes")
        self.folder(path.parent)
        self._entries[path] = entry

    def generated(self, path: PurePosixPath, content: bytes) -> None:
        """Add a file venvseal wrote itself (mode 0644, as the root's /etc files are)."""
        self.folder(path.parent)
        self._entries[path] = Entry(path, "file", 0o644, size=len(content), content=content)

    def folder(self, path: PurePosixPath, mode: int = STORE_DIR_MODE) -> None:
        """Add folder ``path`` and its parents unless present."""
        while path != path.parent and path not in self._entries:
            self._entries[path] = Entry(path, "dir", mode)
            path, mode = path.parent, STORE_DIR_MODE

    def plan(self, what: str) -> LayerPlan:
        """The entries sorted parents first; a file seen again by inode becomes a hard link."""
        seen: dict[tuple[int, int], PurePosixPath] = {}
        entries = []
        for path in sorted(self._entries, key=lambda p: p.parts):
            entry = self._entries[path]
            inode = self._inodes.get(path)
            if inode is not None and inode in seen:
                entry = Entry(path, "hardlink", entry.mode, target=str(seen[inode]))
            elif inode is not None:
                seen[inode] = path
            entries.append(entry)
        return LayerPlan(what, tuple(entries))


def _tree(root: Path) -> Iterator[tuple[PurePosixPath, Path, bool]]:
    """(relative path, host path, is an empty folder) for everything under ``root``."""
    pending = [PurePosixPath()]
    while pending:
        rel = pending.pop()
        with os.scandir(root / rel) as it:
            children = sorted(it, key=lambda e: e.name)
        if not children and rel.parts:
            yield rel, root / rel, True
        for child in children:
            if child.is_dir(follow_symlinks=False):
                pending.append(rel / child.name)
            else:
                yield rel / child.name, Path(child.path), False


def plan_layers(runtime: RuntimeClosure, closure: Path, relinked: Path,
                fetched: Sequence[Path] = ()) -> tuple[LayerPlan, LayerPlan, LayerPlan]:
    """Split the runtime closure, the relinked deps, the closure and its fetched paths into
    the three layers."""
    toolchain, third_party, app = _Planner(), _Planner(), _Planner()
    for f in runtime.files:
        if f.content is not None:
            toolchain.generated(f.path, f.content)
        elif f.kind == "dir" and not os.path.lexists(f.host):
            toolchain.folder(f.path)  # the folder of a generated file, absent from the root
        else:
            toolchain.add(f.path, f.host, keep_dir_mode=True)
    for path, mode in SKELETON:
        toolchain.folder(path, mode)
    _store_path(third_party, relinked)
    for source in (closure, *fetched):
        _store_path(app, source)
    plans = (toolchain, third_party, app)
    return cast(tuple[LayerPlan, LayerPlan, LayerPlan],
                tuple(p.plan(what) for p, what in zip(plans, LAYER_NAMES, strict=True)))


def _store_path(planner: _Planner, source: Path) -> None:
    """Every entry of the store path ``source`` at its logical path."""
    top = STORE_DIR / source.name
    if not source.is_dir() or source.is_symlink():
        planner.add(top, source, keep_dir_mode=False)
        return
    planner.folder(top)
    for rel, host, empty in _tree(source):
        if empty:
            planner.folder(top / rel)
        else:
            planner.add(top / rel, host, keep_dir_mode=False)


# Writing ---------------------------------------------------------------------------------


class _Hashing:
    """A write-only stream that hashes and counts what passes through to ``sink``."""

    def __init__(self, sink: IO[bytes] | _Hashing | gzip.GzipFile) -> None:
        self._sink = sink
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        self._sink.write(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    @property
    def digest(self) -> Digest:
        return Digest("sha256:" + self.sha.hexdigest())


def _tarinfo(name: str, kind: EntryKind, mode: int, *, size: int = 0,
             target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
                 "hardlink": tarfile.LNKTYPE}[kind]
    info.mode, info.size, info.linkname, info.mtime = mode, size, target, MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _open_tar(stream: _Hashing) -> tarfile.TarFile:
    # PAX: long and non-ASCII names get an extended header, whose own fields are fixed.
    return tarfile.TarFile(fileobj=cast(IO[bytes], stream), mode="w", format=tarfile.PAX_FORMAT)


def write_layer(plan: LayerPlan, dest: Path) -> Layer:
    """Write ``plan`` as a gzip-compressed tar at ``dest``, hashing both forms on the way."""
    with dest.open("wb") as raw:
        packed = _Hashing(raw)
        with gzip.GzipFile(filename="", mode="wb", compresslevel=GZIP_LEVEL,
                           fileobj=cast(IO[bytes], packed), mtime=0) as gz:
            plain = _Hashing(gz)
            with _open_tar(plain) as tar:
                for entry in plan.entries:
                    _write_entry(tar, entry)
    return Layer(plan.what, packed.digest, packed.size, plain.digest, len(plan.entries))


def _write_entry(tar: tarfile.TarFile, e: Entry) -> None:
    target = e.target.lstrip("/") if e.kind == "hardlink" else e.target
    info = _tarinfo(str(e.path).lstrip("/"), e.kind, e.mode, size=e.size, target=target)
    if e.kind != "file":
        tar.addfile(info)
    elif e.content is not None:
        tar.addfile(info, io.BytesIO(e.content))
    else:
        assert e.host is not None
        try:
            with e.host.open("rb") as f:
                tar.addfile(info, f)
        except OSError as err:
            raise ImageError(f"cannot read {e.host} for {e.path} ({err}); did it change "
                             "while the image was written? run again") from err


def _json(doc: object) -> bytes:
    """Canonical JSON: sorted keys, no spaces; the same document gives the same digest."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def placeholder_values(rec: Recipe, closure: Path, fetched: Sequence[Path]) -> dict[str, str]:
    """The values of @out@, @python@, @site-packages@ and @<fetch>@ in the image."""
    out = STORE_DIR / closure.name
    values = {"out": str(out), "python": str(out / "bin" / "python")}
    site = sorted(closure.glob("lib/python*/site-packages"))
    if site:
        values["site-packages"] = str(out / site[0].relative_to(closure).as_posix())
    values.update({f.name: str(STORE_DIR / p.name)
                   for f, p in zip(rec.fetch, fetched, strict=False)})
    return values


def image_config(rec: Recipe, values: Mapping[str, str], layers: Sequence[Layer],
                 path: Sequence[PurePosixPath] | None = None) -> bytes:
    """The image configuration (image-spec config.md) from ``[image]``, canonical JSON.

    PATH is ``[image] path`` if given, else the closure's ``bin/`` and ``path``: the
    ``toolchain.path`` folders the image has (RuntimeClosure.path; all of them if None).
    """
    spec = rec.image
    folders = ([expand(p, values) for p in spec.path] if spec.path is not None else
               [f"{values['out']}/bin", *map(str, rec.toolchain.path if path is None else path)])
    env = {"PATH": ":".join(folders)}
    env.update({k: expand(v, values) for k, v in spec.env.items()})
    config: dict[str, Any] = {"Env": [f"{k}={v}" for k, v in
                                      sorted(env.items(), key=lambda kv: kv[0] != "PATH")]}
    if spec.entrypoint:
        config["Entrypoint"] = [expand(a, values) for a in spec.entrypoint]
    if spec.cmd:
        config["Cmd"] = [expand(a, values) for a in spec.cmd]
    if spec.user is not None:
        config["User"] = spec.user
    if spec.workdir is not None:
        config["WorkingDir"] = expand(spec.workdir, values)
    if spec.ports:
        config["ExposedPorts"] = {p: {} for p in spec.ports}
    if spec.labels:
        config["Labels"] = {k: expand(v, values) for k, v in spec.labels.items()}
    return _json({
        "architecture": ARCHITECTURE, "os": "linux", "created": CREATED, "config": config,
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created": CREATED, "created_by": f"venvseal image: {layer.what}",
                     "comment": f"{layer.entries} entries"} for layer in layers],
    })


def image_manifest(config: bytes, layers: Sequence[Layer]) -> bytes:
    """The OCI image manifest naming the config and the layers, canonical JSON."""
    return _json({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256_digest(config),
                   "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": layer.digest, "size": layer.size}
                   for layer in layers],
    })


@dataclass(frozen=True, slots=True)
class BuiltImage:
    """An image's blobs, ready to archive or push: layers in files, config and manifest."""

    layers: tuple[Layer, ...]
    layer_files: tuple[Path, ...]
    config: bytes
    manifest: bytes

    @property
    def manifest_digest(self) -> Digest:
        return sha256_digest(self.manifest)

    @property
    def config_digest(self) -> Digest:
        return sha256_digest(self.config)

    def blobs(self) -> list[Blob]:
        """The config and the layers, each once, in the manifest's order."""
        found = {self.config_digest: Blob(self.config_digest, len(self.config),
                                          _bytes_opener(self.config))}
        for layer, file in zip(self.layers, self.layer_files, strict=True):
            found.setdefault(layer.digest, Blob(layer.digest, layer.size, _file_opener(file)))
        return list(found.values())


Opener = Callable[[], AbstractContextManager[BinaryIO]]


def _bytes_opener(data: bytes) -> Opener:
    return lambda: nullcontext(io.BytesIO(data))


def _file_opener(path: Path) -> Opener:
    return lambda: path.open("rb")


def build_blobs(rec: Recipe, result: BuildResult, runtime: RuntimeClosure,
                scratch: Path) -> BuiltImage:
    """Write the three layers into ``scratch`` (compressed in parallel) and describe them."""
    fetched = list(result.fetched)
    plans = plan_layers(runtime, result.path, result.relinked, fetched)
    files = tuple(scratch / f"layer-{i}.tar.gz" for i in range(len(plans)))
    # zlib releases the GIL: the layers compress side by side, each a deterministic stream.
    with ThreadPoolExecutor(max_workers=len(plans)) as pool:
        layers = tuple(pool.map(write_layer, plans, files))
    config = image_config(rec, placeholder_values(rec, result.path, fetched), layers,
                          runtime.path)
    return BuiltImage(layers, files, config, image_manifest(config, layers))


# The archive -----------------------------------------------------------------------------


def default_tag(rec: Recipe) -> Reference:
    """``<app name>:<app version>``, made into a valid docker name and tag."""
    repo = re.sub(r"[^a-z0-9]+", "-", rec.app.name.lower()).strip("-") or "app"
    tag = re.sub(r"[^A-Za-z0-9_.-]", "_", rec.app.version).lstrip(".-")[:128] or "latest"
    return parse_reference(f"{repo}:{tag}", require_host=False)


def write_archive(image: BuiltImage, out: Path, tag: Reference) -> int:
    """Write the OCI layout archive (with docker's manifest.json) to ``out``; its size."""
    digest = image.manifest_digest
    index = _json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [{
        "mediaType": OCI_MANIFEST, "digest": digest, "size": len(image.manifest),
        "annotations": {"io.containerd.image.name": str(tag),
                        "org.opencontainers.image.ref.name": tag.tag or "latest"}}]})
    blobs = {digest: _bytes_opener(image.manifest)}
    blobs.update({b.digest: b.open for b in image.blobs()})
    docker = _json([{"Config": _blob_name(image.config_digest), "RepoTags": [str(tag)],
                     "Layers": [_blob_name(layer.digest) for layer in image.layers]}])
    sizes = {b.digest: b.size for b in image.blobs()} | {digest: len(image.manifest)}
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as raw, _open_tar(_Hashing(raw)) as tar:
            for folder in ("blobs", "blobs/sha256"):
                tar.addfile(_tarinfo(folder, "dir", 0o755))
            for d in sorted(blobs):
                with blobs[d]() as stream:
                    tar.addfile(_tarinfo(_blob_name(d), "file", 0o644, size=sizes[d]), stream)
            for name, data in (("index.json", index), ("manifest.json", docker),
                               ("oci-layout", _json({"imageLayoutVersion": "1.0.0"}))):
                tar.addfile(_tarinfo(name, "file", 0o644, size=len(data)), io.BytesIO(data))
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out.stat().st_size


def _blob_name(digest: str) -> str:
    return "blobs/sha256/" + digest.removeprefix("sha256:")


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What ``venvseal image`` wrote: digests, the layers and the archive's size."""

    manifest_digest: Digest
    config_digest: Digest
    layers: tuple[Layer, ...]
    size: int
    tag: Reference


def build_image(rec: Recipe, result: BuildResult, runtime: RuntimeClosure, out: Path, *,
                tag: Reference | None = None) -> ImageInfo:
    """Write the closure's image as an archive at ``out`` (atomically); what was written."""
    tag = tag or default_tag(rec)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        image = build_blobs(rec, result, runtime, Path(tmp))
        size = write_archive(image, out, tag)
    return ImageInfo(image.manifest_digest, image.config_digest, image.layers, size, tag)


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
        data = _member(tar, path, _blob_name(desc["digest"]))
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
    name = _blob_name(desc["digest"])
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
