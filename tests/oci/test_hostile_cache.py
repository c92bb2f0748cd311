"""A hostile cache, through the real CLI: every crafted answer ends in a warning and a build.

A small app (six, no member) is built once; its store, without the closure, is the template
each row copies. Each row of :data:`CASES` scripts the tests' own registry on 127.0.0.1
(:mod:`support.hostile_registry`) to answer the closure's tag with something hostile:
oversized, endless and slow blobs, a slow manifest, JSON nested 100,000 deep, an
``Infinity`` NAR size, a reference chain 400 deep, NARs with absolute and escaping symlinks,
and a redirect to another port that would carry the credentials along. Each row checks:

- the build succeeds (it built the closure instead), with exactly one ``warning:`` line,
  which names the closure, and no traceback or internal error;
- ``venvseal verify`` finds the store clean and ``.tmp/`` is empty;
- a decoy tree outside the store, which the symlinks point at, is unchanged (hashed);
- no credential reached another host or port, or any output.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import venvseal
from support.apps import make_app
from support.hostile_registry import (
    Answer,
    HostileRegistry,
    Script,
    artifact,
    endless,
    gz,
    hostile_registry,
    not_found,
    write_docker_config,
)
from support.nars import Link, file_header, nar

from venvseal import fsutil
from venvseal.hashes import Sha256
from venvseal.oci.artifact import ANNOTATION_NAR_SIZE, ANNOTATION_REFERENCES, tag_for
from venvseal.store.core import PathInfo, StorePath

pytestmark = pytest.mark.slow

USER, PASSWORD = "mallory-victim", "pa55-" + "q7w8e9" * 3
TIMEOUT = 2  # --cache-timeout of every row: the slow rows take about this long
CHAIN_HASH = "0123456789abcdfghijklmnpqrsvwxyz"


@dataclass(frozen=True)
class Built:
    project: Path
    cache: Path
    template: Path  # the store, without the closure
    closure: str  # its basename
    references: tuple[str, ...]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("hostile-cache")
    cache = root / "uv-cache"
    project = make_app(root / "app", cache, name="hostile", dependencies=("six==1.16.0",),
                       member=False)
    store = root / "template"
    run = venvseal("--json", "--store", store, "build", "--update-hash", "--uv-cache", cache,
                   project)
    assert run.code == 0, run.err
    closure = Path(run.json()["path"])
    meta = json.loads((store / ".meta" / f"{closure.name}.json").read_text())
    fsutil.remove_tree(closure)  # the row's build must ask the cache for it
    (store / ".meta" / f"{closure.name}.json").unlink()
    return Built(project, cache, store, closure.name,
                 tuple(Path(r).name for r in meta["references"]))


def tree_state(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every entry under ``root``: its mode and its bytes (or link target)."""
    state = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        data = (os.readlink(path).encode() if stat.S_ISLNK(st.st_mode)
                else path.read_bytes() if stat.S_ISREG(st.st_mode) else b"")
        state[str(path.relative_to(root))] = (st.st_mode, data)
    return state


@dataclass(frozen=True)
class Row:
    """What a row's script needs: the closure's basename, its references, the decoy."""

    name: str
    references: tuple[str, ...]
    decoy: Path

    def info(self, data: bytes) -> PathInfo:
        """The PathInfo an honest cache would describe for a NAR ``data``."""
        return PathInfo(StorePath(Path("/s") / self.name), Sha256(hashlib.sha256(data).digest()),
                        len(data), tuple(StorePath(Path("/s") / r) for r in self.references))

    def serve(self, manifest: bytes, layer: bytes | None = None, *,
              blob: Answer | None = None, manifest_drip: float = 0.0) -> Script:
        """Answer the closure's tag with ``manifest``, its layer with ``blob`` (or ``layer``)."""
        tag = tag_for(self.name)

        def script(method: str, path: str, _headers: dict[str, str]) -> Answer:
            if path.endswith(f"/manifests/{tag}"):
                return Answer(200, manifest, {"Content-Type": "application/vnd.oci.image."
                                              "manifest.v1+json"}, drip=manifest_drip)
            if "/blobs/" in path and method == "GET":
                return blob or Answer(200, layer or b"")
            return not_found(method, path, _headers)

        return script

    def honest(self, data: bytes, notes: dict[str, str] | None = None, **kw: object) -> Script:
        """Serve the NAR ``data`` as the closure, described as venvseal would (with ``notes``)."""
        manifest, layer = artifact(self.info(data), gz(data), notes)
        return self.serve(manifest, layer, **kw)  # type: ignore[arg-type]


def sri(data: bytes) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(data).digest()).decode()


def oversized_nar(row: Row, _: HostileRegistry) -> Script:
    # A NAR of one 4 GiB file of zeros, 8 MiB of them sent (a 8 KiB blob), annotated 1 KiB.
    data = file_header(4 << 30) + bytes(8 << 20)
    manifest, layer = artifact(row.info(b"x"), gz(data), {ANNOTATION_NAR_SIZE: "1024"})
    return row.serve(manifest, layer)


def sized(row: Row, blob: Answer) -> Script:
    """A manifest whose layer descriptor says 1000 bytes; the blob answer is ``blob``."""
    manifest, _ = artifact(row.info(b"x"), bytes(1000))
    return row.serve(manifest, blob=blob)


def chain(row: Row, _: HostileRegistry) -> Script:
    names = [f"{CHAIN_HASH}-chain{i:03}" for i in range(400)]
    links = dict(zip([row.name, *names], [*names, ""], strict=True))
    tags = {tag_for(n): n for n in links}

    def script(method: str, path: str, headers: dict[str, str]) -> Answer:
        name = tags.get(path.rsplit("/", 1)[-1])
        if "/manifests/" not in path or name is None:
            return not_found(method, path, headers)
        info = PathInfo(StorePath(Path("/s") / name), Sha256(bytes(32)), 8, ())
        manifest, _ = artifact(info, b"x", {ANNOTATION_REFERENCES: links[name]})
        return Answer(200, manifest)

    return script


def leaking_redirect(row: Row, server: HostileRegistry, other: HostileRegistry) -> Script:
    honest = row.honest(nar({"f": b"x"}))

    def script(method: str, path: str, headers: dict[str, str]) -> Answer:
        if "Authorization" not in headers:
            return Answer(401, b"{}", {"WWW-Authenticate": 'Basic realm="hostile"'})
        if "/blobs/" in path:
            return Answer(307, b"", {"Location": f"http://{other.host}/steal{path}"})
        return honest(method, path, headers)

    return script


CASES: dict[str, tuple[Callable[..., Script], str]] = {
    "a NAR longer than annotated": (oversized_nar, "longer than the 1024 bytes annotated"),
    "a blob longer than its descriptor": (
        lambda row, _: sized(row, Answer(200, os.urandom(1 << 20))), "its descriptor gives"),
    "an endless blob": (
        lambda row, _: sized(row, Answer(200, endless(), length=False)), "its descriptor gives"),
    "a blob sent one byte at a time": (
        lambda row, _: sized(row, Answer(200, bytes(1000), drip=0.5)), f"within {TIMEOUT} s"),
    "a manifest sent one byte at a time": (
        lambda row, _: row.honest(nar({"f": b"x"}), manifest_drip=0.5), f"within {TIMEOUT} s"),
    "JSON nested 100,000 deep": (
        lambda row, _: row.serve(b"[" * 100_000 + b"]" * 100_000), "nested 100000 levels"),
    "an Infinity NAR size": (
        lambda row, _: row.serve(artifact(row.info(b"x"), b"", {ANNOTATION_NAR_SIZE: "@"})[0]
                                 .replace(b'"@"', b"Infinity")), "Infinity is not a JSON number"),
    "a reference chain 400 deep": (chain, "more than 64 paths"),
    "an absolute symlink to a host file": (
        lambda row, _: row.honest(nar({"leak": Link(str(row.decoy / "secret"))})),
        "is absolute"),
    "a symlink climbing out of the store": (
        lambda row, _: row.honest(nar({"up": Link("../../decoy/secret")})), "climbs out"),
    "a redirect to another port": (leaking_redirect, "not found"),
}


@pytest.fixture
def registries() -> Iterator[tuple[HostileRegistry, HostileRegistry]]:
    with hostile_registry() as server, hostile_registry() as other:
        yield server, other


@pytest.mark.parametrize("case", list(CASES))
def test_a_hostile_cache_ends_in_a_warning_and_a_build(
        case: str, built: Built, registries: tuple[HostileRegistry, HostileRegistry],
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server, other = registries
    make, expected = CASES[case]
    store, decoy = tmp_path / "store", tmp_path / "decoy"
    shutil.copytree(built.template, store, symlinks=True)
    (decoy / "dir").mkdir(parents=True)
    (decoy / "secret").write_text("host secret\n")
    (decoy / "dir" / "file").write_text("host file\n")
    before = tree_state(decoy)
    row = Row(built.closure, built.references, decoy)
    server.answer = (make(row, server, other) if make is leaking_redirect
                     else make(row, server))
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    monkeypatch.setenv("DOCKER_CONFIG", str(write_docker_config(tmp_path / "docker",
                                                                server.host, auth)))

    run = venvseal("--json", "--store", store, "build", "--uv-cache", built.cache,
                   "--substituter", f"oci://{server.host}/cache", "--cache-timeout",
                   str(TIMEOUT), built.project)

    assert run.code == 0, run.err
    assert Path(run.json()["path"]).name == built.closure  # built, not fetched
    assert run.json()["substituted"] == []
    warnings = [line for line in run.err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, run.err
    assert built.closure in warnings[0] and expected in warnings[0], warnings[0]
    assert "Traceback" not in run.err and "internal error" not in run.err
    assert venvseal("verify", "--store", store).code == 0
    assert os.listdir(store / ".tmp") == []
    assert tree_state(decoy) == before
    assert not [s for s in other.seen if "Authorization" in s.headers]
    assert not [s for s in server.seen if s.path.startswith("/steal")]
    for secret in (PASSWORD, auth):
        assert secret not in run.out + run.err
