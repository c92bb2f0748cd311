"""OCI images: the layer split, determinism and tar/gzip hygiene on a small made-up closure;
then the bundled example's image, read by skopeo and run from its unpacked layers (slow).

The example's image is built once per test session (:func:`demo_image`); test_registry.py
pushes the same one.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shlex
import shutil
import subprocess
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from support import venvseal
from support.image import (
    CLOSURE,
    FETCH,
    RELINKED,
    DemoImage,
    demo_image,
    describe,
    fake_build,
    require_tool,
)

from venvseal.assemble.textedit import expand
from venvseal.errors import RecipeError
from venvseal.oci.archive import ArchiveError, open_archive
from venvseal.oci.compress import Compression
from venvseal.oci.image import ImageConfig, build_image, default_tag
from venvseal.oci.layers import LayerPlan, write_layer
from venvseal.oci.registry import parse_reference
from venvseal.recipe.files import load_recipe
from venvseal.recipe.parse import parse_recipe
from venvseal.store.core import STORE_DIR
from venvseal.toolchain.sandbox import Mount, Sandbox, SandboxSpec

# A small made-up closure -------------------------------------------------------------------










@dataclass(frozen=True)
class Archive:
    """An image archive's parts, read back."""

    raw: bytes
    index: dict[str, Any]
    manifest: dict[str, Any]
    config: dict[str, Any]
    layers: list[bytes]  # compressed
    docker: list[dict[str, Any]]

    @classmethod
    def read(cls, path: Path) -> Archive:
        raw = path.read_bytes()
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            def blob(digest: str) -> bytes:
                f = tar.extractfile("blobs/sha256/" + digest.removeprefix("sha256:"))
                assert f is not None
                return f.read()

            def doc(name: str) -> Any:
                f = tar.extractfile(name)
                assert f is not None
                return json.loads(f.read())

            index = doc("index.json")
            manifest = json.loads(blob(index["manifests"][0]["digest"]))
            return cls(raw, index, manifest, json.loads(blob(manifest["config"]["digest"])),
                       [blob(d["digest"]) for d in manifest["layers"]], doc("manifest.json"))

    def members(self, i: int) -> list[tarfile.TarInfo]:
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(self.layers[i]))) as tar:
            return tar.getmembers()


@pytest.fixture
def fake_image(tmp_path: Path) -> tuple[Archive, Path]:
    rec, result, runtime = fake_build(tmp_path / "a")
    out = tmp_path / "image.tar"
    info = build_image(rec, result, runtime, out)
    archive = Archive.read(out)
    assert info.manifest_digest == archive.index["manifests"][0]["digest"]
    assert info.size == len(archive.raw)
    return archive, tmp_path


def names(members: list[tarfile.TarInfo]) -> list[str]:
    return [m.name for m in members]


def test_layers_split_toolchain_dependencies_and_app(
        fake_image: tuple[Archive, Path]) -> None:
    archive, _ = fake_image
    store = f"venvseal/store/{CLOSURE}"
    site = f"{store}/lib/python3.11/site-packages"
    linked = f"venvseal/store/{RELINKED}"
    linked_site = f"{linked}/lib/python3.11/site-packages"
    toolchain, deps, app = (set(names(archive.members(i))) for i in range(3))
    assert toolchain == {"etc", "etc/passwd", "tmp", "usr", "usr/bin", "usr/bin/tool",
                         "usr/bin/tool-again", "usr/lib", "usr/lib/libx.so",
                         "usr/lib/libx.so.1"}
    assert deps == {"venvseal", "venvseal/store", linked, f"{linked}/lib",
                    f"{linked}/lib/python3.11", linked_site, f"{linked_site}/dep",
                    f"{linked_site}/dep/__init__.py", f"{linked_site}/dep/edited.py"}
    # The closure holds its edited file, and a link for the rest.
    assert {f"{site}/dep/edited.py", f"{site}/dep/__init__.py"} <= app
    assert {f"{store}/bin/app", f"{store}/bin/python", f"{store}/share/empty",
            f"venvseal/store/{FETCH}/data.txt"} <= app
    links = {m.name: m.linkname for m in archive.members(2) if m.issym()}
    assert links[f"{site}/dep/__init__.py"] == \
        f"../../../../../{RELINKED}/lib/python3.11/site-packages/dep/__init__.py"
    by_name = {m.name: m for m in archive.members(0)}
    assert by_name["usr/bin/tool-again"].islnk()
    assert by_name["usr/bin/tool-again"].linkname == "usr/bin/tool"
    assert by_name["usr/lib/libx.so"].issym() and by_name["usr/lib/libx.so"].linkname == "libx.so.1"
    assert by_name["tmp"].mode == 0o1777
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(archive.layers[0]))) as layer:
        f = layer.extractfile("etc/passwd")
        assert f is not None and f.read() == b"root:x:0:0::/:/bin/sh\n"


def test_entries_are_canonical_and_parents_come_first(fake_image: tuple[Archive, Path]) -> None:
    archive, _ = fake_image
    for i in range(3):
        members = archive.members(i)
        seen: set[str] = set()
        for m in members:
            parent = m.name.rsplit("/", 1)[0] if "/" in m.name else ""
            assert not parent or parent in seen, f"layer {i}: {m.name} before its folder"
            seen.add(m.name)
            assert (m.uid, m.gid, m.uname, m.gname, m.mtime) == (0, 0, "", "", 1), m.name
            if m.isdir() and m.name.startswith("venvseal"):
                assert m.mode == 0o755, m.name
            elif m.isfile() and m.name.startswith("venvseal"):
                assert m.mode in (0o444, 0o555), m.name
        assert names(members) == sorted(names(members), key=lambda n: n.split("/"))
    app = {m.name: m for m in archive.members(2)}
    assert app[f"venvseal/store/{CLOSURE}/bin/app"].mode == 0o555
    long_name = f"venvseal/store/{CLOSURE}/app/" + "long-name-" * 12 + ".py"
    assert long_name in app  # a PAX header carries it


def test_blobs_are_named_by_their_digests(fake_image: tuple[Archive, Path]) -> None:
    archive, _ = fake_image
    for layer, desc, diff_id in zip(archive.layers, archive.manifest["layers"],
                                    archive.config["rootfs"]["diff_ids"], strict=True):
        assert desc["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
        assert desc["digest"] == "sha256:" + hashlib.sha256(layer).hexdigest()
        assert desc["size"] == len(layer)
        assert diff_id == "sha256:" + hashlib.sha256(gzip.decompress(layer)).hexdigest()
        # gzip header (RFC 1952): no file name flag, time 0
        assert layer[3] & 0x08 == 0 and layer[4:8] == b"\0\0\0\0"
    assert archive.docker == [{
        "Config": "blobs/sha256/" + archive.manifest["config"]["digest"][7:],
        "Layers": ["blobs/sha256/" + d["digest"][7:] for d in archive.manifest["layers"]],
        "RepoTags": ["x-y:1.0_local"]}]
    assert archive.index["manifests"][0]["annotations"] == {
        "io.containerd.image.name": "x-y:1.0_local",
        "org.opencontainers.image.ref.name": "1.0_local"}
    with tarfile.open(fileobj=io.BytesIO(archive.raw)) as tar:
        assert json.loads(tar.extractfile("oci-layout").read()) == {  # type: ignore[union-attr]
            "imageLayoutVersion": "1.0.0"}
        assert all((m.uid, m.mtime) == (0, 1) for m in tar.getmembers())


def test_config_comes_from_the_image_table(fake_image: tuple[Archive, Path]) -> None:
    archive, _ = fake_image
    out = f"/venvseal/store/{CLOSURE}"
    assert archive.config["architecture"] == "amd64" and archive.config["os"] == "linux"
    assert archive.config["created"] == "1970-01-01T00:00:01Z"
    assert archive.config["config"] == {
        "Entrypoint": [f"{out}/bin/app"],
        "Cmd": ["serve", f"/venvseal/store/{FETCH}/data.txt"],
        "Env": [f"PATH={out}/bin:/usr/bin:/bin", "HOME=/tmp",
                f"SITE={out}/lib/python3.11/site-packages"],
        "User": "65534", "WorkingDir": out,
        "ExposedPorts": {"8000/tcp": {}, "53/udp": {}},
        "Labels": {"org.opencontainers.image.title": "x"}}
    assert [h["created_by"] for h in archive.config["history"]] == [
        "venvseal image: toolchain runtime", "venvseal image: dependencies",
        "venvseal image: app"]


def test_the_same_closure_in_another_store_gives_the_same_bytes(
        fake_image: tuple[Archive, Path]) -> None:
    archive, tmp_path = fake_image
    subprocess.run(["cp", "-a", str(tmp_path / "a"), str(tmp_path / "b")], check=True)
    rec, result, runtime = describe(tmp_path / "b")
    again = tmp_path / "elsewhere" / "other.tar"
    again.parent.mkdir()
    build_image(rec, result, runtime, again)
    assert again.read_bytes() == archive.raw


def test_an_empty_layer_is_still_a_valid_tar(tmp_path: Path) -> None:
    with ThreadPoolExecutor(1) as pool:
        layer = write_layer(LayerPlan("nothing", ()), tmp_path / "empty.tar.gz",
                            compression=Compression(), pool=pool, workers=1)
    data = (tmp_path / "empty.tar.gz").read_bytes()
    assert layer.size == len(data) and layer.entries == 0
    assert gzip.decompress(data) == b"\0" * tarfile.RECORDSIZE


def test_open_archive_streams_every_blob(fake_image: tuple[Archive, Path]) -> None:
    archive, tmp_path = fake_image
    with open_archive(tmp_path / "image.tar") as local:
        assert local.digest == archive.index["manifests"][0]["digest"]
        assert local.tag == "1.0_local"
        assert len(local.blobs) == 4
        for blob in local.blobs:
            with blob.open() as stream:
                data = stream.read()
            assert len(data) == blob.size
            assert blob.digest == "sha256:" + hashlib.sha256(data).hexdigest()


def tar_with(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize(("files", "message"), [
    (None, "not an image archive"),
    ({"hello.txt": b"hi"}, "no index.json in it, so it is no OCI image archive"),
    ({"index.json": b'{"manifests": []}'}, "index.json lists 0 manifests"),
    ({"index.json": json.dumps({"manifests": [{"digest": "sha256:" + "0" * 64}]}).encode()},
     "no blobs/sha256/" + "0" * 64),
])
def test_open_archive_refuses_what_is_no_image(tmp_path: Path, files: dict[str, bytes] | None,
                                               message: str) -> None:
    path = tmp_path / "bad.tar"
    if files is None:
        path.write_text("not a tar at all\n" * 100)
    else:
        tar_with(path, files)
    with pytest.raises(ArchiveError) as err, open_archive(path):
        pass
    assert message in str(err.value)
    push = venvseal("push", "--archive", path, "127.0.0.1:9/demo:1")
    assert push.code == 2, push.err
    assert message in push.error


@pytest.mark.parametrize(("argv", "message"), [
    (["--tag", "Bad Name:1"], "repository 'Bad Name' must be lower-case"),
    (["--tag", "demo:-1"], "tag '-1' must be"),
    (["-o", "TMP/missing/app.tar"], "is not a folder; create it or choose another -o FILE"),
])
def test_bad_image_arguments_fail_before_building(tmp_path: Path, argv: list[str],
                                                  message: str) -> None:
    recipe = tmp_path / "venvseal.toml"
    recipe.write_text('[app]\nname = "demo"\nversion = "1"\n')
    argv = [a.replace("TMP", str(tmp_path)) for a in argv]
    args = ["-o", str(tmp_path / "app.tar"), *argv] if argv[0] != "-o" else argv
    run = venvseal("image", "--store", tmp_path / "store", recipe, *args)
    assert run.code == 2, run.err
    assert message in run.error
    assert not (tmp_path / "store").exists() or not any(
        p for p in (tmp_path / "store").iterdir() if not p.name.startswith("."))


@pytest.mark.parametrize(("name", "version", "tag"), [
    ("demo", "1.0.0", "demo:1.0.0"),
    ("My_App", "2026.1+local", "my-app:2026.1_local"),
    ("a..b", "=1", "a-b:_1"),
])
def test_default_tag_is_a_valid_docker_name(tmp_path: Path, name: str, version: str,
                                            tag: str) -> None:
    rec = parse_recipe({"app": {"name": name, "version": version}}, file=tmp_path / "r.toml")
    assert str(default_tag(rec)) == tag
    assert parse_reference(tag, require_host=False) == default_tag(rec)


# The bundled example (slow) ----------------------------------------------------------------









@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoImage:
    return demo_image(tmp_path_factory)


@pytest.mark.slow
def test_image_command_reports_the_layers(demo: DemoImage) -> None:
    data = demo.made.json()
    assert data["ok"] is True and data["path"] == str(demo.archive)
    assert data["tag"] == "demo:1.0.0"
    assert [layer["what"] for layer in data["layers"]] == [
        "toolchain runtime", "dependencies", "app"]
    archive = Archive.read(demo.archive)
    assert data["digest"] == archive.index["manifests"][0]["digest"]
    assert [layer["digest"] for layer in data["layers"]] == [
        d["digest"] for d in archive.manifest["layers"]]
    assert data["size"] == demo.archive.stat().st_size
    assert demo.remade.code == 0, demo.remade.err
    assert demo.remade.json()["digest"] == demo.digest
    assert (demo.archive.parent / "again.tar").read_bytes() == archive.raw
    sizes = [layer["size"] for layer in data["layers"]]
    print(f"\ndemo image: {data['size'] / 2**20:.1f} MiB; layers "
          + ", ".join(f"{s / 2**20:.1f} MiB" for s in sizes))
    assert data["size"] < 100 * 2**20  # the runtime closure, not the host's whole root


@pytest.mark.slow
def test_image_from_another_store_is_byte_identical(demo: DemoImage, tmp_path: Path) -> None:
    other = demo.image(tmp_path / "other.tar", store=tmp_path / "store")
    assert other.code == 0, other.err
    assert other.json()["digest"] == demo.digest
    assert (tmp_path / "other.tar").read_bytes() == demo.archive.read_bytes()


@pytest.mark.slow
def test_an_app_edit_changes_only_the_app_layer(demo: DemoImage, tmp_path: Path) -> None:
    # The dependency layer is the relinked deps store path, which an app edit reuses: a
    # registry that has the last version's layers receives only the app layer again.
    project = tmp_path / "demo"
    shutil.copytree(demo.project, project, symlinks=True)
    app = tmp_path / "app.tar"  # the image before the edit, then after it, as a user does
    first = venvseal("image", "--store", demo.store, "--uv-cache", demo.cache, project,
                     "-o", app)
    assert first.code == 0, first.err
    inode = app.stat().st_ino
    with (project / "demo" / "urls.py").open("a") as f:
        f.write("# an app edit\n")
    edited = venvseal("--json", "image", "--store", demo.store, "--uv-cache", demo.cache,
                      project, "-o", tmp_path / "edited.tar")
    assert edited.code == 0, edited.err
    # Over the earlier archive: its prefix kept (the same file), the bytes a whole write's.
    again = venvseal("image", "--store", demo.store, "--uv-cache", demo.cache, project,
                     "-o", app)
    assert again.code == 0, again.err
    assert app.stat().st_ino == inode
    assert app.read_bytes() == (tmp_path / "edited.tar").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.tar", "demo", "edited.tar"]
    before = [layer["digest"] for layer in demo.made.json()["layers"]]
    after = [layer["digest"] for layer in edited.json()["layers"]]
    assert after[:2] == before[:2]
    assert after[2] != before[2]
    # The kept layers were taken from the store, not written again.
    assert [layer["reused"] for layer in edited.json()["layers"]] == [True, True, False]
    assert [layer["reused"] for layer in demo.remade.json()["layers"]] == [True, True, True]


@pytest.mark.slow
def test_skopeo_reads_the_archive(demo: DemoImage) -> None:
    skopeo = require_tool("skopeo", "skopeo")
    done = subprocess.run([skopeo, "inspect", f"oci-archive:{demo.archive}"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["Digest"] == demo.digest
    assert len(info["Layers"]) == 3
    done = subprocess.run([skopeo, "inspect", "--config", f"oci-archive:{demo.archive}"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    config = json.loads(done.stdout)["config"]
    out = f"/venvseal/store/{Path(demo.made.json()['closure']).name}"
    spec = load_recipe(demo.project).image
    values = {"out": out, "python": f"{out}/bin/python"}
    assert spec.entrypoint, "the example's image needs an entrypoint"
    assert config["Entrypoint"] == [expand(a, values) for a in spec.entrypoint]
    assert config.get("Cmd", []) == [expand(a, values) for a in spec.cmd]
    assert config.get("User") == spec.user
    assert config.get("WorkingDir") == (spec.workdir and expand(spec.workdir, values))
    assert config.get("ExposedPorts", {}) == {p: {} for p in spec.ports}
    assert config.get("Labels", {}) == {k: expand(v, values) for k, v in spec.labels.items()}
    # The toolchain's path folders the image has: /usr/local/bin holds nothing it needs.
    assert config["Env"][0] == f"PATH={out}/bin:/usr/bin:/bin"
    assert sorted(config["Env"][1:]) == sorted(f"{k}={expand(v, values)}"
                                               for k, v in spec.env.items())
    # docker-archive: reads manifest.json, as docker load does; it lists the diff_ids.
    done = subprocess.run([skopeo, "inspect", f"docker-archive:{demo.archive}"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    diff_ids = Archive.read(demo.archive).config["rootfs"]["diff_ids"]
    assert json.loads(done.stdout)["Layers"] == diff_ids


def unpack_layers(archive: Path, root: Path) -> dict[str, Any]:
    """Extract the layers in order with tar into ``root``; the image's config."""
    parts = Archive.read(archive)
    root.mkdir()
    for i, layer in enumerate(parts.layers):
        blob = root.parent / f"layer-{i}.tar.gz"
        blob.write_bytes(layer)
        subprocess.run(["tar", "-xzf", str(blob), "-C", str(root)], check=True)
    config: dict[str, Any] = parts.config["config"]
    return config


def shell_words(command: str, values: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """A verify command's leading NAME=VALUE words and its argv (the image has no shell)."""
    words = shlex.split(expand(command, values))
    env = {}
    while words and "=" in words[0] and words[0].split("=", 1)[0].isidentifier():
        name, value = words.pop(0).split("=", 1)
        env[name] = value
    return env, words


@pytest.mark.slow
def test_the_image_runs_from_its_layers_alone(demo: DemoImage, tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    config = unpack_layers(demo.archive, root)
    assert not (root / "usr/bin/gcc").exists()  # not the host's root: only what runs
    env = dict(e.split("=", 1) for e in config["Env"])
    out = f"/venvseal/store/{Path(demo.made.json()['closure']).name}"
    values = {"out": out, "python": f"{out}/bin/python"}
    sandbox = Sandbox.locate()

    def run(argv: list[str], extra: dict[str, str] | None = None) -> str:
        spec = SandboxSpec(root=root, mounts=(Mount(host=root / "venvseal/store",
                                                    target=STORE_DIR),),
                           env={**env, **(extra or {})}, cwd=PurePosixPath(out))
        done = sandbox.run(spec, argv, what="in the image", check=False)
        assert done.returncode == 0, f"{argv}:\n{done.output}"
        return done.output

    commands = load_recipe(demo.project).verify.commands
    assert len(commands) == 5
    for command in commands:  # the image has no shell: strings are split as sh would
        extra, argv = (shell_words(command, values) if isinstance(command, str)
                       else ({}, [expand(a, values) for a in command]))
        run(argv, extra)
    run([values["python"], "-c", "import django, psycopg, demo, demo_core, demo_api, "
         "demo_extras; assert psycopg.pq.__impl__ == 'c'"])
    assert run([values["out"] + "/bin/demo-api-info"]).strip() == (
        f"demo-api 0.2.0 on {out}/bin/python")
    run(config["Entrypoint"] + config.get("Cmd", []))  # the image's own command succeeds


@pytest.mark.parametrize(("value", "message"), [
    ("xz", "image.compression: 'xz' is not a layer compression; use \"gzip\""),
    ("GZIP", "image.compression: 'GZIP' is not a layer compression"),
    (1, "image.compression"),
])
def test_bad_compression_is_refused(tmp_path: Path, value: object, message: str) -> None:
    with pytest.raises(RecipeError) as err:
        parse_recipe({"app": {"name": "x", "version": "1"}, "image": {"compression": value}},
                     file=tmp_path / "venvseal.toml")
    assert message in str(err.value)


@pytest.mark.parametrize(("value", "media_type"), [
    (None, "application/vnd.oci.image.layer.v1.tar+gzip"),
    ("gzip", "application/vnd.oci.image.layer.v1.tar+gzip"),
    ("zstd", "application/vnd.oci.image.layer.v1.tar+zstd"),
])
def test_compression_names_the_media_type(tmp_path: Path, value: str | None,
                                          media_type: str) -> None:
    table = {} if value is None else {"compression": value}
    rec = parse_recipe({"app": {"name": "x", "version": "1"}, "image": table},
                       file=tmp_path / "venvseal.toml")
    assert ImageConfig.from_recipe(rec).compression.media_type == media_type
