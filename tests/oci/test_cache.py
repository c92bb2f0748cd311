"""venvseal.cache: store paths pushed to a real registry (Debian's docker-registry) and
substituted into other stores, and every way a cached copy can be unusable.

Small made-up store paths cover the API; the slow test at the end simulates two machines
with two stores building the bundled example: the second fetches everything and builds
nothing, and a damaged blob in the registry's own storage makes a third build instead.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import free_port, store_state, venvseal
from support.demo import Demo, demo
from support.registry import Server, registry_server

from venvseal import fsutil
from venvseal.errors import StoreCorruptError, UsageError
from venvseal.hashes import Sha256
from venvseal.oci import registry
from venvseal.oci.artifact import (
    ANNOTATION_NAR_HASH,
    ANNOTATION_NAR_SIZE,
    ANNOTATION_PATH,
    ANNOTATION_REFERENCES,
    ARTIFACT_TYPE,
    NAR_MEDIA_TYPE,
    OciTarget,
    describe,
    manifest_for,
    path_annotations,
    tag_for,
)
from venvseal.oci.cache import push_paths
from venvseal.oci.registry import Blob, Digest, Registry
from venvseal.oci.substituter import OciSubstituter
from venvseal.store.core import PathInfo, Store, StorePath
from venvseal.store.nar import dump_nar, nar_hash

__all__ = ["demo"]  # a fixture, used by name

TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
HASH32 = "0123456789abcdfghijklmnpqrsvwxyz"  # 32 nix32 characters, as a path hash
LOGGER = "venvseal.cache"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with registry_server(tmp_path_factory.mktemp("cache-registry")) as running:
        yield running


def blob_file(workdir: Path, digest: str) -> Path:
    """Where docker-registry's filesystem driver keeps a blob's bytes."""
    hex_ = digest.removeprefix("sha256:")
    return workdir / "data" / "docker" / "registry" / "v2" / "blobs" / "sha256" / hex_[:2] / \
        hex_ / "data"


def flip_a_byte(file: Path) -> None:
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    file.write_bytes(bytes(data))


_repos = iter(range(1_000_000))


def target(server: Server) -> OciTarget:
    """A fresh repository per use: tests never see each other's artifacts."""
    return OciTarget(server.host, f"cache/t{next(_repos)}")


def make_path(store: Store, name: str, files: dict[str, bytes],
              references: tuple[StorePath, ...] = ()) -> PathInfo:
    """A small store path holding ``files`` (an executable for names ending in .sh)."""
    def produce(out: Path) -> None:
        out.mkdir()
        for rel, data in files.items():
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).write_bytes(data)
            if rel.endswith(".sh"):
                (out / rel).chmod(0o755)
        os.symlink("a/b", out / "link")

    path = store.make_path(name, json.dumps({k: v.hex() for k, v in files.items()}))
    return store.add(path, produce, references=references)


def must_not_build(out: Path) -> None:
    raise AssertionError(f"built {out.name} although a substituter has it")


# Names, annotations and URLs --------------------------------------------------------------


@pytest.mark.parametrize(("basename", "tag"), [
    (f"{HASH32}-demo-1.0.0", f"{HASH32}-demo-1.0.0"),
    (f"{HASH32}-a_b", f"{HASH32}-a__b"),
    (f"{HASH32}-c++", f"{HASH32}-c_p_p"),
    (f"{HASH32}-x?y=z", f"{HASH32}-x_qy_ez"),
    (f"{HASH32}-_p", f"{HASH32}-__p"),
])
def test_tags_escape_what_tags_cannot_hold(basename: str, tag: str) -> None:
    assert tag_for(basename) == tag
    assert TAG.fullmatch(tag_for(basename))


def test_tag_mapping_is_one_to_one_and_bounded() -> None:
    names = [f"{HASH32}-{n}" for n in ("a_p", "a+", "a__", "a_", "a?", "a_q", "a=", "a_e",
                                         "a.b", "a-b", "ab")]
    names += [f"{HASH32}-{'n' * 210}{c}" for c in "xyz+"]
    tags = [tag_for(n) for n in names]
    assert len(set(tags)) == len(names)
    assert all(TAG.fullmatch(t) for t in tags)
    long_tag = tag_for(names[-1])
    assert len(long_tag) == 128 and long_tag.startswith(f"{HASH32}-nnn")
    assert tag_for(names[-1]) == long_tag  # deterministic


def test_annotations_and_manifest_describe_the_path(tmp_path: Path) -> None:
    with Store(tmp_path / "a") as store:
        dep = make_path(store, "dep", {"x": b"x"})
        info = make_path(store, "top", {"run.sh": b"#!/bin/sh\n"}, (dep.path,))
    notes = path_annotations(info)
    assert notes == {ANNOTATION_PATH: info.path.name, ANNOTATION_NAR_HASH: info.nar_hash.sri,
                     ANNOTATION_NAR_SIZE: str(info.nar_size),
                     ANNOTATION_REFERENCES: dep.path.name}
    config = Blob(Digest("sha256:" + "1" * 64), 10, lambda: io.BytesIO(b""))
    layer = Blob(Digest("sha256:" + "2" * 64), 20, lambda: io.BytesIO(b""))
    data = manifest_for(info, config, layer)
    doc = json.loads(data)
    assert doc["artifactType"] == ARTIFACT_TYPE
    assert doc["mediaType"] == registry.OCI_MANIFEST
    assert [lay["mediaType"] for lay in doc["layers"]] == [NAR_MEDIA_TYPE]
    assert doc["annotations"] == notes
    found = describe(data)
    assert (found.basename, found.nar_hash, found.nar_size, found.references, found.layer,
            found.layer_size) == (info.path.name, info.nar_hash, info.nar_size,
                                  (dep.path.name,), layer.digest, 20)
    assert manifest_for(info, config, layer) == data  # deterministic bytes


@pytest.mark.parametrize("doc", [
    {"artifactType": "application/vnd.other"},
    {"artifactType": ARTIFACT_TYPE, "layers": [], "annotations": {}},
    {"artifactType": ARTIFACT_TYPE, "annotations": {},
     "layers": [{"mediaType": NAR_MEDIA_TYPE, "digest": "md5:x", "size": 1}]},
])
def test_foreign_manifests_are_not_described(doc: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        describe(json.dumps(doc).encode())


@pytest.mark.parametrize(("url", "expected"), [
    ("oci://127.0.0.1:5000/cache", OciTarget("127.0.0.1:5000", "cache")),
    ("oci://localhost/team/cache/", OciTarget("localhost", "team/cache")),
    ("oci://registry.example.org/a.b/c-d", OciTarget("registry.example.org", "a.b/c-d")),
])
def test_cache_urls_parse(url: str, expected: OciTarget) -> None:
    assert OciTarget.parse(url) == expected
    assert str(expected) == url.rstrip("/")


@pytest.mark.parametrize("url", ["127.0.0.1:5000/cache", "https://host.org/cache",
                                 "oci://host.org/Upper", "oci://host.org/cache:tag",
                                 "oci://cachehost/repo", "oci://host.org"])
def test_bad_cache_urls_are_usage_errors(url: str) -> None:
    with pytest.raises(UsageError, match="oci://"):
        OciTarget.parse(url)


# Push and substitute ------------------------------------------------------------------------


def test_paths_travel_between_stores_with_their_references(server: Server,
                                                            tmp_path: Path) -> None:
    where = target(server)
    client = Registry(server.host)
    with Store(tmp_path / "a") as a:
        dep = make_path(a, "dep", {"lib/data": os.urandom(3000)})
        top = make_path(a, "top", {"bin/run.sh": b"#!/bin/sh\necho hi\n"}, (dep.path,))
        pushed = push_paths(a, [top.path], where, client=client)
        assert [p.path for p in pushed] == [dep.path, top.path]  # references first
        assert all(p.uploaded and p.bytes_sent > 0 for p in pushed)
        assert all(p.tag == tag_for(p.path.name) for p in pushed)
        again = push_paths(a, [top.path, dep.path], where, client=client)
        assert [(p.uploaded, p.bytes_sent) for p in again] == [(False, 0), (False, 0)]
    with Store(tmp_path / "b", substituters=[OciSubstituter(where, client)]) as b:
        top_b = StorePath(b.root / top.path.name)
        got = b.realise(top_b, must_not_build)
        info = got.info
        assert got.how == "fetched"
        assert got.fetched == (StorePath(b.root / dep.path.name), top_b)
        assert (info.nar_hash, info.nar_size) == (top.nar_hash, top.nar_size)
        assert info.references == (StorePath(b.root / dep.path.name),)
        assert [r.ok for r in b.verify()] == [True, True]
        assert os.access(top_b / "bin" / "run.sh", os.X_OK)
        assert os.readlink(top_b / "link") == "a/b"
        assert (top_b / "bin" / "run.sh").stat().st_mtime == 1  # sealed by the store


def test_identical_content_is_uploaded_once(server: Server, tmp_path: Path) -> None:
    where = target(server)
    with Store(tmp_path / "a") as a:
        one = make_path(a, "one", {"f": b"same bytes"})
        two = make_path(a, "two", {"f": b"same bytes"})
        first, second = push_paths(a, [one.path, two.path], where, client=Registry(server.host))
    layer = blob_digest(server, where, one.path)
    assert layer == blob_digest(server, where, two.path)  # a NAR does not hold the name
    assert second.bytes_sent < first.bytes_sent  # its config only: the layer was there


def blob_digest(server: Server, where: OciTarget, path: StorePath) -> Digest:
    manifest = Registry(server.host).get_manifest(where.reference(tag_for(path.name)))
    return describe(manifest.data).layer


def test_substitute_for_fixed_outputs_and_valid_paths(server: Server, tmp_path: Path) -> None:
    where = target(server)
    with Store(tmp_path / "a") as a:
        made = make_path(a, "thing", {"f": b"fixed content"})
        fixed = a.make_fixed_path("thing-src", made.nar_hash)
        a.add(fixed, lambda out: fsutil.link_tree(made.path, out), expected=made.nar_hash)
        push_paths(a, [fixed], where, client=Registry(server.host))
    with Store(tmp_path / "b", substituters=[OciSubstituter(where, Registry(server.host))]) as b:
        path = StorePath(b.root / fixed.name)
        got = b.substitute(path, made.nar_hash)
        assert got is not None and got.info.nar_hash == made.nar_hash
        assert (got.how, got.fetched) == ("fetched", (path,))
        again = b.substitute(path, made.nar_hash)  # valid now: no second fetch
        assert again is not None and (again.info, again.how, again.fetched) == (
            got.info, "valid", ())
        assert b.substitute(StorePath(b.root / ("0" * 32 + "-absent")), None) is None


# Unusable cached copies: a warning naming the path, nothing added, the caller builds --------


@pytest.fixture
def pushed(server: Server, tmp_path: Path) -> tuple[OciTarget, PathInfo]:
    where = target(server)
    with Store(tmp_path / "a") as a:
        info = make_path(a, "victim", {"data": os.urandom(20_000), "run.sh": b"#!/bin/sh\n"})
        push_paths(a, [info.path], where, client=Registry(server.host))
    return where, info


def assert_falls_back(tmp_path: Path, where: OciTarget, info: PathInfo,
                      caplog: pytest.LogCaptureFixture, expected: Sha256 | None,
                      message: str) -> None:
    """A fresh store asks for ``info``'s path: a warning naming it, nothing stored."""
    root = tmp_path / "fresh"
    with Store(root, substituters=[OciSubstituter(where, Registry(where.registry))]) as b:
        before = store_state(root)
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            got = b.substitute(StorePath(b.root / info.path.name), expected)
        assert got is None
    assert store_state(root) == before
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert info.path.name in warnings[0]
    assert message in warnings[0]


def test_a_damaged_blob_in_the_registry_falls_back(server: Server, pushed: tuple[
        OciTarget, PathInfo], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    where, info = pushed
    flip_a_byte(blob_file(server.log.parent, blob_digest(server, where, info.path)))
    assert_falls_back(tmp_path, where, info, caplog, None, "hash to sha256:")


def push_layer(server: Server, where: OciTarget, info: PathInfo, layer_bytes: bytes,
               notes: dict[str, str] | None = None) -> None:
    """Push ``layer_bytes`` as ``info``'s NAR layer, with its own (or given) annotations."""
    layer = Blob(registry.sha256_digest(layer_bytes), len(layer_bytes),
                 lambda: io.BytesIO(layer_bytes))
    config_bytes = b"{}"
    config = Blob(registry.sha256_digest(config_bytes), 2, lambda: io.BytesIO(config_bytes))
    doc = json.loads(manifest_for(info, config, layer))
    doc["annotations"].update(notes or {})
    registry.push_image(Registry(server.host), where.reference(tag_for(info.path.name)),
                        json.dumps(doc).encode(), registry.OCI_MANIFEST, [config, layer])


def nar_of(tmp_path: Path, files: dict[str, bytes]) -> bytes:
    tree = tmp_path / "other"
    tree.mkdir()
    for rel, data in files.items():
        (tree / rel).write_bytes(data)
    chunks: list[bytes | memoryview] = []
    dump_nar(tree, chunks.append)
    return b"".join(bytes(c) for c in chunks)


def test_other_content_than_annotated_falls_back(server: Server, pushed: tuple[
        OciTarget, PathInfo], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    where, info = pushed
    push_layer(server, where, info, gzip.compress(nar_of(tmp_path, {"data": b"evil"})))
    assert_falls_back(tmp_path, where, info, caplog, None, "its NAR hashes to")


def test_a_malformed_nar_falls_back(server: Server, pushed: tuple[OciTarget, PathInfo],
                                    tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    where, info = pushed
    hostile = bytearray(nar_of(tmp_path, {"a": b"1", "b": b"2"}))
    hostile[hostile.index(b"\x01\x00\x00\x00\x00\x00\x00\x00b")+8] = ord(".")  # "b" -> "."
    push_layer(server, where, info, gzip.compress(bytes(hostile)))
    assert_falls_back(tmp_path, where, info, caplog, None, "not a plain file name")


def test_not_gzip_falls_back(server: Server, pushed: tuple[OciTarget, PathInfo],
                             tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    where, info = pushed
    push_layer(server, where, info, b"this is not gzip at all")
    assert_falls_back(tmp_path, where, info, caplog, None, info.path.name)


def test_a_declared_hash_other_than_annotated_falls_back(
        pushed: tuple[OciTarget, PathInfo], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    where, info = pushed
    declared = nar_hash(Path(__file__)).hash
    assert_falls_back(tmp_path, where, info, caplog, declared, declared.sri)


def test_a_tag_holding_another_path_falls_back(server: Server, pushed: tuple[
        OciTarget, PathInfo], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    where, info = pushed
    push_layer(server, where, info, gzip.compress(b""),
               {ANNOTATION_PATH: "1" * 32 + "-other"})
    assert_falls_back(tmp_path, where, info, caplog, None, "-other")


def test_references_in_a_loop_end_in_a_fallback(server: Server, tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    where = target(server)
    with Store(tmp_path / "a") as a:
        one, two = make_path(a, "one", {"f": b"1"}), make_path(a, "two", {"f": b"2"})
    for info, other in ((one, two), (two, one)):  # each claims to refer to the other
        push_layer(server, where, info, gzip.compress(b""),
                   {ANNOTATION_REFERENCES: other.path.name})
    root = tmp_path / "b"
    with Store(root, substituters=[OciSubstituter(where, Registry(server.host))]) as b:
        before = store_state(root)
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            assert b.substitute(StorePath(b.root / one.path.name)) is None
    assert store_state(root) == before
    assert caplog.records and one.path.name in caplog.records[-1].getMessage()


@pytest.mark.parametrize(("name", "link", "fetched"), [
    ("debian-sid-minbase-root", "/usr/sbin/rmt", True),  # meant inside the root
    ("debian-sid-minbase-root", "../../../etc", False),
    ("app-1.0", "/etc/shadow", False),
    ("app-1.0", "../../../etc", False),
    ("app-1.0", "lib/x", True),
])
def test_fetched_symlinks_stay_inside_the_path(server: Server, tmp_path: Path, name: str,
                                               link: str, fetched: bool,
                                               caplog: pytest.LogCaptureFixture) -> None:
    where = target(server)
    with Store(tmp_path / "a") as a:
        path = a.make_path(name, link)

        def produce(out: Path) -> None:
            (out / "etc").mkdir(parents=True)
            os.symlink(link, out / "etc" / "link")

        info = a.add(path, produce)
        push_paths(a, [info.path], where, client=Registry(server.host))
    with Store(tmp_path / "b", substituters=[OciSubstituter(where, Registry(server.host))]
               ) as b, caplog.at_level(logging.WARNING, logger=LOGGER):
        got = b.substitute(StorePath(b.root / info.path.name))
        assert (got is not None) is fetched
        assert os.listdir(b.root / ".tmp") == []
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [] if fetched else (len(warnings) == 1 and "is refused" in warnings[0])


def test_absent_paths_are_no_warning(server: Server, tmp_path: Path,
                                     caplog: pytest.LogCaptureFixture) -> None:
    with Store(tmp_path / "b", substituters=[OciSubstituter(target(server),
                                                            Registry(server.host))]) as b:
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            path = b.make_path("absent", "x")
            got = b.realise(path, lambda out: out.write_text("built\n"))
        assert got.path == path and (got.how, got.fetched) == ("built", ())
    assert caplog.records == []


def test_an_unreachable_registry_is_warned_about_once(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    where = OciTarget(f"127.0.0.1:{free_port()}", "cache")
    with Store(tmp_path / "b", substituters=[OciSubstituter(where, Registry(where.registry))]
               ) as b, caplog.at_level(logging.WARNING, logger=LOGGER):
        for name in ("one", "two"):
            b.realise(b.make_path(name, "x"), lambda out: out.write_text("built\n"))
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "unreachable" in warnings[0], warnings


def test_a_damaged_local_path_is_not_pushed(server: Server, tmp_path: Path) -> None:
    with Store(tmp_path / "a") as a:
        info = make_path(a, "damaged", {"f": b"good"})
        (info.path / "f").chmod(0o644)
        (info.path / "f").write_bytes(b"evil")
        with pytest.raises(StoreCorruptError, match=info.path.name):
            push_paths(a, [info.path], target(server), client=Registry(server.host))


def test_cli_flags_and_environment_choose_the_substituters(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from venvseal.cli.commands import open_store
    from venvseal.cli.main import build_parser

    parse = build_parser().parse_args
    flags = parse(["build", "--store", str(tmp_path), "--substituter", "oci://localhost/a",
                   "--substituter", "oci://h.org/b"])
    monkeypatch.setenv("VENVSEAL_SUBSTITUTERS", "oci://127.0.0.1:1/env  oci://localhost/e2")
    with open_store(flags) as store:
        assert [repr(s) for s in store.substituters] == [
            "OciSubstituter(oci://localhost/a)", "OciSubstituter(oci://h.org/b)"]
    with open_store(parse(["build", "--store", str(tmp_path)])) as store:
        assert [repr(s) for s in store.substituters] == [
            "OciSubstituter(oci://127.0.0.1:1/env)", "OciSubstituter(oci://localhost/e2)"]
    monkeypatch.setenv("VENVSEAL_SUBSTITUTERS", "http://nope")
    bad = venvseal("verify", "--store", tmp_path)
    assert bad.code == 2 and "oci://HOST[:PORT]/REPO" in bad.error


@pytest.mark.parametrize(("flags", "env", "seconds"), [
    ([], "", 300.0),
    (["--cache-timeout", "2.5"], "", 2.5),
    ([], "45", 45.0),
    (["--cache-timeout", "7"], "45", 7.0),
])
def test_the_cache_timeout_comes_from_the_flag_or_the_environment(
        flags: list[str], env: str, seconds: float, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    from venvseal.cli.commands import open_store
    from venvseal.cli.main import build_parser

    monkeypatch.setenv("VENVSEAL_CACHE_TIMEOUT", env)
    args = build_parser().parse_args(["build", "--store", str(tmp_path), "--substituter",
                                      "oci://localhost/a", *flags])
    with open_store(args) as store:
        client = store.substituters[0].client  # type: ignore[attr-defined]
        assert client.clock.seconds == seconds
        assert client.timeout == min(60.0, seconds)


@pytest.mark.parametrize(("flags", "env", "message"), [
    (["--cache-timeout", "0"], "", "'0' is not a number of seconds"),
    (["--cache-timeout", "inf"], "", "'inf' is not a number of seconds"),
    (["--cache-timeout", "soon"], "", "'soon' is not a number of seconds"),
    ([], "-3", "$VENVSEAL_CACHE_TIMEOUT: '-3' is not a number of seconds"),
])
def test_a_bad_cache_timeout_is_a_usage_error(flags: list[str], env: str, message: str,
                                              monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    monkeypatch.setenv("VENVSEAL_CACHE_TIMEOUT", env)
    monkeypatch.setenv("VENVSEAL_SUBSTITUTERS", "oci://localhost/a")
    run = venvseal("build", "--store", tmp_path, *flags, tmp_path) if flags else \
        venvseal("verify", "--store", tmp_path)
    assert run.code == 2 and message in run.error, run.err


# Two machines: the bundled example ------------------------------------------------------------

BUILD_TOOLS = ("bwrap", "uv", "debootstrap", "git", "patchelf")


def commands_run(stderr: str) -> list[str]:
    """The commands a -v run logged (``$ argv``)."""
    return [line for line in stderr.splitlines() if line.startswith("$ ")]


@pytest.mark.slow
def test_a_second_machine_fetches_instead_of_building(demo: Demo, server: Server,
                                                      tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    assert demo.first.code == 0, demo.first.err
    url = f"oci://{server.host}/demo/cache"
    push = venvseal("--json", "cache", "push", "--to", url, "--store", demo.store,
                    "--uv-cache", demo.cache, demo.project)
    assert push.code == 0, push.err
    data = demo.first.json()
    # The closure references the relinked deps: pushed (and fetched) with it. The members'
    # wheels are no reference: a cache hit does not need them.
    expected = {data["path"], data["deps"], data["relinked"], *data["fetched"]}
    assert {p["path"] for p in push.json()["paths"]} == expected
    assert all(p["uploaded"] for p in push.json()["paths"])

    start = time.monotonic()
    b = venvseal("-v", "--json", "build", "--store", tmp_path / "b", "--uv-cache",
                 tmp_path / "b-uv-cache", "--substituter", url, demo.project)
    seconds = time.monotonic() - start
    print(f"\ncache hit: B's build took {seconds:.2f} s; A's first build {demo.seconds:.1f} s")
    assert b.code == 0, b.err
    ran = commands_run(b.err)
    assert not [c for c in ran if any(tool in c for tool in BUILD_TOOLS)], "\n".join(ran)
    assert ran == [], "B ran commands:\n" + "\n".join(ran)
    closure_b = Path(b.json()["path"])
    assert closure_b.name == demo.path.name
    assert closure_b.parent == (tmp_path / "b").resolve()
    # B needs no deps path: the relinked deps (fetched with the closure) hold its files.
    assert sorted(Path(p).name for p in b.json()["substituted"]) == sorted(
        Path(p).name for p in expected - {data["deps"]})
    assert not Path(tmp_path / "b" / Path(data["deps"]).name).exists()
    assert nar_hash(closure_b).hash == nar_hash(demo.path).hash
    with Store(demo.store) as a, Store(tmp_path / "b") as store_b:
        info_a, info_b = a.query(StorePath(demo.path)), store_b.query(StorePath(closure_b))
        assert info_a is not None and info_b is not None
        assert (info_b.nar_hash, info_b.nar_size) == (info_a.nar_hash, info_a.nar_size)
        assert [r.name for r in info_b.references] == [r.name for r in info_a.references]

    # The closure's NAR blob is damaged on the registry's disk: C notices and builds it.
    manifest = Registry(server.host).get_manifest(
        OciTarget.parse(url).reference(tag_for(demo.path.name)))
    flip_a_byte(blob_file(server.log.parent, describe(manifest.data).layer))
    c = venvseal("-v", "--json", "build", "--store", tmp_path / "c", "--uv-cache", demo.cache,
                 "--substituter", url, demo.project)
    assert c.code == 0, c.err
    warnings = [line for line in c.err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and demo.path.name in warnings[0], c.err
    assert c.json()["reused"] is False
    assert sorted(Path(p).name for p in c.json()["substituted"]) == sorted(
        Path(p).name for p in (data["deps"], data["relinked"], *data["fetched"]))
    assert any("bwrap" in line for line in commands_run(c.err))  # it did assemble
    assert nar_hash(c.json()["path"]).hash == nar_hash(demo.path).hash

    # A cache without the paths: D builds everything (substituters from the environment).
    monkeypatch.setenv("VENVSEAL_SUBSTITUTERS", f"oci://{server.host}/demo/empty")
    start = time.monotonic()
    d = venvseal("--json", "build", "--store", tmp_path / "d", "--uv-cache", demo.cache,
                 demo.project)
    print(f"cache miss: D's build (fresh store, warm uv cache) took "
          f"{time.monotonic() - start:.2f} s")
    assert d.code == 0, d.err
    assert d.json()["substituted"] == []
    assert d.json()["reused"] is False and d.json()["deps_reused"] is False
    assert "warning" not in d.err
    assert nar_hash(d.json()["path"]).hash == nar_hash(demo.path).hash
