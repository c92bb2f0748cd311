"""Layers on every core and kept in the store: the compressed bytes do not depend on the
number of workers (gzip in pieces, zstd), and a layer made before is found again by what it
was made from, never written twice; an app edit writes the app layer alone."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import subprocess
import tarfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest
import zstandard
from support.image import (
    edited_closure,
    fake_build,
    make_file,
    require_tool,
    stored_fake_build,
)

from venvseal.oci import image as image_module
from venvseal.oci.compress import CHUNK, ParallelGzip, ZstdCompressor
from venvseal.oci.image import build_image
from venvseal.oci.layers import ImageError, Layer, LayerPlan
from venvseal.store.core import Store


def mixed_data(size: int, seed: int = 1) -> bytes:
    """Half random (incompressible), half repetitive text, in 64 KiB runs."""
    rng = random.Random(seed)
    parts, total = [], 0
    while total < size:
        run = (rng.randbytes(1 << 16) if rng.random() < 0.5
               else (b"line %d of text\n" % rng.randrange(100) * 5000)[: 1 << 16])
        parts.append(run)
        total += len(run)
    return b"".join(parts)[:size]


def gzip_with(data: bytes, workers: int) -> bytes:
    out = io.BytesIO()
    with ThreadPoolExecutor(workers) as pool:
        writer = ParallelGzip(out, pool=pool, in_flight=2 * workers)
        for i in range(0, len(data), 10_000):  # odd write sizes: pieces cut at fixed offsets
            writer.write(data[i:i + 10_000])
        writer.close()
    return out.getvalue()


def test_gzip_pieces_give_the_same_bytes_with_any_number_of_workers() -> None:
    data = mixed_data(3 * CHUNK + 12_345)
    one, many = gzip_with(data, 1), gzip_with(data, 4)
    assert one == many
    assert gzip.decompress(one) == data
    assert one[:4] == b"\x1f\x8b\x08\x00" and one[4:8] == b"\0\0\0\0"  # no name, time 0
    # The dictionary carries each piece's context over: within 1% of one stream.
    assert len(one) < len(gzip.compress(data, 6)) * 1.01
    done = subprocess.run(["gzip", "-t"], input=one, check=False)  # gzip(1) itself reads it
    assert done.returncode == 0


def test_zstd_gives_the_same_bytes_with_any_number_of_workers() -> None:
    data = mixed_data(24 * 2**20, seed=2)  # several of libzstd's jobs

    def zstd_with(workers: int) -> bytes:
        out = io.BytesIO()
        writer = ZstdCompressor(out, workers=workers)
        for i in range(0, len(data), 1 << 20):
            writer.write(data[i:i + (1 << 20)])
        writer.close()
        return out.getvalue()

    one = zstd_with(1)
    assert zstd_with(3) == one
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(one))
    assert reader.read() == data


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "store") as opened:
        yield opened


@pytest.fixture
def written(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The layers written (by what they hold) from here on."""
    seen: list[str] = []
    real = image_module.write_layer

    def spy(plan: LayerPlan, dest: Path, **kwargs: object) -> Layer:
        seen.append(plan.what)
        return real(plan, dest, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(image_module, "write_layer", spy)
    return seen


BIG = {"lib/python3.11/site-packages/dep/data.bin": mixed_data(2 * CHUNK + 777, seed=3)}


def test_image_bytes_do_not_depend_on_the_number_of_workers(tmp_path: Path, store: Store) -> None:
    config, paths, runtime = stored_fake_build(tmp_path / "tree", store, deps_files=BIG)
    build_image(config, paths, runtime, tmp_path / "one.tar", workers=1)
    build_image(config, paths, runtime, tmp_path / "four.tar", workers=4)
    build_image(config, paths, runtime, tmp_path / "kept.tar", workers=3, store=store)
    assert (tmp_path / "one.tar").read_bytes() == (tmp_path / "four.tar").read_bytes()
    assert (tmp_path / "kept.tar").read_bytes() == (tmp_path / "one.tar").read_bytes()


def test_a_kept_layer_is_never_written_again(tmp_path: Path, store: Store,
                                             written: list[str]) -> None:
    config, paths, runtime = stored_fake_build(tmp_path / "tree", store, deps_files=BIG)
    first = build_image(config, paths, runtime, tmp_path / "first.tar", store=store)
    assert sorted(written) == ["app", "dependencies", "toolchain runtime"]
    layer_paths = sorted(p for p in store.paths() if p.name.endswith("-layer"))
    assert sorted(p.name.split("-", 1)[1] for p in layer_paths) == [
        "app-layer", "deps-layer", "toolchain-layer"]
    written.clear()
    again = build_image(config, paths, runtime, tmp_path / "again.tar", store=store)
    assert written == []
    assert again.manifest_digest == first.manifest_digest
    assert (tmp_path / "again.tar").read_bytes() == (tmp_path / "first.tar").read_bytes()
    # Each layer path references the store paths it was made from: gc keeps them together.
    deps_layer = next(p for p in layer_paths if p.name.endswith("-deps-layer"))
    info = store.query(deps_layer)
    assert info is not None and info.references == (paths.relinked,)
    doc = json.loads((deps_layer / "layer.json").read_bytes())
    blob = (deps_layer / "layer.tar.gz").read_bytes()
    assert doc["digest"] == "sha256:" + hashlib.sha256(blob).hexdigest() == first.layers[1].digest


def test_an_app_edit_writes_only_the_app_layer(tmp_path: Path, store: Store,
                                               written: list[str]) -> None:
    config, paths, runtime = stored_fake_build(tmp_path / "tree", store, deps_files=BIG)
    first = build_image(config, paths, runtime, tmp_path / "first.tar", store=store)
    written.clear()
    edited = edited_closure(store, paths, tmp_path, "4" * 32 + "-x-1.1")
    after = build_image(config, edited, runtime, tmp_path / "edited.tar", store=store)
    assert written == ["app"]
    assert after.layers[:2] == first.layers[:2] and after.layers[2] != first.layers[2]
    with tarfile.open(tmp_path / "edited.tar") as tar:
        names = tar.getnames()
    assert f"blobs/sha256/{after.layers[2].digest[7:]}" in names


def test_what_a_layer_is_made_from_decides_its_reuse(tmp_path: Path, store: Store,
                                                     written: list[str]) -> None:
    config, paths, runtime = stored_fake_build(tmp_path / "tree", store)
    build_image(config, paths, runtime, tmp_path / "first.tar", store=store)
    written.clear()
    tool = tmp_path / "tree/root/usr/lib/libx.so.1"  # the toolchain root changes
    make_file(tool, b"library, rebuilt")
    build_image(config, paths, runtime, tmp_path / "second.tar", store=store)
    assert written == ["toolchain runtime"]
    written.clear()
    zstd_config = replace(config, spec=replace(config.spec, compression="zstd"))
    build_image(zstd_config, paths, runtime, tmp_path / "zstd.tar", store=store)
    assert sorted(written) == ["app", "dependencies", "toolchain runtime"]


def test_layers_are_collected_by_gc_and_made_again(tmp_path: Path, store: Store,
                                                   written: list[str]) -> None:
    config, paths, runtime = stored_fake_build(tmp_path / "tree", store)
    first = build_image(config, paths, runtime, tmp_path / "first.tar", store=store)
    store.close()  # nothing in use: no root reaches the layers (nor the closure)
    with Store(store.root) as again:
        deleted = again.gc().deleted
        assert sum(p.name.endswith("-layer") for p in deleted) == 3
        assert not any(p.name.endswith("-layer") for p in again.paths())
        config, paths, runtime = stored_fake_build(tmp_path / "tree2", again)
        written.clear()
        remade = build_image(config, paths, runtime, tmp_path / "remade.tar", store=again)
    assert len(written) == 3
    assert remade.layers[1:] == first.layers[1:]  # the toolchain root is another folder


def test_zstd_layers_are_read_by_skopeo(tmp_path: Path, store: Store) -> None:
    config, paths, runtime = stored_fake_build(tmp_path / "tree", store, compression="zstd")
    info = build_image(config, paths, runtime, tmp_path / "zstd.tar", store=store)
    with tarfile.open(tmp_path / "zstd.tar") as tar:
        def blob(digest: str) -> bytes:
            f = tar.extractfile(f"blobs/sha256/{digest[7:]}")
            assert f is not None
            return f.read()

        manifest = json.loads(blob(info.manifest_digest))
        diff_ids = json.loads(blob(manifest["config"]["digest"]))["rootfs"]["diff_ids"]
        for desc, diff_id in zip(manifest["layers"], diff_ids, strict=True):
            assert desc["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd"
            plain = zstandard.ZstdDecompressor().stream_reader(
                io.BytesIO(blob(desc["digest"]))).read()
            assert diff_id == "sha256:" + hashlib.sha256(plain).hexdigest()
    skopeo = require_tool("skopeo", "skopeo")
    done = subprocess.run([skopeo, "copy", "-q", f"oci-archive:{tmp_path / 'zstd.tar'}",
                           f"oci:{tmp_path / 'layout'}:x"], capture_output=True, text=True,
                          check=False, env={**os.environ, "TMPDIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    index = json.loads((tmp_path / "layout/index.json").read_text())
    assert index["manifests"][0]["digest"] == info.manifest_digest


def test_paths_outside_the_store_are_never_kept(tmp_path: Path, store: Store,
                                                written: list[str]) -> None:
    config, paths, runtime = fake_build(tmp_path / "tree")  # a folder, not store paths
    for name in ("one.tar", "two.tar"):
        build_image(config, paths, runtime, tmp_path / name, store=store)
    assert sorted(written) == ["app", "app", "dependencies", "dependencies",
                               "toolchain runtime"]
    assert [p.name.split("-", 1)[1] for p in store.paths()] == ["toolchain-layer"]


def test_one_failing_layer_stops_the_others(tmp_path: Path, store: Store,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    many = {f"lib/python3.11/site-packages/dep/m{i}.py": b"x = 1\n" for i in range(5000)}
    config, paths, runtime = stored_fake_build(tmp_path / "tree", store, deps_files=many)
    (tmp_path / "tree/root/usr/lib/libx.so.1").unlink()  # the toolchain layer cannot be read
    ended: dict[str, str] = {}
    real = image_module.write_layer

    def spy(plan: LayerPlan, dest: Path, **kwargs: object) -> Layer:
        try:
            return real(plan, dest, **kwargs)  # type: ignore[arg-type]
        except Exception as err:
            ended[plan.what] = type(err).__name__
            raise

    monkeypatch.setattr(image_module, "write_layer", spy)
    with pytest.raises(ImageError, match=r"cannot read .*libx\.so\.1"):
        build_image(config, paths, runtime, tmp_path / "image.tar", store=store)
    assert ended.get("dependencies") == "Stopped"
    assert not (tmp_path / "image.tar").exists()
    assert not any(p.name.endswith("-deps-layer") for p in store.paths())
