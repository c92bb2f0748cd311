"""Reading ``uv.lock``: what the deps stage installs and which workspace members exist.

Only the fields venvseal needs are read; the file's own format is uv's (``version = 1``).
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass
from pathlib import Path

from venvseal.errors import EXIT_USAGE, PathError

# Sources that point at the local file system rather than an index, git or a URL.
LOCAL_SOURCES = ("editable", "virtual", "directory", "path")
# Every key of a ``source`` table that names its kind; the others (a URL source's
# ``subdirectory``) qualify it.
SOURCE_KINDS = ("registry", "git", "url", *LOCAL_SOURCES)


class LockError(PathError):
    """uv.lock is missing, unreadable or stale: bad input (exit 2)."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True, kw_only=True, slots=True)
class LockedPackage:
    """One ``[[package]]`` entry."""

    name: str
    version: str
    source_kind: str  # registry, editable, virtual, directory, path, git or url
    source: str
    has_sdist: bool
    has_wheels: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class Lock:
    """The parts of uv.lock venvseal uses, plus the digest of its bytes."""

    file: Path
    digest: str
    requires_python: str | None
    exclude_newer: str | None  # [options] exclude-newer: pins resolutions made outside the lock
    members: tuple[str, ...]
    packages: tuple[LockedPackage, ...]

    def local_packages(self) -> tuple[LockedPackage, ...]:
        """Workspace members and the root project (sources inside the project)."""
        return tuple(p for p in self.packages
                     if p.source_kind in LOCAL_SOURCES and p.name in self.members)

    def workspace_members(self) -> tuple[LockedPackage, ...]:
        """Workspace members other than the root project itself."""
        return tuple(p for p in self.local_packages() if p.source not in (".", ""))

    def root_package(self) -> LockedPackage | None:
        """The root project's own entry (its source is the project folder), if it has one."""
        return next((p for p in self.local_packages() if p.source in (".", "")), None)

    def installed_members(self) -> tuple[LockedPackage, ...]:
        """The local projects the assembly builds and installs: every workspace member, and
        the root project when uv treats it as a package (it has a ``[build-system]`` or
        ``tool.uv.package = true``; uv then locks it as ``editable``, else ``virtual``)."""
        root = self.root_package()
        packaged = () if root is None or root.source_kind == "virtual" else (root,)
        return (*packaged, *self.workspace_members())

    def path_dependencies(self) -> tuple[LockedPackage, ...]:
        """Local directories and archives that uv installs like any other dependency."""
        return tuple(p for p in self.packages
                     if p.source_kind in LOCAL_SOURCES and p.name not in self.members)


def _package(entry: dict[str, object]) -> LockedPackage:
    source = entry.get("source")
    kind, where = "registry", ""
    if isinstance(source, dict):
        for kind_key in SOURCE_KINDS:
            if kind_key in source:
                kind, where = kind_key, str(source[kind_key])
                break
    return LockedPackage(
        name=str(entry.get("name", "")),
        version=str(entry.get("version", "")),
        source_kind=kind,
        source=where,
        has_sdist="sdist" in entry,
        has_wheels=bool(entry.get("wheels")),
    )


def read_lock(project: Path) -> Lock:
    """Read ``project/uv.lock``; LockError (naming the file and the fix) when it cannot."""
    file = project / "uv.lock"
    if not project.is_dir():
        raise LockError(file, f"the project folder {project} does not exist or is not a "
                        "folder; fix [app] project in the recipe")
    if file.exists() and not file.is_file():  # a fifo would block the read forever
        raise LockError(file, "cannot read it (not a regular file); replace it with the "
                        "uv.lock that 'uv lock' writes")
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise LockError(file, "no uv.lock next to pyproject.toml; run 'uv lock' in "
                        f"{project} and commit it with the recipe") from None
    except OSError as err:
        raise LockError(file, f"cannot read it ({err.strerror})") from err
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise LockError(file, f"not a valid uv.lock ({err}); recreate it with 'uv lock'") from err
    except RecursionError:  # tomllib parses nested arrays recursively
        raise LockError(file, "not a valid uv.lock (nested too deeply to read); recreate it "
                        "with 'uv lock'") from None
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        # Another tool's lock file (poetry.lock, a JSON file) renamed: uv would fail later
        # with a parse error from inside the sandbox.
        raise LockError(file, "not a uv lock file (it has no integer 'version' at the top); "
                        "recreate it with 'uv lock'")
    manifest = data.get("manifest", {})
    members = manifest.get("members", []) if isinstance(manifest, dict) else []
    entries = data.get("package", [])
    if not isinstance(members, list) or not isinstance(entries, list):
        raise LockError(file, "not a valid uv.lock (manifest.members and package must be "
                        "arrays); recreate it with 'uv lock'")
    packages = tuple(_package(e) for e in entries if isinstance(e, dict))
    if not members:
        # A lone project (no workspace) has no [manifest]; its own package, at ".", is
        # the only member, and must not be taken for a path dependency.
        members = [p.name for p in packages if p.source_kind in LOCAL_SOURCES
                   and p.source == "."]
    return Lock(
        file=file,
        digest=hashlib.sha256(raw).hexdigest(),
        requires_python=data.get("requires-python"),
        exclude_newer=(data.get("options") or {}).get("exclude-newer"),
        members=tuple(str(m) for m in members),
        packages=packages,
    )
