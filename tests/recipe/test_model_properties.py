"""Property-based: any TOML-shaped table given to the recipe parser is a Recipe or a RecipeError.

Hypothesis draws tables shaped like a recipe (its real keys, near-misses and junk; strings
that are paths, URLs with credentials, placeholders; NaN and infinities; nested arrays and
tables). ``parse_recipe`` must never raise anything but RecipeError (exit code 2), whose
message names the recipe file on every line and never shows a URL's credentials.
A small budget (``max_examples``) keeps it within seconds in CI.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from venvseal.errors import RecipeError
from venvseal.recipe.model import Recipe
from venvseal.recipe.parse import parse_recipe

SECRET = "s3cr3tTOKEN"
SETTINGS = settings(max_examples=200, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])

KEYS = ["app", "toolchain", "deps", "fetch", "assemble", "substitute", "verify", "image",
        "name", "version", "root", "python", "debian", "suite", "packages", "path", "hash",
        "git", "rev", "url", "install", "copy", "from", "to", "exclude", "file", "patch",
        "old", "new", "imports", "commands", "entrypoint", "include", "env", "build-env",
        "ignore-missing", "nmae", "", "a.b", "\u00e9"]
STRINGS = st.one_of(
    st.sampled_from(["", "/", "..", "/usr/bin/python3.11", "demo", "1.0", "@python@",
                     "@site-packages@/x", "../outside", "a" * 40, "sha256-" + "A" * 44,
                     f"https://user:{SECRET}@host/r.git", f"https://{SECRET}@host/r.git",
                     f"https://host/x.tar.gz?token={SECRET}", "x\0y", "nan"]),
    st.text(max_size=12),
)
SCALARS = st.one_of(STRINGS, st.integers(), st.booleans(),
                    st.floats(allow_nan=True, allow_infinity=True))
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)),
    max_leaves=12,
)
# Mostly the real top-level tables, each a table of real-looking keys.
TABLES = st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=5)
RECIPES = st.dictionaries(
    st.sampled_from([*KEYS[:8], "tool", "unknown"]),
    st.one_of(TABLES, st.lists(TABLES, max_size=3), VALUES),
    max_size=8,
)


VALID = {"app": {"name": "demo", "version": "1.0"},
         "toolchain": {"root": "/", "python": "/usr/bin/python3.11"},
         "fetch": [{"name": "lib", "git": f"https://user:{SECRET}@host/r.git", "rev": "a" * 40}]}


@SETTINGS
@given(RECIPES)
@example(VALID)  # the success branch, checked on every run
def test_any_table_is_a_recipe_or_a_recipe_error(data: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        file = Path(folder) / "venvseal.toml"
        try:
            recipe = parse_recipe(data, file=file)
        except RecipeError as err:
            text = str(err)
            assert data != VALID, text
            assert err.exit_code == 2
            assert err.problems, "a RecipeError names at least one problem"
            assert all(line.startswith(f"{file}: ") for line in text.splitlines()), text
            assert SECRET not in text
        else:
            assert isinstance(recipe, Recipe)
            assert recipe.file == file
            if data == VALID:
                assert recipe.fetch[0].rev == "a" * 40
