"""A ``package = false`` Django site (``[assemble] python-path``, ``collectstatic`` in
``[[assemble.run]]``): the project tests/projects/test_django_site.py builds as root and as a
user, and tests/assemble/test_run_steps.py breaks in every way a command can fail."""

from __future__ import annotations

from pathlib import Path

from support import EXCLUDE_NEWER, PYTHON, write

PYPROJECT = f"""\
[project]
name = "mysite"
version = "0.1.0"
requires-python = ">=3.11"
dependencies = ["django==5.2.8"]

[tool.uv]
exclude-newer = "{EXCLUDE_NEWER}"
package = false
"""

SETTINGS = """\
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent.parent  # the closure: src/mysite/..
SECRET_KEY = "only-for-this-test"
INSTALLED_APPS = ["django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",
                  "django.contrib.sessions", "django.contrib.messages",
                  "django.contrib.staticfiles", "polls"]
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "static"
"""

CSS = "body { color: teal; }\n"

RECIPE = f"""\
[app]
name = "mysite"
version = "1.0.0"

[toolchain]
root = "/"
python = "{PYTHON}"

[deps]
hash = ""

[assemble]
python-path = ["src"]

[[assemble.copy]]
from = "src"
to = "src"

[[assemble.run]]
command = "@python@ -m django collectstatic --noinput -v 0"
env = {{ DJANGO_SETTINGS_MODULE = "mysite.settings" }}

[verify]
env = {{ DJANGO_SETTINGS_MODULE = "mysite.settings" }}
imports = ["mysite.settings", "polls"]
commands = [
  "@python@ -c 'import django; django.setup()'",
  "test -f @out@/static/polls/style.css",
]
"""


def write_site(root: Path) -> Path:
    """The site's files in ``root`` (not locked)."""
    write(root / "pyproject.toml", PYPROJECT)
    write(root / "venvseal.toml", RECIPE)
    write(root / "src" / "mysite" / "__init__.py", "")
    write(root / "src" / "mysite" / "settings.py", SETTINGS)
    write(root / "src" / "polls" / "__init__.py", "")
    write(root / "src" / "polls" / "static" / "polls" / "style.css", CSS)
    return root
