"""operations: the binds a run of a closure can mount."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from venvseal.operations import Bind, unmountable_bind
from venvseal.store.core import STORE_DIR

CLOSURE = "1" * 32 + "-site-1.0"


# Each row: the bind's target (under the store, or not), whether the host side is a folder,
# and whether bubblewrap could mount it (the store is read-only: no mount point is made).
ROWS = [
    (STORE_DIR / CLOSURE / "app" / "data", True, False),   # the closure has no app/data
    (STORE_DIR / CLOSURE / "app", True, True),
    (STORE_DIR / CLOSURE / "app" / "settings.py", False, True),
    (STORE_DIR / CLOSURE / "app" / "settings.py", True, False),  # a folder on a file
    (STORE_DIR / ("2" * 32 + "-other"), True, False),
    (PurePosixPath("/data"), True, True),                  # outside the store: bwrap makes it
]


@pytest.mark.parametrize(("target", "folder", "mountable"), ROWS)
def test_a_bind_into_the_store_needs_a_mount_point_the_closure_has(
        tmp_path: Path, target: PurePosixPath, folder: bool, mountable: bool) -> None:
    store = tmp_path / "store"
    (store / CLOSURE / "app").mkdir(parents=True)
    (store / CLOSURE / "app" / "settings.py").write_text("")
    host = tmp_path / ("data" if folder else "file")
    host.mkdir() if folder else host.write_text("")
    bind = Bind(host=host, target=target)
    assert (unmountable_bind((bind,), store) is None) is mountable
