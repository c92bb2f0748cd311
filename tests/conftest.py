"""pytest's hook file. Shared helpers live in ``tests/support/`` and are imported from there.

This file puts ``tests/`` on ``sys.path`` (pytest inserts a conftest's folder first), so that
test modules in the subfolders can ``import support``.
"""

from collections.abc import Iterator

import pytest

# The fixtures several test modules use, from the support modules that define them.
pytest_plugins = ["support.demo", "support.image", "support.registry", "support.trees",
                  "support.postgres", "support.unprivileged", "support.projects"]


@pytest.fixture(autouse=True, scope="session")
def _private_default_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """CI runs the tests as root, whose default store is /venvseal/store: a test that names
    no store (--store or VENVSEAL_STORE) gets a temporary one instead, never that one."""
    patch = pytest.MonkeyPatch()
    patch.setenv("VENVSEAL_STORE", str(tmp_path_factory.mktemp("default-store")))
    yield
    patch.undo()
