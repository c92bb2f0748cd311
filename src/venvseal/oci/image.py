"""OCI images of a closure: three deterministic layers, a config and a manifest.

The layers are ordered by how often they change:

1. the toolchain runtime: the files of the :class:`~venvseal.oci.runtime.RuntimeClosure`
   (the interpreter, its standard library, the shared libraries the closure loads), at
   their paths;
2. the third-party dependencies: the relinked deps store path the closure links to, at
   ``/venvseal/store/<relinked>/...``; it is the same for every app version built on the
   same dependencies and toolchain;
3. the app: the closure (its own files and its links into layer 2), and the fetched store
   paths it references.

The same inputs give the same bytes, hence the same digests (:mod:`venvseal.oci.layers`).
With a store, each layer is kept as a store path and found again by what it was made from
(:mod:`venvseal.oci.layercache`): after an app edit only the app layer, the config and the
manifest are written. Layers are compressed side by side, and the pieces of each on every
core (:mod:`venvseal.oci.compress`).
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from venvseal.assemble.textedit import expand
from venvseal.oci import layercache
from venvseal.oci.archive import canonical_json, write_archive, write_layout
from venvseal.oci.compress import Compression
from venvseal.oci.layercache import LayerSource, WrittenLayer
from venvseal.oci.layers import Layer, LayerPlan, plan_runtime, plan_store_paths, write_layer
from venvseal.oci.model import (
    OCI_MANIFEST,
    Blob,
    Digest,
    Reference,
    parse_reference,
    sha256_digest,
)
from venvseal.oci.runtime import RuntimeClosure, runtime_closure
from venvseal.recipe.model import Image, Recipe
from venvseal.store.core import STORE_DIR, Store, StorePath
from venvseal.toolchain.resolve import ResolvedToolchain
from venvseal.toolchain.sandbox import Sandbox

CREATED = "1970-01-01T00:00:01Z"
ARCHITECTURE = "amd64"  # venvseal's toolchains are x86_64 Debian roots
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_NAMES = ("toolchain runtime", "dependencies", "app")


@dataclass(frozen=True, kw_only=True, slots=True)
class ImagePaths:
    """The store paths an image holds: the closure, the relinked deps, the fetched paths."""

    closure: Path
    relinked: Path
    fetched: tuple[Path, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class ImageConfig:
    """What the image's configuration and layers follow from, besides its files."""

    spec: Image  # the recipe's [image]
    path: tuple[PurePosixPath, ...]  # [toolchain] path, after the closure's bin/
    fetch_names: tuple[str, ...]  # of [[fetch]], in the order of ImagePaths.fetched
    tag: Reference

    @classmethod
    def from_recipe(cls, rec: Recipe) -> ImageConfig:
        return cls(spec=rec.image, path=rec.toolchain.path,
                   fetch_names=tuple(f.name for f in rec.fetch), tag=default_tag(rec))

    @property
    def compression(self) -> Compression:
        return Compression(self.spec.compression)


def default_tag(rec: Recipe) -> Reference:
    """``<app name>:<app version>``, made into a valid docker name and tag."""
    repo = re.sub(r"[^a-z0-9]+", "-", rec.app.name.lower()).strip("-") or "app"
    tag = re.sub(r"[^A-Za-z0-9_.-]", "_", rec.app.version).lstrip(".-")[:128] or "latest"
    return parse_reference(f"{repo}:{tag}", require_host=False)


def placeholder_values(config: ImageConfig, paths: ImagePaths) -> dict[str, str]:
    """The values of @out@, @python@, @site-packages@ and @<fetch>@ in the image."""
    out = STORE_DIR / paths.closure.name
    values = {"out": str(out), "python": str(out / "bin" / "python")}
    site = sorted(paths.closure.glob("lib/python*/site-packages"))
    if site:
        values["site-packages"] = str(out / site[0].relative_to(paths.closure).as_posix())
    values.update({name: str(STORE_DIR / p.name)
                   for name, p in zip(config.fetch_names, paths.fetched, strict=False)})
    return values


def image_config(config: ImageConfig, values: Mapping[str, str],
                 layers: Sequence[Layer]) -> bytes:
    """The image configuration (image-spec config.md) from ``[image]``, canonical JSON.

    PATH is ``[image] path`` if given, else the closure's ``bin/`` and ``config.path`` (the
    ``toolchain.path`` folders the image has: RuntimeClosure.path).
    """
    spec = config.spec
    folders = ([expand(p, values) for p in spec.path] if spec.path is not None else
               [f"{values['out']}/bin", *map(str, config.path)])
    env = {"PATH": ":".join(folders)}
    env.update({k: expand(v, values) for k, v in spec.env.items()})
    doc: dict[str, Any] = {"Env": [f"{k}={v}" for k, v in
                                   sorted(env.items(), key=lambda kv: kv[0] != "PATH")]}
    if spec.entrypoint:
        doc["Entrypoint"] = [expand(a, values) for a in spec.entrypoint]
    if spec.cmd:
        doc["Cmd"] = [expand(a, values) for a in spec.cmd]
    if spec.user is not None:
        doc["User"] = spec.user
    if spec.workdir is not None:
        doc["WorkingDir"] = expand(spec.workdir, values)
    if spec.ports:
        doc["ExposedPorts"] = {p: {} for p in spec.ports}
    if spec.labels:
        doc["Labels"] = {k: expand(v, values) for k, v in spec.labels.items()}
    return canonical_json({
        "architecture": ARCHITECTURE, "os": "linux", "created": CREATED, "config": doc,
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created": CREATED, "created_by": f"venvseal image: {layer.what}",
                     "comment": f"{layer.entries} entries"} for layer in layers],
    })


def image_manifest(config: bytes, layers: Sequence[Layer]) -> bytes:
    """The OCI image manifest naming the config and the layers, canonical JSON."""
    return canonical_json({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256_digest(config),
                   "size": len(config)},
        "layers": [{"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size}
                   for layer in layers],
    })


@dataclass(frozen=True, slots=True)
class BuiltImage:
    """An image's blobs, ready to archive or push: layers in files, config and manifest."""

    layers: tuple[Layer, ...]
    layer_files: tuple[Path, ...]
    config: bytes
    manifest: bytes
    reused: tuple[bool, ...] = ()  # per layer: kept from an earlier image, not written now

    @property
    def manifest_digest(self) -> Digest:
        return sha256_digest(self.manifest)

    @property
    def config_digest(self) -> Digest:
        return sha256_digest(self.config)

    def blobs(self) -> list[Blob]:
        """The config and the layers, each once, in the manifest's order."""
        found = {self.config_digest: Blob(self.config_digest, len(self.config),
                                          partial(_open_bytes, self.config))}
        for layer, file in zip(self.layers, self.layer_files, strict=True):
            found.setdefault(layer.digest,
                             Blob(layer.digest, layer.size, partial(_open_file, file)))
        return list(found.values())


def _open_bytes(data: bytes) -> AbstractContextManager[BinaryIO]:
    return nullcontext(io.BytesIO(data))


def _open_file(path: Path) -> AbstractContextManager[BinaryIO]:
    return path.open("rb")


def layer_sources(paths: ImagePaths, runtime: RuntimeClosure, *,
                  store: Store | None = None) -> tuple[LayerSource, ...]:
    """The three layers: what each is made from, and how to plan it. A layer of paths that
    are not all valid in ``store`` is never kept: only a store path cannot change."""
    def refs(sources: Sequence[Path]) -> tuple[StorePath, ...] | None:
        valid = [StorePath(p) for p in sources if store is not None
                 and store.is_valid(StorePath(p))]
        return tuple(valid) if len(valid) == len(sources) else None

    toolchain, deps, app = LAYER_NAMES
    app_paths = (paths.closure, *paths.fetched)
    return (
        LayerSource(toolchain, "toolchain", layercache.runtime_identity(runtime), (),
                    partial(plan_runtime, toolchain, runtime)),
        LayerSource(deps, "deps", layercache.store_identity([paths.relinked]),
                    refs([paths.relinked]), partial(plan_store_paths, deps, [paths.relinked])),
        LayerSource(app, "app", layercache.store_identity(app_paths), refs(app_paths),
                    partial(plan_store_paths, app, app_paths)),
    )


def default_workers() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0))


def build_blobs(config: ImageConfig, paths: ImagePaths, runtime: RuntimeClosure,
                scratch: Path, *, store: Store | None = None,
                workers: int | None = None) -> BuiltImage:
    """The image's layers (kept in ``store`` when given, else written into ``scratch``),
    config and manifest. ``workers`` threads compress (default: every core)."""
    workers = workers or default_workers()
    compression = config.compression
    sources = layer_sources(paths, runtime, store=store)
    # zlib and zstd release the GIL: the layers compress side by side, each in pieces.
    stop = threading.Event()  # set when one layer fails or on Ctrl-C: the others end early
    with ThreadPoolExecutor(workers) as pieces, ThreadPoolExecutor(len(sources)) as layers:
        write = partial(_write, compression=compression, pool=pieces, workers=workers,
                        stop=stop)

        def obtain(i: int) -> WrittenLayer:
            if store is not None and sources[i].references is not None:
                return layercache.stored_layer(store, sources[i], compression, write)
            file = scratch / f"layer-{i}{compression.suffix}"
            return WrittenLayer(write(sources[i].plan(), file), file)

        try:
            written = tuple(layers.map(obtain, range(len(sources))))
        except BaseException:
            stop.set()
            raise
    made = tuple(w.layer for w in written)
    image_conf = image_config(config, placeholder_values(config, paths), made)
    return BuiltImage(made, tuple(w.file for w in written), image_conf,
                      image_manifest(image_conf, made), tuple(w.reused for w in written))


def _write(plan: LayerPlan, dest: Path, *, compression: Compression, pool: Executor,
           workers: int, stop: threading.Event) -> Layer:
    return write_layer(plan, dest, compression=compression, pool=pool, workers=workers,
                       stop=stop)


def archive_ledger(store: Store) -> Path:
    """Where the archives written with ``store`` are recorded, so the next archive at the
    same path writes only what changed (:mod:`venvseal.oci.archivefile`): a dot-folder in
    the store's root, which no store path, gc or debris cleaning ever names."""
    return store.root / ".archives"


def save(image: BuiltImage, out: Path, tag: Reference, *, ledger: Path | None = None) -> int:
    """Write ``image`` as an archive at ``out`` (atomically; after an archive written at
    ``out`` with the same ``ledger``, only what changed), or as an OCI image layout in
    ``out`` if it is a folder; its size."""
    layers = list(zip(image.layers, image.layer_files, strict=True))
    if out.is_dir():
        return write_layout(out, tag, manifest=image.manifest, config=image.config,
                            layers=layers)
    return write_archive(out, tag, manifest=image.manifest, config=image.config,
                         layers=layers, ledger=ledger)


def assemble_image(rec: Recipe, tc: ResolvedToolchain, paths: ImagePaths, *, store: Store,
                   runner: Sandbox, scratch: Path,
                   on_step: Callable[[str], None] = lambda _step: None,
                   on_note: Callable[[str], None] = lambda _note: None) -> BuiltImage:
    """The image of a built closure: its runtime closure found (``on_note`` hears what it
    left out and why), its layers kept in ``store``."""
    on_step(f"finding what {paths.closure.name} needs from the toolchain root at run time")
    runtime = runtime_closure(rec, tc, paths.closure, runner=runner,
                              references=(paths.relinked, *paths.fetched))
    for note in runtime.notes:
        on_note(note)
    on_step("writing the image's layers")
    config = ImageConfig.from_recipe(rec)
    if runtime.path is not None:  # the toolchain.path folders the image has
        config = dataclasses.replace(config, path=runtime.path)
    return build_blobs(config, paths, runtime, scratch, store=store)


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What :func:`build_image` wrote: digests, the layers and the archive's size."""

    manifest_digest: Digest
    config_digest: Digest
    layers: tuple[Layer, ...]
    size: int
    tag: Reference


def build_image(config: ImageConfig, paths: ImagePaths, runtime: RuntimeClosure, out: Path, *,
                tag: Reference | None = None, store: Store | None = None,
                workers: int | None = None) -> ImageInfo:
    """Write the image as an archive at ``out`` (atomically); what was written."""
    tag = tag or config.tag
    with tempfile.TemporaryDirectory(prefix="venvseal-image-") as tmp:
        image = build_blobs(config, paths, runtime, Path(tmp), store=store, workers=workers)
        size = save(image, out, tag,
                    ledger=archive_ledger(store) if store is not None else None)
    return ImageInfo(image.manifest_digest, image.config_digest, image.layers, size, tag)

