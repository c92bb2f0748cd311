"""Recipe files: found (here or in a parent folder), read, and ``deps.hash`` rewritten in place.
"""


from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from venvseal.errors import Problem, RecipeError
from venvseal.hashes import parse_sha256
from venvseal.recipe.model import (
    PYPROJECT_FILE,
    PYPROJECT_PREFIX,
    RECIPE_FILE,
    Recipe,
)
from venvseal.recipe.parse import parse_recipe
from venvseal.recipe.tomlcheck import (
    Problems,
    check_type,
    read_toml,
    set_toml_value,
)


def find_recipe(arg: Path | None, cwd: Path | None = None) -> tuple[Path, str]:
    """The recipe file and its key prefix for ``arg``, a file or folder.

    A folder is searched for venvseal.toml or a pyproject.toml with [tool.venvseal]. A
    relative ``arg`` is taken from ``cwd`` when given; ``arg`` None means the nearest folder
    from ``cwd`` up that holds a recipe.
    The library never reads the process's working folder: the caller passes it.
    """
    if arg is None:
        if cwd is None:
            raise ValueError("find_recipe needs a path or cwd")
        # As uv and git do: the nearest folder from here up that holds a recipe.
        for folder in (cwd, *cwd.parents):
            if _holds_recipe(folder):
                return _in_folder(folder)
        arg = cwd
    path = cwd / arg if cwd is not None else arg
    if path.is_dir():
        return _in_folder(path)
    if not path.exists():
        raise RecipeError(str(path), [Problem("", "no such file or folder; check the path")])
    if path.name == PYPROJECT_FILE:
        return path, PYPROJECT_PREFIX
    if path.suffix != ".toml":
        raise RecipeError(str(path), [Problem("", "a recipe is a .toml file; pass venvseal.toml, "
                          "a pyproject.toml with [tool.venvseal], or their folder")])
    return path, ""


def _holds_recipe(folder: Path) -> bool:
    pyproject = folder / PYPROJECT_FILE
    try:
        return (folder / RECIPE_FILE).is_file() or (
            pyproject.is_file() and _has_tool_table(read_toml(pyproject)))
    except (RecipeError, OSError):  # unreadable: let _in_folder say so, if it is the one
        return pyproject.is_file()


def _in_folder(folder: Path) -> tuple[Path, str]:
    recipe, pyproject = folder / RECIPE_FILE, folder / PYPROJECT_FILE
    in_pyproject = pyproject.is_file() and _has_tool_table(read_toml(pyproject))
    if recipe.is_file() and in_pyproject:
        raise RecipeError(str(folder), [Problem("", f"both {RECIPE_FILE} and [tool.venvseal] in "
                          f"{PYPROJECT_FILE} hold a recipe; keep one")])
    if recipe.is_file():
        return recipe, ""
    if in_pyproject:
        return pyproject, PYPROJECT_PREFIX
    raise RecipeError(str(folder), [Problem("", f"no {RECIPE_FILE} and no [tool.venvseal] in "
                      f"{PYPROJECT_FILE} in {folder}; write one (see docs/recipe.md)")])


def _has_tool_table(doc: Mapping[str, Any]) -> bool:
    tool = doc.get("tool")
    return isinstance(tool, Mapping) and "venvseal" in tool


def load_recipe(arg: Path) -> Recipe:
    """Find (``arg`` is a recipe file or its folder), read and validate a recipe."""
    file, prefix = find_recipe(arg)
    data: Mapping[str, Any] = read_toml(file)
    if prefix:
        if not _has_tool_table(data):
            raise RecipeError(str(file), [Problem("", "no [tool.venvseal] table; add one or "
                              f"write a {RECIPE_FILE} (see docs/recipe.md)")])
        problems = Problems()
        data = check_type(data["tool"]["venvseal"], dict, "tool.venvseal", problems) or {}
        problems.raise_if_any(str(file))
    return parse_recipe(data, file=file, key_prefix=prefix)


def update_deps_hash(recipe_file: Path, key_prefix: str, new_hash: str) -> None:
    """Set ``deps.hash`` (under ``key_prefix``) to ``new_hash`` written as SRI ("" clears it).

    Comments and layout are kept, ``[deps]`` is created if absent, the write is atomic.
    """
    value = parse_sha256(new_hash).sri if new_hash else ""
    keys = [*key_prefix.split(".")[:-1], "deps", "hash"] if key_prefix else ["deps", "hash"]
    set_toml_value(recipe_file, keys, value)
