"""The recipe's model: the frozen dataclasses a recipe is read into, and their defaults.

:mod:`venvseal.recipe.parse` checks a parsed TOML mapping into these; :mod:`venvseal.recipe.files`
finds, reads and rewrites recipe files. docs/recipe.md is the user's reference for every key.
"""


from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from venvseal.hashes import Sha256
from venvseal.recipe.tomlcheck import (
    EMPTY,
    StrMap,
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


DEFAULT_TIMEOUT = 300  # seconds a [verify] check or an [[assemble.run]] command may take


@dataclass(frozen=True, kw_only=True, slots=True)
class RunStep:
    """[[assemble.run]]: a command run offline in the closure being built (@out@ writable)."""

    command: Command
    env: StrMap = EMPTY
    timeout: int = DEFAULT_TIMEOUT


@dataclass(frozen=True, kw_only=True, slots=True)
class Assemble:
    """[assemble]: the offline assembly stage; ``workspace`` None means every member."""

    workspace: tuple[str, ...] | None = None
    ignore_missing: tuple[str, ...] = ()
    links: StrMap = EMPTY
    copy: tuple[CopyRule, ...] = ()
    python_path: tuple[str, ...] = ()  # closure folders put on sys.path (a .pth file)
    run: tuple[RunStep, ...] = ()


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
    env: StrMap = EMPTY  # for imports and commands
    timeout: int = DEFAULT_TIMEOUT  # seconds, per check


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
    compression: Literal["gzip", "zstd"] = "gzip"  # of the layers
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


