"""Debian's package database in a toolchain root: which package owns a file, and what else
that package installs that a program may read at run time.

A library loads more than its ``DT_NEEDED`` libraries: libmariadb dlopens its
authentication plugins from ``.../libmariadb3/plugin/``, glibc its gconv modules, libsasl2
reads its mechanisms' folder. What a library's package installs beside it is therefore
part of its runtime closure, less what no running program reads: documentation, manual
pages, translations, headers, static archives, pkg-config files and packaging metadata
and programs (:data:`SKIP_PREFIXES`, :data:`SKIP_SUFFIXES`).

The database is dpkg's own: ``/var/lib/dpkg/info/<package>[:<arch>].list`` holds every
path a package installed, as its .deb names it. On a merged-/usr root those names may pass
through the top-level symlinks (``/lib/x86_64-linux-gnu/libc.so.6``), so each name is looked
up with its folder resolved in the root. Diversions (``dpkg-divert``) are not followed: the
diverted file stays listed under the package that shipped it.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

INFO_DIR = PurePosixPath("/var/lib/dpkg/info")
# Never part of a runtime closure, whichever package ships them.
SKIP_PREFIXES = tuple(PurePosixPath(p) for p in (
    "/usr/share/doc", "/usr/share/doc-base", "/usr/share/man", "/usr/share/info",
    "/usr/share/locale", "/usr/share/lintian", "/usr/share/bug", "/usr/share/gtk-doc",
    "/usr/share/help", "/usr/share/bash-completion", "/usr/share/zsh", "/usr/share/fish",
    "/usr/share/menu", "/usr/share/applications", "/usr/share/aclocal",
    "/usr/share/pkgconfig", "/usr/include", "/etc/init.d", "/etc/systemd", "/etc/logrotate.d",
    "/etc/cron.d", "/etc/cron.daily", "/usr/lib/systemd", "/lib/systemd", "/usr/lib/tmpfiles.d",
    "/usr/lib/sysusers.d",
    # Sources of locales, for localedef (the compiled ones are in /usr/lib/locale).
    "/usr/share/i18n",
    # Programs: a library does not run its package's programs (a check that does is traced,
    # and what it runs comes in as "opened by").
    "/bin", "/sbin", "/usr/bin", "/usr/sbin", "/usr/games"))
SKIP_SUFFIXES = (".a", ".h", ".pc")
SKIP_GLOBS = ("*/pkgconfig/*", "*/cmake/*")
# Only what a build step and the image see (sandbox.ROOT_ENTRIES); /var and the like are
# the running system's, not the program's.
TOP_LEVEL = ("bin", "etc", "lib", "lib32", "lib64", "libx32", "opt", "sbin", "usr")

Resolver = Callable[[PurePosixPath], "PurePosixPath | None"]


# The same as strings, each with its own "/" so that a prefix matches whole names only:
# runtime_files tests every path of every package a library brings, and pathlib's
# is_relative_to cost most of the runtime closure's time (profiled on the example).
_SKIP_TEXT = tuple(str(p) for p in SKIP_PREFIXES)
_SKIP_FOLDERS = tuple(f"{p}/" for p in _SKIP_TEXT)


def is_runtime_file(path: PurePosixPath) -> bool:
    """Whether a program may read ``path`` at run time (not documentation, headers, ...)."""
    if len(path.parts) < 2 or path.parts[1] not in TOP_LEVEL:
        return False
    text = str(path)  # normalised by PurePosixPath: no "//", no "/./", no trailing "/"
    if text in _SKIP_TEXT or text.startswith(_SKIP_FOLDERS):
        return False
    return not (text.endswith(SKIP_SUFFIXES) or any(fnmatch.fnmatchcase(text, g)
                                                    for g in SKIP_GLOBS))


def package_name(list_file: str) -> str:
    """``libc6:amd64.list`` -> ``libc6``."""
    return list_file.removesuffix(".list").split(":", 1)[0]


@dataclass(frozen=True, slots=True)
class PackageDb:
    """Each package's listed paths, and who lists a file of each name (for :meth:`owner`)."""

    paths: dict[str, tuple[str, ...]]
    by_name: dict[str, tuple[tuple[str, str], ...]]  # file name -> (package, listed path)

    def owner(self, path: PurePosixPath, resolve: Resolver) -> str | None:
        """The package that installed ``path``, compared with its folder resolved in the root
        (``/lib/x86_64-linux-gnu/libc.so.6`` is ``/usr/lib/...`` on a merged-/usr root)."""
        real = resolve(path)
        wanted = {canonical(path, resolve), *([real] if real is not None else [])}
        for name in dict.fromkeys([path.name, *([real.name] if real is not None else [])]):
            for package, listed in self.by_name.get(name, ()):
                if canonical(PurePosixPath(listed), resolve) in wanted:
                    return package
        return None

    def runtime_files(self, package: str) -> list[PurePosixPath]:
        """The package's paths a program may read at run time, as the package names them."""
        found = (PurePosixPath(p) for p in self.paths.get(package, ()))
        return [p for p in found if is_runtime_file(p)]


def read_db(root: Path) -> PackageDb | None:
    """The dpkg database of ``root``, or None if it has none.

    Packages are read in name order; a file two packages list (dpkg allows it only with a
    diversion or a ``Replaces``) is found for the first.
    """
    info = root / str(INFO_DIR).lstrip("/")
    if not info.is_dir():
        return None
    paths: dict[str, tuple[str, ...]] = {}
    by_name: dict[str, list[tuple[str, str]]] = {}
    for list_file in sorted(os.listdir(info)):
        if not list_file.endswith(".list"):
            continue
        with open(info / list_file, "rb") as f:
            # One decode per file: "\n" is never part of a UTF-8 sequence, and
            # surrogateescape decodes byte by byte what is not UTF-8.
            listed = os.fsdecode(f.read()).split("\n")
        # A package installed for two architectures lists the same shared files twice.
        package = package_name(list_file)
        new = [p for p in listed if p.startswith("/") and p != "/."]
        paths[package] = tuple(dict.fromkeys([*paths.get(package, ()), *new]))
        for path in new:
            by_name.setdefault(path.rpartition("/")[2], []).append((package, path))
    return PackageDb(paths, {k: tuple(v) for k, v in by_name.items()})


def canonical(path: PurePosixPath, resolve: Resolver) -> PurePosixPath:
    """``path`` with its folder resolved, so two spellings of one file compare equal."""
    return (resolve(path.parent) or path.parent) / path.name
