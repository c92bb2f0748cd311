"""pytest's hook file. Shared helpers live in ``tests/support/`` and are imported from there.

This file puts ``tests/`` on ``sys.path`` (pytest inserts a conftest's folder first), so that
test modules in the subfolders can ``import support``.
"""

# The fixtures several test modules use, from the support modules that define them.
pytest_plugins = ["support.demo", "support.image", "support.registry", "support.trees",
                  "support.postgres", "support.unprivileged"]
