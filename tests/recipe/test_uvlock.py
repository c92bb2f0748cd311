"""Reading uv.lock: members, the local packages split, and errors that say to run 'uv lock'.

The lock files are written here as TOML text in uv's format (version 1). Registry sources
carry a made-up value instead of an index address: read_lock never looks at it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from support import fixture_text

from venvseal.recipe.uvlock import LockedPackage, LockError, read_lock

WORKSPACE_LOCK = fixture_text("uvlock/workspace.lock")

# A lone project (no workspace): uv writes no [manifest] table at all.
SINGLE_PROJECT_LOCK = fixture_text("uvlock/single-project.lock")


def write_lock(project: Path, text: str | bytes) -> Path:
    project.mkdir(parents=True, exist_ok=True)
    file = project / "uv.lock"
    file.write_bytes(text.encode() if isinstance(text, str) else text)
    return file


def names(packages: tuple[LockedPackage, ...]) -> list[str]:
    return sorted(p.name for p in packages)


def test_reads_members_requires_python_and_digest(tmp_path: Path) -> None:
    file = write_lock(tmp_path, WORKSPACE_LOCK)
    lock = read_lock(tmp_path)
    assert lock.file == file
    assert lock.members == ("app", "member")
    assert lock.requires_python == ">=3.11"
    assert lock.digest == hashlib.sha256(WORKSPACE_LOCK.encode()).hexdigest()
    assert names(lock.packages) == ["app", "cext", "fromgit", "fromurl", "member", "six",
                                    "tarball"]


def test_package_fields(tmp_path: Path) -> None:
    write_lock(tmp_path, WORKSPACE_LOCK)
    by_name = {p.name: p for p in read_lock(tmp_path).packages}
    six = by_name["six"]
    assert (six.version, six.source_kind, six.has_sdist, six.has_wheels) == (
        "1.16.0", "registry", True, True)
    assert (by_name["member"].source_kind, by_name["member"].source) == (
        "editable", "packages/member")
    assert (by_name["tarball"].source_kind, by_name["tarball"].has_wheels) == ("path", False)
    assert by_name["fromgit"].source_kind == "git"
    # A URL source also carries `subdirectory`; the kind is still "url".
    assert (by_name["fromurl"].source_kind, by_name["fromurl"].source) == ("url", "archive-url")


def test_local_packages_workspace_members_and_path_dependencies(tmp_path: Path) -> None:
    write_lock(tmp_path, WORKSPACE_LOCK)
    lock = read_lock(tmp_path)
    assert names(lock.local_packages()) == ["app", "member"]
    assert names(lock.workspace_members()) == ["member"]
    assert names(lock.path_dependencies()) == ["cext", "tarball"]
    # Registry, git and URL packages are none of these.
    local = {p.name for p in (*lock.local_packages(), *lock.path_dependencies())}
    assert local.isdisjoint({"six", "fromgit", "fromurl"})


def test_a_lone_project_is_its_own_member_not_a_path_dependency(tmp_path: Path) -> None:
    write_lock(tmp_path, SINGLE_PROJECT_LOCK)
    lock = read_lock(tmp_path)
    assert lock.members == ("solo",)
    assert names(lock.local_packages()) == ["solo"]
    assert lock.workspace_members() == ()
    assert names(lock.path_dependencies()) == ["helper"]


def test_the_root_is_installed_when_uv_locks_it_as_a_package(tmp_path: Path) -> None:
    # A virtual root (no [build-system], or tool.uv.package = false) is not installed.
    write_lock(tmp_path / "virtual", WORKSPACE_LOCK)
    lock = read_lock(tmp_path / "virtual")
    assert lock.root_package() is not None
    assert names(lock.installed_members()) == ["member"]
    write_lock(tmp_path / "package", WORKSPACE_LOCK.replace('{ virtual = "." }',
                                                            '{ editable = "." }'))
    assert names(read_lock(tmp_path / "package").installed_members()) == ["app", "member"]
    write_lock(tmp_path / "solo", SINGLE_PROJECT_LOCK)
    assert names(read_lock(tmp_path / "solo").installed_members()) == ["solo"]


def test_missing_lock_says_to_run_uv_lock(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "1"\n')
    with pytest.raises(LockError) as info:
        read_lock(tmp_path)
    message = str(info.value)
    assert str(tmp_path / "uv.lock") in message
    assert "'uv lock'" in message
    assert info.value.exit_code == 2  # bad input, like a bad recipe


# Each row: what is wrong, the file's bytes, a fragment the message must contain.
MALFORMED = [
    ("TOML syntax error", 'version = 1\n[[package]\nname = "x"\n', "line 2"),
    ("not UTF-8", b"version = 1\n# \xff\xfe\n", "not a valid uv.lock"),
    ("package is not an array", 'version = 1\npackage = "six"\n', "must be arrays"),
    ("members is not an array", 'version = 1\n[manifest]\nmembers = "app"\n', "must be arrays"),
]


@pytest.mark.parametrize(("case", "content", "fragment"), MALFORMED,
                         ids=[row[0] for row in MALFORMED])
def test_malformed_lock_is_a_lock_error(tmp_path: Path, case: str, content: str | bytes,
                                        fragment: str) -> None:
    write_lock(tmp_path, content)
    with pytest.raises(LockError) as info:
        read_lock(tmp_path)
    message = str(info.value)
    assert message.startswith(str(tmp_path / "uv.lock")), case
    assert fragment in message, case
    assert "'uv lock'" in message, case


def test_unreadable_lock_is_a_lock_error(tmp_path: Path) -> None:
    (tmp_path / "uv.lock").mkdir()  # a folder where the file should be: EISDIR on read
    with pytest.raises(LockError, match="cannot read it"):
        read_lock(tmp_path)
