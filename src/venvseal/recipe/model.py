"""The recipe: ``venvseal.toml`` (or ``[tool.venvseal]``) in, validated frozen dataclasses out.

:func:`parse_recipe` is pure: it checks a parsed TOML mapping and raises one
:class:`~venvseal.errors.RecipeError` carrying every problem, each named by its full key path.
:func:`find_recipe` and :func:`load_recipe` locate and read the file; :func:`update_deps_hash`
rewrites ``deps.hash`` in place. docs/recipe.md is the user's reference for every key.
"""

from __future__ import annotations

import dataclasses
import keyword
import os
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from venvseal.errors import HashFormatError, Problem, RecipeError
from venvseal.hashes import Sha256, parse_sha256
from venvseal.recipe.tomlcheck import (
    EMPTY,
    Problems,
    StrMap,
    Table,
    absolute_path,
    check_type,
    matching,
    port,
    read_toml,
    relative_path,
    set_toml_value,
)

RECIPE_FILE = "venvseal.toml"
PYPROJECT_FILE = "pyproject.toml"
PYPROJECT_PREFIX = "tool.venvseal."
TABLES = ("app", "toolchain", "deps", "fetch", "assemble", "substitute", "verify", "image")
BUILTIN_PLACEHOLDERS = ("out", "python", "site-packages")  # each [[fetch]] adds @<name>@

_P = PurePosixPath
DEFAULT_PYTHON = _P("/usr/bin/python3")
DEFAULT_LIBRARY_DIRS = tuple(
    _P(d) for d in ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib", "/lib")
)
DEFAULT_PATH = (_P("/usr/local/bin"), _P("/usr/bin"), _P("/bin"))

DebianVariant = Literal["minbase", "buildd"]
SubstituteKind = Literal["text", "patch"]
Command = str | tuple[str, ...]  # a line for /bin/sh -c, or an argv


@dataclass(frozen=True, kw_only=True, slots=True)
class App:
    """[app]: what is built; ``project`` is the folder holding pyproject.toml and uv.lock."""

    name: str
    version: str
    project: Path


@dataclass(frozen=True, kw_only=True, slots=True)
class DebianSpec:
    """[toolchain.debian]: a root file system made from Debian packages."""

    suite: str
    packages: tuple[str, ...] = ()
    variant: DebianVariant = "minbase"


@dataclass(frozen=True, kw_only=True, slots=True)
class Toolchain:
    """[toolchain]: where Python and libraries come from; paths are inside the root."""

    root: Path | None = Path("/")  # None when ``debian`` builds the root
    debian: DebianSpec | None = None
    python: PurePosixPath = DEFAULT_PYTHON
    library_dirs: tuple[PurePosixPath, ...] = DEFAULT_LIBRARY_DIRS
    path: tuple[PurePosixPath, ...] = DEFAULT_PATH


@dataclass(frozen=True, kw_only=True, slots=True)
class Deps:
    """[deps]: the fixed-output dependency stage; ``hash`` None means not declared yet."""

    hash: Sha256 | None = None
    exclude: tuple[str, ...] = ()
    extras: tuple[str, ...] = ()
    env: StrMap = EMPTY
    build_requires: tuple[str, ...] = ()  # PEP 508 requirements, beyond the members' own


@dataclass(frozen=True, kw_only=True, slots=True)
class Fetch:
    """[[fetch]]: an extra fixed-output source, a git commit or a URL."""

    name: str
    git: str | None = None
    rev: str | None = None  # lower-case 40-hex commit id, with git
    url: str | None = None
    hash: Sha256 | None = None
    install: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class CopyRule:
    """[[assemble.copy]]: ``from_`` is project-relative or starts with ``@<fetch>@``."""

    from_: str
    to: str  # relative to the closure root, may start with @site-packages@
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class Assemble:
    """[assemble]: the offline assembly stage; ``workspace`` None means every member."""

    workspace: tuple[str, ...] | None = None
    ignore_missing: tuple[str, ...] = ()
    links: StrMap = EMPTY
    copy: tuple[CopyRule, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class Substitute:
    """[[substitute]]: replace text in ``file`` (kind "text") or apply ``patch``."""

    kind: SubstituteKind
    file: str | None = None
    replace: str | None = None
    with_: str | None = None
    count: int | None = None  # None: at least one occurrence
    patch: Path | None = None
    strip: int = 1


@dataclass(frozen=True, kw_only=True, slots=True)
class Verify:
    """[verify]: checks run with the finished closure."""

    imports: tuple[str, ...] = ()
    import_all: bool = False
    import_skip: tuple[str, ...] = ()
    commands: tuple[Command, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class Image:
    """[image]: OCI image configuration; ``ports`` are normalised to "N/tcp" form."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: StrMap = EMPTY
    user: str | None = None
    workdir: str | None = None
    ports: tuple[str, ...] = ()
    labels: StrMap = EMPTY
    include: tuple[PurePosixPath, ...] = ()
    path: tuple[str, ...] | None = None  # the image's PATH folders; None: computed


@dataclass(frozen=True, kw_only=True, slots=True)
class Recipe:
    """A validated recipe; ``key_prefix`` ("" or "tool.venvseal.") prefixes key paths."""

    file: Path
    base: Path
    key_prefix: str
    app: App
    toolchain: Toolchain = Toolchain()
    deps: Deps = Deps()
    fetch: tuple[Fetch, ...] = ()
    assemble: Assemble = Assemble()
    substitute: tuple[Substitute, ...] = ()
    verify: Verify = Verify()
    image: Image = Image()

    @property
    def project(self) -> Path:
        """The folder holding the app's pyproject.toml and uv.lock."""
        return self.app.project

    @property
    def placeholders(self) -> tuple[str, ...]:
        """Every placeholder name the recipe may use, without the @s."""
        return BUILTIN_PLACEHOLDERS + tuple(f.name for f in self.fetch)

    def canonical(self, *tables: str) -> dict[str, Any]:
        """JSON-able values of ``tables`` (all when none), keyed as in TOML, for cache keys.

        Host paths inside the recipe's folder are made relative to it, so moving a checkout
        does not change the result; hashes are SRI strings; tables are sorted by key.
        """
        unknown = [t for t in tables if t not in TABLES]
        if unknown:
            raise ValueError(f"not recipe tables: {unknown}")
        return {t: _canonical(getattr(self, t), self.base) for t in tables or TABLES}


def _canonical(value: object, base: Path) -> object:
    if isinstance(value, Path):
        return value.relative_to(base).as_posix() if value.is_relative_to(base) else str(value)
    if isinstance(value, PurePosixPath | Sha256):
        return str(value)
    if isinstance(value, StrMap):
        return dict(value)
    if isinstance(value, tuple):
        return [_canonical(v, base) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = dataclasses.fields(value)
        return {f.name.rstrip("_").replace("_", "-"): _canonical(getattr(value, f.name), base)
                for f in fields}
    return value


# Value rules (see tomlcheck): return the checked value or raise ValueError with the message.

_store_name = matching(r"[A-Za-z0-9+._?=-]+", "usable in a store path (letters, digits, +-._?=)")
_package = matching(r"[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9]", "a valid name (PEP 508)")
_fetch_name = matching(r"[a-z0-9][a-z0-9._-]*", "a fetch name ([a-z0-9][a-z0-9._-]*)")
_debian_suite = matching(r"[A-Za-z0-9][A-Za-z0-9._-]*", "a Debian suite such as 'bookworm'")
_debian_package = matching(r"[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+:~-]+)?", "a Debian package name")
_user = matching(r"[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)?", "'user', 'uid', 'user:group' or 'uid:gid'")
_env_name = matching(r"[A-Za-z_][A-Za-z0-9_]*", "an environment variable name")
_PLACEHOLDER = re.compile(r"@([A-Za-z0-9._-]+)@")
_LEADING_PLACEHOLDER = re.compile(r"@([A-Za-z0-9._-]+)@(/|$)")
_PINNED = "the sandbox pins it so every build sees the same value"
RESERVED_ENV = {  # build variables the sandbox owns, and why
    "PATH": "it is built from toolchain.path",
    "HOME": "the sandbox points it at an empty private folder",
    "TMPDIR": "the sandbox points it at an empty private folder",
    **{name: _PINNED for name in ("SOURCE_DATE_EPOCH", "PYTHONHASHSEED", "LANG", "LC_ALL", "TZ")},
}
_UV_OWNED = "venvseal sets uv's options itself, so the output depends only on uv.lock and recipe"


def _real(path: Path) -> Path:
    """``path`` with symlinks resolved; a symlink loop is left for the caller's existence
    check to report (Path.resolve raises RuntimeError on one before Python 3.13)."""
    return Path(os.path.realpath(path))


def _build_env_name(name: str) -> str:
    if name in RESERVED_ENV or name.startswith("UV_"):
        why = RESERVED_ENV.get(name, _UV_OWNED)
        raise ValueError(f"{name} cannot be set here: {why}; remove it")
    return _env_name(name)


def _app_version(text: str) -> str:
    if not text:
        raise ValueError('must not be empty; write e.g. version = "1.0.0"')
    return _store_name(text)


def _app_name(text: str) -> str:
    if text.startswith(".") or len(text) > 100:
        raise ValueError(f"{text!r} must not start with '.' and must be at most 100 characters")
    return _store_name(text)


def _hash(text: str) -> Sha256 | None:
    try:
        return parse_sha256(text) if text else None
    except HashFormatError as e:  # the Problem carries the key path, the message the rest
        raise ValueError(str(e)) from None


def _git_rev(text: str) -> str:
    if not re.fullmatch(r"[0-9a-fA-F]{40}", text):
        raise ValueError(f"{text!r} is not a full 40-hex commit id; a branch, tag or short id "
                         "can move, so pin the commit")
    return text.lower()


def _url(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*://\S+", text):
        raise ValueError(f"{text!r} is not a URL such as 'https://host/file.tar.gz'")
    return text


def _module(text: str) -> str:
    if not all(p.isidentifier() and not keyword.iskeyword(p) for p in text.split(".")):
        raise ValueError(f"{text!r} is not a module name such as 'package.module'")
    return text


def _link_name(text: str) -> str:
    if not text or "/" in text or text in (".", "..") or "\0" in text:
        raise ValueError(f"link name {text!r} must be a single file name (no '/')")
    return text


def _soname_pattern(text: str) -> str:
    if not text or "/" in text:
        raise ValueError(f"{text!r} is not a soname pattern such as 'libfoo.so.*'")
    return text


def _nonempty(text: str) -> str:
    if not text:
        raise ValueError("must not be empty")
    return text


@dataclass(frozen=True, slots=True)
class _Context:
    """What table parsers share: the recipe's folder and the fetch names."""

    base: Path
    fetch_names: tuple[str, ...]

    def placeholders(self, text: str) -> str:
        """``text`` if every @word@ in it is a known placeholder."""
        known = BUILTIN_PLACEHOLDERS + self.fetch_names
        bad = [m.group(0) for m in _PLACEHOLDER.finditer(text) if m.group(1) not in known]
        if bad:
            names = ", ".join(f"@{p}@" for p in known)
            raise ValueError(f"unknown placeholder {', '.join(bad)}; known: {names}")
        return text

    def rooted(self, prefixes: Collection[str]) -> Callable[[str], str]:
        """A rule for relative paths that may start with one of the placeholders ``prefixes``."""
        def rule(text: str) -> str:
            m = _LEADING_PLACEHOLDER.match(text)
            if m is None:
                if _PLACEHOLDER.search(text):
                    raise ValueError(f"{text!r}: a placeholder may only start a path")
                return relative_path(text)
            if m.group(1) not in prefixes:
                allowed = ", ".join(f"@{p}@" for p in prefixes) or "none (no [[fetch]] declared)"
                word = m.group(0).rstrip("/")
                raise ValueError(f"{word} cannot start this path; allowed: {allowed}")
            rest = text[m.end():]
            if _PLACEHOLDER.search(rest):
                raise ValueError(f"{text!r}: a placeholder may only start a path")
            return f"@{m.group(1)}@" + (f"/{relative_path(rest)}" if rest else "")
        return rule


_APP_KEYS = ("name", "version", "project")
_TOOLCHAIN_KEYS = ("root", "debian", "python", "library-dirs", "path")
_DEBIAN_KEYS = ("suite", "packages", "variant")
_DEPS_KEYS = ("hash", "exclude", "extras", "env", "build-requires")
_FETCH_KEYS = ("name", "git", "rev", "url", "hash", "install")
_ASSEMBLE_KEYS = ("workspace", "ignore-missing", "links", "copy")
_COPY_KEYS = ("from", "to", "exclude")
_SUBSTITUTE_KEYS = ("file", "replace", "with", "count", "patch", "strip")
_VERIFY_KEYS = ("imports", "import-all", "import-skip", "commands")
_IMAGE_KEYS = ("entrypoint", "cmd", "env", "user", "workdir", "ports", "labels", "include",
               "path")


def parse_recipe(data: Mapping[str, object], *, file: Path, key_prefix: str = "") -> Recipe:
    """Validate a parsed recipe table; raise RecipeError listing every problem found.

    ``file`` is the recipe file (relative host paths are taken from its folder) and
    ``key_prefix`` goes before every key path in messages ("tool.venvseal." in pyproject.toml).
    """
    file = _real(file)
    problems = Problems(key_prefix)
    top = Table(data, "", problems, TABLES)
    # Tables are checked in the order docs/recipe.md lists them, so problems read top-down.
    app = _app(top, file.parent, key_prefix)
    toolchain = _toolchain(top.get_table("toolchain", _TOOLCHAIN_KEYS), file.parent)
    deps = _deps(top.get_table("deps", _DEPS_KEYS))
    fetch = _fetches(top)
    ctx = _Context(file.parent, tuple(f.name for f in fetch))
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
    missing = f'required table missing; add [{prefix}app] with name = "myapp" and version = "1.0"'
    t = top.get_table("app", _APP_KEYS, missing=missing)
    if t is None:
        return App(name="", version="", project=base)
    name = t.check("name", t.get("name", str, example='"myapp"'), _app_name)
    version = t.check("version", t.get("version", str, example='"1.0.0"'), _app_version)
    project = t.get("project", str)
    if project is not None and (project == "" or project.startswith("/")):
        t.add("project", "must be a folder relative to the recipe's folder, such as '.' or 'app'")
        project = None
    folder = _real(base / (project or "."))
    return App(name=name or "", version=version or "", project=folder)


def _toolchain(t: Table | None, base: Path) -> Toolchain:
    if t is None:
        return Toolchain()
    root = t.check("root", t.get("root", str), _nonempty)
    debian = _debian(t.get_table("debian", _DEBIAN_KEYS))
    if debian is not None and t.has("root"):
        t.add("", "has both root and debian; keep one (root is a folder, debian builds one)")
    library_dirs = t.get_list("library-dirs", str)
    path = t.get_list("path", str)
    for i, entry in enumerate(path or ()):
        if ":" in entry:
            t.add("path", f"{entry!r} must not contain ':', which separates PATH entries", i)
    return Toolchain(
        root=None if debian is not None else _real(base / (root or "/")),
        debian=debian,
        python=t.check("python", t.get("python", str), absolute_path) or DEFAULT_PYTHON,
        library_dirs=DEFAULT_LIBRARY_DIRS if library_dirs is None
        else t.check_each("library-dirs", library_dirs, absolute_path),
        path=DEFAULT_PATH if path is None else t.check_each("path", path, absolute_path),
    )


def _debian(t: Table | None) -> DebianSpec | None:
    if t is None:
        return None
    suite = t.check("suite", t.get("suite", str, example='"bookworm"'), _debian_suite)
    packages = t.check_each("packages", t.get_list("packages", str) or (), _debian_package)
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
        t.check("env", name, _build_env_name, name)
        if "\0" in value:
            t.add("env", "must not contain a NUL character", name)
    return Deps(
        hash=t.check("hash", t.get("hash", str), _hash),
        exclude=t.check_each("exclude", t.get_list("exclude", str) or (), _package),
        extras=t.check_each("extras", t.get_list("extras", str) or (), _package),
        env=env,
        build_requires=t.check_each("build-requires", t.get_list("build-requires", str) or (),
                                    _nonempty),
    )


def _fetch(t: Table) -> Fetch | None:
    name = t.check("name", t.get("name", str, example='"mylib"'), _fetch_name)
    git = t.check("git", t.get("git", str), _nonempty)
    url = t.check("url", t.get("url", str), _url)
    rev = t.check("rev", t.get("rev", str), _git_rev)
    if t.has("git") == t.has("url"):
        both = "has both git and url; keep exactly one" if t.has("git") else "needs git or url"
        t.add("", f'{both} (git = "https://host/repo.git" with rev, or url = "https://host/x.tar.gz")')
    if t.has("git") and not t.has("rev"):
        t.add("rev", 'required with git: the full 40-hex commit id; add e.g. rev = "<sha>" '
              "(see git ls-remote)")
    if t.has("rev") and t.has("url") and not t.has("git"):
        t.add("rev", "rev is only for git fetches; remove it")
    digest = t.check("hash", t.get("hash", str), _hash)
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


def _assemble(t: Table | None, ctx: _Context) -> Assemble:
    if t is None:
        return Assemble()
    workspace = t.get_list("workspace", str)
    links = t.get_map("links") or EMPTY
    to_rule = ctx.rooted(["site-packages"])
    copy = []
    for c in t.get_tables("copy", _COPY_KEYS):
        src = c.check("from", c.get("from", str, example='"src/app"'), ctx.rooted(ctx.fetch_names))
        to = c.check("to", c.get("to", str, example='"@site-packages@/app"'), to_rule)
        exclude = c.check_each("exclude", c.get_list("exclude", str) or (), _nonempty)
        if src is not None and to is not None:
            copy.append(CopyRule(from_=src, to=to, exclude=exclude))
    checked = {}
    for name, target in links.items():
        if t.check("links", name, _link_name, name):
            checked[name] = t.check("links", target, to_rule, name)
    return Assemble(
        workspace=None if workspace is None else t.check_each("workspace", workspace, _package),
        ignore_missing=t.check_each("ignore-missing", t.get_list("ignore-missing", str) or (),
                                    _soname_pattern),
        links=StrMap((k, v) for k, v in checked.items() if v is not None),
        copy=tuple(copy),
    )


def _substitute(t: Table, ctx: _Context) -> Substitute | None:
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
        file = None if patch is None else _real(ctx.base / patch)
        return Substitute(kind="patch", patch=file, strip=1 if strip is None else strip)
    count = t.get("count", int)
    if count is not None and count < 1:
        t.add("count", f"must be a positive number of occurrences, got {count}")
    return Substitute(
        kind="text",
        file=t.check("file", t.get("file", str), ctx.rooted(["site-packages"])),
        replace=t.check("replace", t.get("replace", str, example='"old text"'), _nonempty),
        with_=t.check("with", t.get("with", str, example='"new text"'), ctx.placeholders),
        count=count,
    )


def _verify(t: Table | None, ctx: _Context) -> Verify:
    if t is None:
        return Verify()
    commands: list[Command] = []
    for i, item in enumerate(t.get("commands", list) or ()):
        if isinstance(item, str) and item.strip():
            command: Command = item
        elif isinstance(item, list) and item and all(isinstance(a, str) for a in item):
            command = tuple(item)
        else:
            t.add("commands", "expected a shell command string or a non-empty array of strings", i)
            continue
        words = command if isinstance(command, tuple) else (command,)
        if all(t.check("commands", word, ctx.placeholders, i) for word in words):
            commands.append(command)
    return Verify(
        imports=t.check_each("imports", t.get_list("imports", str) or (), _module),
        import_all=t.get("import-all", bool) or False,
        import_skip=t.check_each("import-skip", t.get_list("import-skip", str) or (), _module),
        commands=tuple(commands),
    )


def _image(t: Table | None, ctx: _Context) -> Image:
    if t is None:
        return Image()
    env = t.get_map("env") or EMPTY
    labels = t.get_map("labels") or EMPTY
    for key, table in (("env", env), ("labels", labels)):
        for name, value in table.items():
            t.check(key, name, _env_name if key == "env" else _nonempty, name)
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
        user=t.check("user", t.get("user", str), _user),
        workdir=workdir,
        ports=tuple(dict.fromkeys(t.check_each("ports", t.get("ports", list) or (), port))),
        labels=labels,
        include=t.check_each("include", t.get_list("include", str) or (), absolute_path),
        path=_image_path(t, ctx),
    )


def _image_path(t: Table, ctx: _Context) -> tuple[str, ...] | None:
    """``[image] path``: absolute folders (or starting with a placeholder), in order."""
    folders = t.get_list("path", str)
    if folders is None:
        return None
    for i, folder in enumerate(folders):
        t.check("path", folder, ctx.placeholders, i)
        if not folder.startswith(("/", "@")) or ":" in folder:
            t.add("path", f"{folder!r} must be an absolute folder without ':'", i)
    return tuple(folders)


# Files


def find_recipe(arg: Path | None, cwd: Path | None = None) -> tuple[Path, str]:
    """The recipe file and its key prefix for ``arg``, a file or folder.

    A folder is searched for venvseal.toml or a pyproject.toml with [tool.venvseal]. A
    relative ``arg`` is taken from ``cwd`` when given; ``arg`` None means ``cwd`` itself.
    The library never reads the process's working folder: the caller passes it.
    """
    if arg is None:
        if cwd is None:
            raise ValueError("find_recipe needs a path or cwd")
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
