"""Pinned Debian roots: the lock file, two roots from one lock, and the .debs from a cache.

The slow tests run mmdebstrap for real against the mirror the machine's apt uses (Debian 12's
own suite, so the package set is small and stable), then make roots from the pinned files.
"""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import Run, store_state, venvseal, write
from support.registry import registry_server

from venvseal.errors import EXIT_USAGE
from venvseal.hashes import parse_sha256
from venvseal.oci.cache import OciTarget, push_paths
from venvseal.oci.registry import Registry
from venvseal.store.core import Store
from venvseal.store.nar import nar_hash
from venvseal.toolchain.debpin import (
    DebianPin,
    PinError,
    PinnedDeb,
    pinned_debs,
    read_pin,
    write_pin,
)
from venvseal.toolchain.debroot import debs_path

SUITE = "bookworm"
RECIPE = f"""\
[app]
name = "pinned"
version = "1.0"

[toolchain]
python = "/usr/bin/python3.11"
debian = {{ suite = "{SUITE}", packages = ["python3-minimal"] }}
"""
DEB = PinnedDeb(name="libfoo1", version="1:2.0-1", architecture="amd64", sha256="a" * 64,
                size=10, filename="pool/main/f/foo/libfoo1_2.0-1_amd64.deb")
PIN = DebianPin(suite="sid", variant="minbase", packages=("gcc",),
                debs_hash=parse_sha256("sha256-" + "A" * 43 + "="), debs=(DEB,))


def test_pin_round_trips_and_keeps_the_lock_files_other_tables(tmp_path: Path) -> None:
    lock = write(tmp_path / "venvseal.lock", '# mine\n[deps]\nuv = "0.13.9"\n')
    write_pin(lock, PIN)
    assert read_pin(lock) == PIN
    text = lock.read_text()
    assert '[deps]\nuv = "0.13.9"' in text and "# mine" in text
    assert "://" not in text  # no mirror host: archive paths only
    assert DEB.file_name == "libfoo1_1%3a2.0-1_amd64.deb"  # apt's name, epoch escaped


def test_no_lock_or_no_table_is_no_pin(tmp_path: Path) -> None:
    assert read_pin(tmp_path / "venvseal.lock") is None
    assert read_pin(write(tmp_path / "venvseal.lock", '[deps]\nuv = "1"\n')) is None


BAD_LOCKS = [
    ("not TOML", "[debian\n", "is not valid TOML"),
    ("no packages", '[debian]\nsuite = "sid"\nvariant = "minbase"\n', "incomplete"),
    ("bad sha256", None, "bad name or sha256"),
    ("escaping filename", None, "not a pool path"),
    ("package twice", None, "lists a package twice"),
]


def _lock_text(tmp_path: Path, case: str) -> str:
    lock = tmp_path / "good.lock"
    if case == "package twice":
        write_pin(lock, DebianPin(**{**_fields(PIN), "debs": (DEB, DEB)}))
        return lock.read_text()
    write_pin(lock, PIN)
    text = lock.read_text()
    if case == "bad sha256":
        return text.replace("a" * 64, "z" * 64)
    return text.replace(DEB.filename, "pool/../../etc/x.deb")


def _fields(pin: DebianPin) -> dict[str, object]:
    return {k: getattr(pin, k) for k in ("suite", "variant", "packages", "debs_hash", "debs")}


@pytest.mark.parametrize(("case", "text", "fragment"), BAD_LOCKS, ids=[r[0] for r in BAD_LOCKS])
def test_a_bad_lock_is_one_line_naming_the_file_and_the_way_out(
        tmp_path: Path, case: str, text: str | None, fragment: str) -> None:
    lock = write(tmp_path / "venvseal.lock", text if text is not None else
                 _lock_text(tmp_path, case))
    with pytest.raises(PinError) as caught:
        read_pin(lock)
    message = str(caught.value)
    assert str(lock) in message and fragment in message and "venvseal toolchain" in message
    assert "\n" not in message and caught.value.exit_code == EXIT_USAGE


def test_each_installed_package_takes_its_sha256_from_the_index() -> None:
    index = ("Package: libfoo1\nVersion: 1:2.0-1\nArchitecture: amd64\nSize: 10\n"
             f"SHA256: {'a' * 64}\nFilename: {DEB.filename}\nDescription: x\n continued\n\n"
             "Package: other\nVersion: 1\nArchitecture: all\nSize: 1\n"
             f"SHA256: {'b' * 64}\nFilename: pool/main/o/other/other_1_all.deb\n")
    assert pinned_debs([("libfoo1", "1:2.0-1", "amd64")], [index]) == (DEB,)
    with pytest.raises(ValueError, match=r"libbar 1 \(amd64\) is in no Packages index"):
        pinned_debs([("libbar", "1", "amd64")], [index])


# --- real mmdebstrap runs -------------------------------------------------------------------


def ok(run: Run) -> Run:
    assert run.code == 0, run.err[-3000:]
    return run


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """A recipe pinned with --lock in one store: (project, store, root's NAR hash)."""
    base = tmp_path_factory.mktemp("pinned")
    project = base / "project"
    write(project / "venvseal.toml", RECIPE)
    write(project / "pyproject.toml", '[project]\nname = "pinned"\nversion = "1.0"\n')
    run = ok(venvseal("--store", base / "store", "--json", "toolchain", project, "--lock"))
    root = Path(run.json()["root"])
    return project, base / "store", nar_hash(root).hash.sri


@pytest.mark.slow
def test_two_roots_made_from_one_lock_in_two_stores_have_one_nar_hash(
        locked: tuple[Path, Path, str], tmp_path: Path) -> None:
    project, _, first = locked
    pin = read_pin(project / "venvseal.lock")
    assert pin is not None and len(pin.debs) > 50
    assert {"python3-minimal", "dpkg", "libc6"} <= set(pin.versions())
    run = ok(venvseal("--store", tmp_path / "other", "--json", "toolchain", project))
    assert nar_hash(Path(run.json()["root"])).hash.sri == first
    # The .debs were downloaded by their archive paths and checked: the same fixed path.
    with Store(tmp_path / "other") as store:
        assert store.is_valid(debs_path(pin, store))


class _EmptyMirror(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def empty_mirror(tmp_path: Path) -> Iterator[str]:
    """An HTTP mirror on 127.0.0.1 that has dropped every file."""
    (tmp_path / "mirror").mkdir()
    handler = functools.partial(_EmptyMirror, directory=str(tmp_path / "mirror"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/debian"
    finally:
        server.shutdown()


@pytest.mark.slow
def test_pinned_debs_the_mirror_dropped_come_from_the_cache(
        locked: tuple[Path, Path, str], tmp_path: Path, empty_mirror: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    project, store_root, first = locked
    monkeypatch.setenv("VENVSEAL_DEBIAN_MIRROR", empty_mirror)
    monkeypatch.delenv("VENVSEAL_SUBSTITUTERS", raising=False)
    # No cache: one line naming a pinned package and the ways out; nothing half-written.
    fresh = tmp_path / "fresh"
    Store(fresh).close()
    before = store_state(fresh)
    run = venvseal("--store", fresh, "toolchain", project)
    assert run.code == 1, run.err
    assert "is not on the mirror" in run.error and "nor in any cache" in run.error
    assert "--substituter" in run.error and "--update-lock" in run.error
    assert store_state(fresh) == before
    assert not any((fresh / ".tmp").iterdir())
    # With the cache holding the pushed .debs path, the same root is made.
    pin = read_pin(project / "venvseal.lock")
    assert pin is not None
    with registry_server(tmp_path / "registry") as server:
        target = OciTarget.parse(f"oci://{server.host}/venvseal")
        with Store(store_root) as store:
            push_paths(store, [debs_path(pin, store)], target, client=Registry(server.host),
                       on_step=lambda _msg: None)
        monkeypatch.setenv("VENVSEAL_SUBSTITUTERS", str(target))
        run = ok(venvseal("--store", tmp_path / "cached", "--json", "toolchain", project))
    assert nar_hash(Path(run.json()["root"])).hash.sri == first
