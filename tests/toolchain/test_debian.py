"""Debian toolchain roots made by an unprivileged user (mmdebstrap's unshare mode).

The slow test runs mmdebstrap for real as a user the tests create, against the mirror the
machine's apt uses (Debian 12's own suite, minbase: a small, stable package set), then as
root from the user's lock.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from support import venvseal, write
from support.unprivileged import User

from venvseal.store.nar import nar_hash
from venvseal.toolchain.debian import unprivileged_problem

RANGE = "alice:100000:65536\n"


USERMOD = "usermod --add-subuids 100000-165535 --add-subgids 100000-165535 alice"
INSTALL = "apt-get install uidmap"


# Each row: /etc/subuid, /etc/subgid, newuidmap, what the message names, and which
# administrator commands it gives (only those that fix what is missing).
@pytest.mark.parametrize(("subuid", "subgid", "newuidmap", "says", "fixes"), [
    ("", RANGE, "/usr/bin/newuidmap", ["a range in /etc/subuid for alice"], [USERMOD]),
    (RANGE, "", "/usr/bin/newuidmap", ["a range in /etc/subgid for alice"], [USERMOD]),
    (RANGE, RANGE, None, ["newuidmap (Debian: apt-get install uidmap)"], [INSTALL]),
    ("", "", None, ["newuidmap", "/etc/subuid", "/etc/subgid"], [INSTALL, USERMOD]),
    ("alicia:1:2\nbob:100000:65536\n", RANGE, "/usr/bin/newuidmap", ["/etc/subuid"],
     [USERMOD]),
])
def test_what_a_user_lacks_for_unshare_mode_is_named_with_the_way_out(
        subuid: str, subgid: str, newuidmap: str | None, says: list[str],
        fixes: list[str]) -> None:
    problem = unprivileged_problem("alice", subuid=subuid, subgid=subgid, newuidmap=newuidmap)
    assert problem is not None
    for fragment in says:
        assert fragment in problem
    advice = problem.split("an administrator can run ", 1)[1].split("; or run as root")[0]
    assert advice == " and ".join(f"`{fix}`" for fix in fixes)
    assert "[toolchain] root" in problem
    assert "\n" not in problem  # one line


def test_a_user_with_newuidmap_and_both_ranges_can() -> None:
    assert unprivileged_problem("alice", subuid=RANGE, subgid=RANGE,
                                newuidmap="/usr/bin/newuidmap") is None


@pytest.mark.slow
def test_an_unprivileged_user_pins_a_debian_root_that_root_makes_again_bit_for_bit(
        unprivileged: User, tmp_path: Path) -> None:
    # useradd --system gives no subordinate ids: add a range for this user (once), as an
    # administrator would.
    ranges = "300000-365535"
    if unprivileged_problem(unprivileged.name, subuid=Path("/etc/subuid").read_text(),
                            subgid=Path("/etc/subgid").read_text(), newuidmap="found"):
        subprocess.run(["usermod", "--add-subuids", ranges, "--add-subgids", ranges,
                        unprivileged.name], check=True)
    project = unprivileged.home / "project"
    write(project / "venvseal.toml", '[app]\nname = "rootless"\nversion = "1.0"\n'
          '[toolchain]\npython = "/usr/bin/python3.11"\n'
          'debian = { suite = "bookworm", packages = ["python3-minimal"] }\n')
    write(project / "pyproject.toml", '[project]\nname = "rootless"\nversion = "1.0"\n')
    unprivileged.own(project)
    store = unprivileged.home / "store"
    # --lock: the lock's hooks, the local repository and the root all made in unshare mode.
    run = unprivileged.venvseal("--store", store, "--json", "toolchain", project, "--lock",
                                timeout=900)
    assert run.code == 0, run.err[-3000:]
    root = Path(run.json()["root"])
    assert root.is_relative_to(store)
    python = root / "usr/bin/python3.11"
    assert python.is_file() and os.stat(python).st_uid == unprivileged.uid
    assert not any((root / "dev").iterdir())  # device nodes were never made
    again = venvseal("--store", tmp_path / "store", "--json", "toolchain", project)
    assert again.code == 0, again.err[-3000:]
    assert nar_hash(Path(again.json()["root"])) == nar_hash(root)
