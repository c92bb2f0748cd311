"""Layer blobs kept in the store, found again by what they were made from.

A written layer is an input-addressed store path, ``<hash>-<what>-layer``, holding the
compressed blob (``layer.tar.gz`` or ``layer.tar.zst``) and ``layer.json`` (its digest, size,
diff-id, entry count and media type). The hash sums up :data:`LAYER_VERSION`, the layer's
name, what it is made from (:class:`LayerSource`) and the compression settings with the
library versions (:meth:`Compression.key`). An image whose layer path is valid takes the
blob as it is: nothing is read, planned or compressed again; only ``layer.json`` is read.

Store paths rather than a folder of their own, because the store already gives a cache
everything it needs: a path appears complete or not at all (built in ``.tmp``, renamed),
concurrent writers of the same layer wait for each other on its lock rather than both
compressing, crash debris is removed on the next open, ``venvseal verify`` re-hashes the
blobs, and a running image pins the paths it uses. A layer path references the store paths
it was made from, so it never outlives them, and ``venvseal gc`` deletes it like any other
path no root reaches: layers are cheap to make again, and no root keeps them.

What a layer is made from:

- the relinked deps layer and the app layer: the names of their store paths, which never
  change once valid (store paths are immutable, and the layer path references them);
- the toolchain layer: each runtime file's image path and kind, and its host file's
  device, inode, size, mode and modification time (the toolchain root may be a host folder
  that changes), or the hash of a generated file's content.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from venvseal.oci.compress import Compression
from venvseal.oci.layers import SKELETON, ImageError, Layer, LayerPlan
from venvseal.oci.model import Digest
from venvseal.oci.runtime import RuntimeClosure
from venvseal.store.core import Store, StorePath

LAYER_VERSION = "layer-2"  # bump whenever the same sources would give other bytes
DESCRIPTOR = "layer.json"

Writer = Callable[[LayerPlan, Path], Layer]


@dataclass(frozen=True, slots=True)
class LayerSource:
    """One layer to make: its name, what it is made from, and how to plan its entries."""

    what: str  # the history's words: "toolchain runtime", "dependencies", "app"
    name: str  # of its store path: "<name>-layer"
    identity: tuple[object, ...]  # JSON-able: what the layer's bytes follow from
    references: tuple[StorePath, ...] | None  # the store paths it is made from; None: not
    # all are valid store paths, so the layer is not kept
    plan: Callable[[], LayerPlan]

    def fingerprint(self, compression: Compression) -> str:
        doc = {"writer": LAYER_VERSION, "what": self.what, "from": list(self.identity),
               "compression": compression.key()}
        blob = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()


@dataclass(frozen=True, slots=True)
class WrittenLayer:
    """A layer and the file holding its compressed blob."""

    layer: Layer
    file: Path
    reused: bool = False  # kept from an earlier image, not written now


def runtime_identity(runtime: RuntimeClosure) -> tuple[object, ...]:
    """What the toolchain layer's bytes follow from (see the module docstring)."""
    items: list[object] = [[str(path), mode] for path, mode in SKELETON]
    for f in runtime.files:
        if f.content is not None:
            items.append([str(f.path), f.kind, hashlib.sha256(f.content).hexdigest()])
            continue
        try:
            st = os.lstat(f.host)
        except FileNotFoundError:
            items.append([str(f.path), f.kind, None])
            continue
        items.append([str(f.path), f.kind, str(f.host), st.st_dev, st.st_ino, st.st_size,
                      st.st_mode, st.st_mtime_ns])
    return tuple(items)


def store_identity(paths: Sequence[Path]) -> tuple[object, ...]:
    """What a layer of store paths follows from: their names."""
    return tuple(p.name for p in paths)


def stored_layer(store: Store, source: LayerSource, compression: Compression,
                 write: Writer) -> WrittenLayer:
    """The layer's store path, made with ``write`` only if it is not valid yet."""
    path = store.make_path(f"{source.name}-layer", source.fingerprint(compression))
    blob = "layer" + compression.suffix

    def produce(out: Path) -> None:
        out.mkdir()
        layer = write(source.plan(), out / blob)
        (out / DESCRIPTOR).write_bytes(json.dumps(asdict(layer), sort_keys=True).encode())

    reused = store.is_valid(path)
    store.add(path, produce, references=source.references or (),
              inputs={"layer": source.what, "compression": compression.key()})
    return replace(read_layer(path, blob), reused=reused)


def read_layer(path: Path, blob: str) -> WrittenLayer:
    """The layer kept at ``path``; its blob must have the size it was written with."""
    try:
        doc = json.loads((path / DESCRIPTOR).read_bytes())
        layer = Layer(str(doc["what"]), Digest(doc["digest"]), int(doc["size"]),
                      Digest(doc["diff_id"]), int(doc["entries"]), str(doc["media_type"]))
        size = (path / blob).stat().st_size
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ImageError(f"the layer kept at {path} cannot be read ({err}); run 'venvseal "
                         "verify' and 'venvseal gc', then make the image again") from err
    if size != layer.size:
        raise ImageError(f"{path / blob} has {size} bytes, {path / DESCRIPTOR} says "
                         f"{layer.size}; run 'venvseal verify' and 'venvseal gc', then make "
                         "the image again")
    return WrittenLayer(layer, path / blob)
