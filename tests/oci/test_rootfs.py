"""What never enters an image (issue 13): host files behind a store path's absolute
symlinks, and files others may not read; and what ``[image] include`` must name."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import pytest

from venvseal.oci.rootfs import ImageConfigError, PrivateFileError, RootCollector
from venvseal.oci.runtime import runtime_closure
from venvseal.recipe import parse
from venvseal.toolchain import resolve as toolchain
from venvseal.toolchain.sandbox import Sandbox

P = PurePosixPath
HOST_PYTHON = "/usr/bin/python3.11"


def closure_with_links(tmp_path: Path, **links: str) -> Path:
    closure = tmp_path / "store" / ("0" * 32 + "-leaky-1.0")
    (closure / "bin").mkdir(parents=True)
    for name in ("python", "python3"):
        (closure / "bin" / name).symlink_to(HOST_PYTHON)
    for name, target in links.items():
        (closure / name).symlink_to(target)
    return closure


def find(tmp_path: Path, closure: Path, references: tuple[Path, ...] = (),
         **image: object) -> tuple[dict[str, str], tuple[str, ...]]:
    rec = parse.parse_recipe({"app": {"name": "leaky", "version": "1.0"},
                               "toolchain": {"root": "/", "python": HOST_PYTHON},
                               "image": image}, file=tmp_path / "venvseal.toml")
    found = runtime_closure(rec, toolchain.resolve(rec.toolchain), closure,
                            runner=Sandbox.locate(), references=references)
    return {str(f.path): f.why for f in found.files}, found.notes


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A host folder only its owner may read, holding a key (like /srv/secret)."""
    folder = tmp_path / "secret"
    folder.mkdir(mode=0o700)
    (folder / "id_ed25519").write_text("KEY\n")
    (folder / "id_ed25519").chmod(0o600)
    return folder


def test_absolute_symlinks_of_store_paths_never_pull_host_files(tmp_path: Path,
                                                                secret: Path) -> None:
    closure = closure_with_links(tmp_path, leak="/etc/shadow", keys=str(secret),
                                 passwd="/etc/passwd", bash="/usr/bin/bash")
    fetched = tmp_path / "store" / ("1" * 32 + "-src")
    fetched.mkdir()
    (fetched / "hosts").symlink_to("/etc/hosts")
    why, notes = find(tmp_path, closure, (fetched,))
    assert "/etc/shadow" not in why and "/etc/hosts" not in why
    assert not [p for p in why if p.startswith(str(secret))]
    assert "/etc/passwd" in why  # the image's own passwd, not the link's doing
    assert why["/etc/passwd"] == "etc"
    assert why["/usr/bin/bash"] == "symlink target of bash"  # a program of the toolchain
    text = "\n".join(notes)
    for name, target in (("leak", "/etc/shadow"), ("keys", str(secret)),
                         (f"{fetched.name}/hosts", "/etc/hosts")):
        assert f"{name}: its symlink to {target} is not followed" in text
    assert "[image] include" in text


@pytest.mark.parametrize(("include", "private"), [
    (["/etc/shadow"], "/etc/shadow"),
    (["/etc/ssl"], "/etc/ssl/private"),
])
def test_a_file_others_may_not_read_is_refused_by_name(tmp_path: Path, include: list[str],
                                                        private: str) -> None:
    with pytest.raises(PrivateFileError, match=f"^{private} in the toolchain root / "
                       r"\(mode 0[67][0-7]0, needed as: include\) is not readable by others"):
        find(tmp_path, closure_with_links(tmp_path), include=include)


def test_a_private_file_in_a_root_folder_is_refused(tmp_path: Path, secret: Path) -> None:
    c = RootCollector(tmp_path)
    with pytest.raises(PrivateFileError, match="/secret in the toolchain root"):
        c.add_tree(P("/secret"), "include")
    (tmp_path / "open").mkdir()
    (tmp_path / "open/key").write_text("x")
    (tmp_path / "open/key").chmod(0o640)
    with pytest.raises(PrivateFileError, match=r"/open/key .*mode 0640"):
        c.add_tree(P("/open"), "include")
    assert P("/open/key") not in c.entries


@pytest.mark.parametrize(("include", "message"), [
    (["/no/such/file"], r"image.include\[0\]: /no/such/file does not exist in the toolchain"),
    (["/etc/passwd", "/usr/lib/nothing-here/"],
     r"image.include\[1\]: /usr/lib/nothing-here does not exist"),
])
def test_an_include_the_toolchain_lacks_is_an_error_naming_it(tmp_path: Path, include: list[str],
                                                              message: str) -> None:
    with pytest.raises(ImageConfigError, match=message) as err:
        find(tmp_path, closure_with_links(tmp_path), include=include)
    assert err.value.exit_code == 2


def test_include_is_the_way_to_add_a_host_file(tmp_path: Path) -> None:
    closure = closure_with_links(tmp_path, hosts="/etc/hosts")
    why, _ = find(tmp_path, closure, include=["/etc/hosts"])
    assert why["/etc/hosts"] == "include"
    assert os.path.exists("/etc/hosts")
