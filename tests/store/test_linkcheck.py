"""Which symlinks a NAR from a cache may hold (store.linkcheck), and the reader applying it.

A table of links venvseal itself makes (closure forests, interpreter links, Debian roots)
and of hostile ones; then properties (hypothesis, bounded budget): whatever the target, an
accepted link resolves, lexically, inside the path or a declared reference; and a generated
NAR with arbitrary links either restores with only accepted links or is refused with
nothing left behind.
"""

from __future__ import annotations

import io
import os
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.nars import Link, nar

from venvseal.store.linkcheck import LinkRule, check_links, link_problem
from venvseal.store.narread import NarFormatError, restore_nar

SELF = "0123456789abcdfghijklmnpqrsvwxyz-app-1.0"
REF = "zyxwvsrqpnmlkjihgfdcba9876543210-app-deps-relinked"
OTHER = "11111111111111111111111111111111-secret"
RULE = LinkRule(SELF, frozenset({REF}))
ROOT = LinkRule("22222222222222222222222222222222-debian-sid-minbase-root", root=True)
SETTINGS = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.mark.parametrize(("where", "target"), [
    ("lib/python3.11/site-packages/six.py",
     f"../../../../{REF}/lib/python3.11/site-packages/six.py"),  # a closure's forest link
    ("manage.py", "lib/app/manage.py"),
    ("lib64", "lib"),
    ("a/b/c", "../d"),
    ("a/b", "./c/./d"),
    ("bin/python", "/usr/bin/python3.11"),  # the closure's interpreter links
    ("bin/python3", "/usr/local/bin/python3"),
    ("bin/python3.14", "/opt/python/bin/python3.14"),
    ("x", f"/venvseal/store/{REF}/lib/libz.so.1"),
    ("x", f"../{SELF}/lib"),  # itself, through the store's folder
    (".", f"{REF}/bin"),  # a path that is a symlink itself
])
def test_links_inside_the_path_or_into_references_are_allowed(where: str, target: str) -> None:
    assert link_problem(RULE, PurePosixPath(where), target) is None


@pytest.mark.parametrize(("where", "target", "problem"), [
    ("leak", "/etc/shadow", "is absolute"),
    ("keys", "/srv/secret", "is absolute"),
    ("bin/python", "/etc/shadow", "is absolute"),
    ("bin/python", "/usr/bin/../../etc/python3", "'..'"),
    ("bin/sh", "/usr/bin/python3", "is absolute"),  # not an interpreter link
    ("lib/python", "/usr/bin/python3", "is absolute"),
    ("x", f"/venvseal/store/{OTHER}/key", "does not declare"),
    ("x", "/venvseal/store", "is absolute"),
    ("up", "../../etc/shadow", "climbs out of the store"),
    ("a/b/up", "../../../../../../etc", "climbs out of the store"),
    ("x", f"../{OTHER}/key", "does not declare"),
    ("x", "..", "points at the store's folder"),
    ("a/x", "../..", "points at the store's folder"),
    ("x", "d/../../etc", "'..' after a name"),
    ("x", f"d/../../{REF}", "'..' after a name"),
    (".", "/etc", "is absolute"),
    (".", "..", "climbs out of the store"),
])
def test_links_out_of_the_path_are_refused(where: str, target: str, problem: str) -> None:
    found = link_problem(RULE, PurePosixPath(where), target)
    assert found is not None and problem in found


@pytest.mark.parametrize(("where", "target", "ok"), [
    ("etc/rmt", "/usr/sbin/rmt", True),  # a root's absolute links are meant inside it
    ("etc/os-release", "../usr/lib/os-release", True),
    ("etc/x", "../../../etc/shadow", False),
    ("etc/x", "/usr/../../etc/shadow", False),
])
def test_root_file_systems_keep_links_inside_themselves(where: str, target: str,
                                                        ok: bool) -> None:
    assert (link_problem(ROOT, PurePosixPath(where), target) is None) is ok


def test_check_links_names_each_refused_link() -> None:
    problems = check_links(RULE, [(PurePosixPath("ok"), "a"),
                                  (PurePosixPath("leak"), "/etc/shadow")])
    assert len(problems) == 1 and problems[0].startswith("symlink leak -> /etc/shadow: ")


def resolve(where: PurePosixPath, target: str) -> list[str] | None:
    """Where a link leads, lexically, as [store-level name, parts...]; None above the store."""
    base = [SELF, *where.parts[:-1]] if where != PurePosixPath(".") else []
    if target.startswith("/"):
        parts = ["/", *target.split("/")[1:]]
        if parts[1:3] != ["venvseal", "store"]:
            return ["<host>"]
        base, parts = [], parts[3:]
    else:
        parts = target.split("/")
    for part in parts:
        if part in ("", "."):
            continue
        if part == "..":
            if not base:
                return None
            base.pop()
        else:
            base.append(part)
    return base


names = st.sampled_from(["a", "b", "..", ".", "", REF, OTHER, SELF, "venvseal", "store",
                         "bin", "python3", "etc"])
targets = st.builds(lambda absolute, parts: ("/" if absolute else "") + "/".join(parts),
                    st.booleans(), st.lists(names, min_size=1, max_size=8))
wheres = st.lists(st.sampled_from(["a", "b", "bin", "lib"]), min_size=0, max_size=4).map(
    lambda parts: PurePosixPath(*parts) if parts else PurePosixPath("."))


@SETTINGS
@given(where=wheres, target=targets)
def test_accepted_links_stay_in_the_path_or_its_references(where: PurePosixPath,
                                                           target: str) -> None:
    if link_problem(RULE, where, target) is not None:
        return
    if target.startswith("/") and not target.startswith("/venvseal/store/"):
        assert where.as_posix() in ("bin/python", "bin/python3") or \
            where.as_posix().startswith("bin/python3.")
        return
    resolved = resolve(where, target)
    assert resolved is not None and resolved, (where, target)
    assert resolved[0] in (SELF, REF), (where, target, resolved)


link_trees = st.dictionaries(st.sampled_from(["a", "b", "c", "bin"]), st.one_of(
    targets.map(Link), st.just(b"data"),
    st.dictionaries(st.sampled_from(["python", "python3", "x"]), targets.map(Link),
                    max_size=3)), min_size=1, max_size=4)


@SETTINGS
@given(tree=link_trees)
def test_restoring_checks_every_link(tree: dict[str, object], tmp_path: Path) -> None:
    dest = tmp_path / f"t{os.urandom(4).hex()}"
    try:
        restore_nar(io.BytesIO(nar(tree)), dest, links=RULE)
    except NarFormatError as err:  # by the link rule, or an empty target by the NAR reader
        assert "is refused" in str(err) or "is empty or holds a NUL" in str(err)
        assert not os.path.lexists(dest)
        return
    for path in dest.rglob("*"):
        if path.is_symlink():
            where = PurePosixPath(path.relative_to(dest).as_posix())
            assert link_problem(RULE, where, os.readlink(path)) is None
