"""Recipe tables in, validated dataclasses out.

:func:`parse_recipe` is pure: it checks a parsed TOML mapping and raises one
:class:`~venvseal.errors.RecipeError` carrying every problem, each named by its full key path.
"""


from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from venvseal.errors import RecipeError
from venvseal.recipe.model import (
    BUILTIN_PLACEHOLDERS,
    DEFAULT_LIBRARY_DIRS,
    DEFAULT_PATH,
    DEFAULT_PYTHON,
    DEFAULT_TIMEOUT,
    PYPROJECT_FILE,
    TABLES,
    App,
    Assemble,
    Command,
    CopyRule,
    DebianSpec,
    Deps,
    Fetch,
    Image,
    Recipe,
    RunStep,
    Substitute,
    Toolchain,
    Verify,
)
from venvseal.recipe.tomlcheck import (
    EMPTY,
    Problems,
    StrMap,
    Table,
    absolute_path,
    port,
    read_toml,
    relative_path,
)
from venvseal.recipe.values import (
    Context,
    app_name,
    app_version,
    build_env_name,
    debian_package,
    debian_suite,
    env_name,
    fetch_name,
    git_rev,
    hash_value,
    link_name,
    module_name,
    nonempty,
    package_name,
    real_path,
    soname_pattern,
    url_value,
    user_value,
)

_APP_KEYS = ("name", "version", "project")
_TOOLCHAIN_KEYS = ("root", "debian", "python", "library-dirs", "path")
_DEBIAN_KEYS = ("suite", "packages", "variant")
_DEPS_KEYS = ("hash", "exclude", "extras", "env", "build-requires")
_FETCH_KEYS = ("name", "git", "rev", "url", "hash", "install")
_ASSEMBLE_KEYS = ("workspace", "ignore-missing", "links", "copy", "python-path", "run")
_RUN_KEYS = ("command", "env", "timeout")
_COPY_KEYS = ("from", "to", "exclude")
_SUBSTITUTE_KEYS = ("file", "replace", "with", "count", "patch", "strip")
_VERIFY_KEYS = ("imports", "import-all", "import-skip", "commands", "env", "timeout")
_IMAGE_KEYS = ("entrypoint", "cmd", "env", "user", "workdir", "ports", "labels", "include",
               "compression", "path")


def parse_recipe(data: Mapping[str, object], *, file: Path, key_prefix: str = "") -> Recipe:
    """Validate a parsed recipe table; raise RecipeError listing every problem found.

    ``file`` is the recipe file (relative host paths are taken from its folder) and
    ``key_prefix`` goes before every key path in messages ("tool.venvseal." in pyproject.toml).
    """
    file = real_path(file)
    problems = Problems(key_prefix)
    top = Table(data, "", problems, TABLES)
    # Tables are checked in the order docs/recipe.md lists them, so problems read top-down.
    app = _app(top, file.parent, key_prefix)
    toolchain = _toolchain(top.get_table("toolchain", _TOOLCHAIN_KEYS), file.parent)
    deps = _deps(top.get_table("deps", _DEPS_KEYS))
    fetch = _fetches(top)
    ctx = Context(file.parent, tuple(f.name for f in fetch))
    substitute = (_substitute(t, ctx) for t in top.get_tables("substitute", _SUBSTITUTE_KEYS))
    recipe = Recipe(
        file=file,
        base=file.parent,
        key_prefix=key_prefix,
        app=app,
        toolchain=toolchain,
        deps=deps,
        fetch=fetch,
        assemble=_assemble(top.get_table("assemble", _ASSEMBLE_KEYS), ctx),
        substitute=tuple(s for s in substitute if s is not None),
        verify=_verify(top.get_table("verify", _VERIFY_KEYS), ctx),
        image=_image(top.get_table("image", _IMAGE_KEYS), ctx),
    )
    problems.raise_if_any(str(file))
    return recipe


def _app(top: Table, base: Path, prefix: str) -> App:
    given = top.get_table("app", _APP_KEYS) or Table({}, "app", top.problems, _APP_KEYS)
    project = given.get("project", str)
    if project is not None and (project == "" or project.startswith("/")):
        given.add("project", "must be a folder relative to the recipe's folder, such as '.' "
                  "or 'app'")
        project = None
    folder = real_path(base / (project or "."))
    # name and version default to the project's own [project] ones, as uv reads them.
    meta = project_metadata(folder)
    if not top.has("app") and len(meta) < 2:
        top.add("app", f'required table missing; add [{prefix}app] with name = "myapp" and '
                'version = "1.0" (or give [project] name and version in pyproject.toml)')
        return App(name="", version="", project=folder)
    own = {k: v for k, v in given.data.items() if k in _APP_KEYS}
    t = Table({**meta, **own}, "app", top.problems, _APP_KEYS)
    name = t.check("name", t.get("name", str, example='"myapp"'), app_name)
    version = t.check("version", t.get("version", str, example='"1.0.0"'), app_version)
    return App(name=name or "", version=version or "", project=folder)


def project_metadata(folder: Path) -> dict[str, str]:
    """``[project]``'s static name and version in ``folder``'s pyproject.toml (what is there
    of them; a missing or unreadable file gives none: uv reports it when it reads it)."""
    try:
        table = read_toml(folder / PYPROJECT_FILE).get("project")
    except RecipeError:
        return {}
    if not isinstance(table, Mapping):
        return {}
    return {k: table[k] for k in ("name", "version") if isinstance(table.get(k), str)}


def _toolchain(t: Table | None, base: Path) -> Toolchain:
    if t is None:
        return Toolchain()
    root = t.check("root", t.get("root", str), nonempty)
    debian = _debian(t.get_table("debian", _DEBIAN_KEYS))
    if debian is not None and t.has("root"):
        t.add("", "has both root and debian; keep one (root is a folder, debian builds one)")
    library_dirs = t.get_list("library-dirs", str)
    path = t.get_list("path", str)
    for i, entry in enumerate(path or ()):
        if ":" in entry:
            t.add("path", f"{entry!r} must not contain ':', which separates PATH entries", i)
    return Toolchain(
        root=None if debian is not None else real_path(base / (root or "/")),
        debian=debian,
        python=t.check("python", t.get("python", str), absolute_path) or DEFAULT_PYTHON,
        library_dirs=DEFAULT_LIBRARY_DIRS if library_dirs is None
        else t.check_each("library-dirs", library_dirs, absolute_path),
        path=DEFAULT_PATH if path is None else t.check_each("path", path, absolute_path),
    )


def _debian(t: Table | None) -> DebianSpec | None:
    if t is None:
        return None
    suite = t.check("suite", t.get("suite", str, example='"bookworm"'), debian_suite)
    packages = t.check_each("packages", t.get_list("packages", str) or (), debian_package)
    variant = t.get("variant", str)
    if variant not in (None, "minbase", "buildd"):
        t.add("variant", f"{variant!r} is not one of: minbase, buildd")
    return DebianSpec(suite=suite or "", packages=packages,
                      variant="buildd" if variant == "buildd" else "minbase")


def _deps(t: Table | None) -> Deps:
    if t is None:
        return Deps()
    env = t.get_map("env") or EMPTY
    for name, value in env.items():
        t.check("env", name, build_env_name, name)
        if "\0" in value:
            t.add("env", "must not contain a NUL character", name)
    return Deps(
        hash=t.check("hash", t.get("hash", str), hash_value),
        exclude=t.check_each("exclude", t.get_list("exclude", str) or (), package_name),
        extras=t.check_each("extras", t.get_list("extras", str) or (), package_name),
        env=env,
        build_requires=t.check_each("build-requires", t.get_list("build-requires", str) or (),
                                    nonempty),
    )


def _fetch(t: Table) -> Fetch | None:
    name = t.check("name", t.get("name", str, example='"mylib"'), fetch_name)
    git = t.check("git", t.get("git", str), nonempty)
    url = t.check("url", t.get("url", str), url_value)
    rev = t.check("rev", t.get("rev", str), git_rev)
    if t.has("git") == t.has("url"):
        both = "has both git and url; keep exactly one" if t.has("git") else "needs git or url"
        t.add("", f'{both} (git = "https://host/repo.git" with rev, or url = "https://host/x.tar.gz")')
    if t.has("git") and not t.has("rev"):
        t.add("rev", 'required with git: the full 40-hex commit id; add e.g. rev = "<sha>" '
              "(see git ls-remote)")
    if t.has("rev") and t.has("url") and not t.has("git"):
        t.add("rev", "rev is only for git fetches; remove it")
    digest = t.check("hash", t.get("hash", str), hash_value)
    install = t.get("install", bool)
    if name is None:
        return None
    return Fetch(name=name, git=git, rev=rev, url=url, hash=digest, install=install or False)


def _fetches(top: Table) -> tuple[Fetch, ...]:
    fetches: dict[str, Fetch] = {}
    first: dict[str, str] = {}
    for t in top.get_tables("fetch", _FETCH_KEYS):
        f = _fetch(t)
        if f is None:
            continue
        if f.name in BUILTIN_PLACEHOLDERS:
            t.add("name", f"{f.name!r} clashes with the placeholder @{f.name}@; rename it")
        elif f.name in first:
            also = top.problems.full(first[f.name])
            t.add("name", f"duplicate fetch name {f.name!r} (also {also}); names must be unique")
        else:
            first[f.name] = t.at("name")
            fetches[f.name] = f
    return tuple(fetches.values())


def _assemble(t: Table | None, ctx: Context) -> Assemble:
    if t is None:
        return Assemble()
    workspace = t.get_list("workspace", str)
    links = t.get_map("links") or EMPTY
    to_rule = ctx.rooted(["site-packages"])
    copy = []
    for c in t.get_tables("copy", _COPY_KEYS):
        src = c.check("from", c.get("from", str, example='"src/app"'), ctx.rooted(ctx.fetch_names))
        to = c.check("to", c.get("to", str, example='"@site-packages@/app"'), to_rule)
        exclude = c.check_each("exclude", c.get_list("exclude", str) or (), nonempty)
        if src is not None and to is not None:
            copy.append(CopyRule(from_=src, to=to, exclude=exclude))
    checked = {}
    for name, target in links.items():
        if t.check("links", name, link_name, name):
            checked[name] = t.check("links", target, to_rule, name)
    return Assemble(
        python_path=t.check_each("python-path", t.get_list("python-path", str) or (), to_rule),
        run=tuple(_run_step(r, ctx) for r in t.get_tables("run", _RUN_KEYS)),
        workspace=None if workspace is None else t.check_each("workspace", workspace, package_name),
        ignore_missing=t.check_each("ignore-missing", t.get_list("ignore-missing", str) or (),
                                    soname_pattern),
        links=StrMap((k, v) for k, v in checked.items() if v is not None),
        copy=tuple(copy),
    )


def _substitute(t: Table, ctx: Context) -> Substitute | None:
    if t.has("file") == t.has("patch"):
        both = "has both file and patch" if t.has("file") else "needs file or patch"
        t.add("", f"{both}; a substitution is either file/replace/with[/count] or patch[/strip]")
        return None
    wrong_mode = ("replace", "with", "count") if t.has("patch") else ("strip",)
    for key in wrong_mode:
        if t.has(key):
            t.add(key, f"{key} does not go with {'patch' if t.has('patch') else 'file'}; remove it")
    if t.has("patch"):
        patch = t.check("patch", t.get("patch", str), relative_path)
        strip = t.get("strip", int)
        if strip is not None and strip < 0:
            t.add("strip", f"must be 0 or more, got {strip}")
        file = None if patch is None else real_path(ctx.base / patch)
        return Substitute(kind="patch", patch=file, strip=1 if strip is None else strip)
    count = t.get("count", int)
    if count is not None and count < 1:
        t.add("count", f"must be a positive number of occurrences, got {count}")
    return Substitute(
        kind="text",
        file=t.check("file", t.get("file", str), ctx.rooted(["site-packages"])),
        replace=t.check("replace", t.get("replace", str, example='"old text"'), nonempty),
        with_=t.check("with", t.get("with", str, example='"new text"'), ctx.placeholders),
        count=count,
    )


def _command(t: Table, key: str, item: object, ctx: Context,
             index: int | None = None) -> Command | None:
    """A shell command string or a non-empty argv, every placeholder in it known."""
    if isinstance(item, str) and item.strip():
        command: Command = item
    elif isinstance(item, list) and item and all(isinstance(a, str) for a in item):
        command = tuple(item)
    else:
        t.add(key, "expected a shell command string or a non-empty array of strings", index)
        return None
    words = command if isinstance(command, tuple) else (command,)
    return command if all(t.check(key, word, ctx.placeholders, index) for word in words) \
        else None


def _step_env(t: Table, ctx: Context) -> StrMap:
    """``env`` of a step run in the sandbox: names the sandbox does not own, placeholders."""
    env = t.get_map("env") or EMPTY
    for name, value in env.items():
        t.check("env", name, build_env_name, name)
        t.check("env", value, ctx.placeholders, name)
        if "\0" in value:
            t.add("env", "must not contain a NUL character", name)
    return env


def _timeout(t: Table) -> int:
    timeout = t.get("timeout", int)
    if timeout is not None and not 1 <= timeout <= 86400:
        t.add("timeout", f"must be a number of seconds from 1 to 86400, got {timeout}")
    return DEFAULT_TIMEOUT if timeout is None else timeout


def _run_step(t: Table, ctx: Context) -> RunStep:
    if not t.has("command"):
        t.add("command", 'required; add e.g. command = "@python@ @out@/manage.py '
              'collectstatic --noinput"')
    command = _command(t, "command", t.get("command", object), ctx) if t.has("command") else None
    return RunStep(command=command or "", env=_step_env(t, ctx), timeout=_timeout(t))


def _verify(t: Table | None, ctx: Context) -> Verify:
    if t is None:
        return Verify()
    commands = [command for i, item in enumerate(t.get("commands", list) or ())
                if (command := _command(t, "commands", item, ctx, i)) is not None]
    return Verify(
        env=_step_env(t, ctx),
        timeout=_timeout(t),
        imports=t.check_each("imports", t.get_list("imports", str) or (), module_name),
        import_all=t.get("import-all", bool) or False,
        import_skip=t.check_each("import-skip", t.get_list("import-skip", str) or (), module_name),
        commands=tuple(commands),
    )


def _image(t: Table | None, ctx: Context) -> Image:
    if t is None:
        return Image()
    env = t.get_map("env") or EMPTY
    labels = t.get_map("labels") or EMPTY
    for key, table in (("env", env), ("labels", labels)):
        for name, value in table.items():
            t.check(key, name, env_name if key == "env" else nonempty, name)
            t.check(key, value, ctx.placeholders, name)
    workdir = t.check("workdir", t.get("workdir", str), ctx.placeholders)
    if workdir is not None and not workdir.startswith(("/", "@out@")):
        t.add("workdir", f"{workdir!r} must be an absolute path")
    return Image(
        entrypoint=t.check_each(
            "entrypoint", t.get_list("entrypoint", str) or (), ctx.placeholders
        ),
        cmd=t.check_each("cmd", t.get_list("cmd", str) or (), ctx.placeholders),
        env=env,
        user=t.check("user", t.get("user", str), user_value),
        workdir=workdir,
        ports=tuple(dict.fromkeys(t.check_each("ports", t.get("ports", list) or (), port))),
        labels=labels,
        include=t.check_each("include", t.get_list("include", str) or (), absolute_path),
        path=_image_path(t, ctx),
        compression=t.check("compression", t.get("compression", str), _compression) or "gzip",
    )


def _image_path(t: Table, ctx: Context) -> tuple[str, ...] | None:
    """``[image] path``: absolute folders (or starting with a placeholder), in order."""
    folders = t.get_list("path", str)
    if folders is None:
        return None
    for i, folder in enumerate(folders):
        t.check("path", folder, ctx.placeholders, i)
        if not folder.startswith(("/", "@")) or ":" in folder:
            t.add("path", f"{folder!r} must be an absolute folder without ':'", i)
    return tuple(folders)


def _compression(value: str) -> Literal["gzip", "zstd"]:
    if value not in ("gzip", "zstd"):
        raise ValueError(f"{value!r} is not a layer compression; use \"gzip\" (the default, "
                         "read everywhere) or \"zstd\"")
    return "gzip" if value == "gzip" else "zstd"


# Files


