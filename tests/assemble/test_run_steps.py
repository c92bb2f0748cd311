"""The rules every sandboxed command shares (commands.py), on the ``package = false`` Django
site of support/django_site.py (tests/projects/test_django_site.py builds it) (slow).

A failure or a command past its time limit stops the build with the key, the command and its
output, exit 1, and the store stays as it was; ``[verify] env`` reaches imports and commands;
a failed import shows its traceback as indented lines.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support import BuiltProject, store_state, uv_lock, venvseal, write
from support.django_site import write_site

pytestmark = pytest.mark.slow


def make_project(root: Path, lock_cache: Path) -> Path:
    write_site(root)
    uv_lock(root, lock_cache)
    return root


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> BuiltProject:
    root = tmp_path_factory.mktemp("django-site")
    cache = root / "uv-cache"
    project = make_project(root / "mysite", cache)
    store = root / "store"
    built = venvseal("--json", "build", "--update-hash", "--store", store, "--uv-cache", cache,
                     project)
    return BuiltProject(project=project, store=store, cache=cache, built=built)


def recipe(old: str, new: str) -> Callable[[Path], None]:
    def change(project: Path) -> None:
        text = (project / "venvseal.toml").read_text()
        assert old in text
        (project / "venvseal.toml").write_text(text.replace(old, new, 1))
    return change


def boom(project: Path) -> None:
    write(project / "src" / "polls" / "boom.py",
          "def explode():\n    raise RuntimeError('boom: SETTING unset')\n\n\nexplode()\n")
    recipe('imports = ["mysite.settings", "polls"]',
           'imports = ["mysite.settings", "polls.boom"]')(project)


STYLE_CHECK = '  "test -f @out@/static/polls/style.css",\n'
VERIFY_SLEEPS = recipe(STYLE_CHECK, STYLE_CHECK + '  "sleep 600",\n]\ntimeout = 2\n#')

# Each row: what is wrong, how to make it so, fragments of the error (exit 1 for all).
BAD: list[tuple[str, Callable[[Path], None], list[str]]] = [
    ("run command fails",
     recipe('command = "@python@ -m django collectstatic --noinput -v 0"',
            'command = "echo no static; exit 3"'),
     ["assemble.run[0] failed (exit 3)", "    no static", "runs offline, with @out@ writable"]),
    ("run writes into the linked deps",
     recipe('command = "@python@ -m django collectstatic --noinput -v 0"',
            'command = "touch @site-packages@/django/added.txt"'),
     ["assemble.run[0] failed (exit 1): touch", "Read-only file system"]),
    ("run never exits",
     recipe('command = "@python@ -m django collectstatic --noinput -v 0"',
            'command = "echo started; sleep 600"\ntimeout = 2'),
     ["assemble.run[0]: echo started; sleep 600\n",
      "assemble.run[0] did not finish within 2 s and was killed: echo started; sleep 600",
      "raise its timeout", "    started"]),
    ("verify command never exits", VERIFY_SLEEPS,
     ["verify: verify.commands[2]: sleep 600\n",  # the step line, as the check starts
      "verify.commands[2] did not finish within 2 s and was killed: sleep 600"]),
    ("python-path names no folder", recipe('python-path = ["src"]', 'python-path = ["nope"]'),
     ["assemble.python-path[0]: nope is not a folder in the closure"]),
    ("verify import raises", boom,
     ["verify: 1 import(s) failed in the closure:\n  polls.boom:\n"
      "      Traceback (most recent call last):",
      "          explode()\n", "      RuntimeError: boom: SETTING unset"]),
    ("verify without the env a module needs",
     recipe('[verify]\nenv = { DJANGO_SETTINGS_MODULE = "mysite.settings" }\n', "[verify]\n"),
     ["verify.commands[0] failed (exit 1)", "ImproperlyConfigured"]),
]


@pytest.mark.parametrize(("case", "change", "fragments"), BAD, ids=[row[0] for row in BAD])
def test_a_failing_or_hanging_command_stops_the_build_cleanly(
        site: BuiltProject, tmp_path: Path, case: str, change: Callable[[Path], None],
        fragments: list[str]) -> None:
    assert site.built.code == 0, site.built.err
    project = tmp_path / "mysite"
    shutil.copytree(site.project, project, symlinks=True)
    change(project)
    before = store_state(site.store)
    started = time.monotonic()
    run = site.build(project)
    assert time.monotonic() - started < 120
    assert run.code == 1, run.err
    error = run.err.replace("venvseal: error: ", "")
    for fragment in fragments:
        assert fragment in error, f"{case}: {fragment!r} not in:\n{error}"
    assert " | " not in error
    assert "internal error" not in error
    assert store_state(site.store) == before
