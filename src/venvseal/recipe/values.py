"""The value rules of recipe keys (see tomlcheck): each returns the checked value or raises
ValueError with the message a user reads; and the placeholder rules table parsers share.
"""


from __future__ import annotations

import keyword
import os
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from venvseal.errors import HashFormatError
from venvseal.hashes import Sha256, parse_sha256
from venvseal.netutil import redact_url
from venvseal.recipe.model import BUILTIN_PLACEHOLDERS
from venvseal.recipe.tomlcheck import (
    matching,
    relative_path,
)

# Value rules (see tomlcheck): return the checked value or raise ValueError with the message.

store_name = matching(r"[A-Za-z0-9+._?=-]+", "usable in a store path (letters, digits, +-._?=)")
package_name = matching(r"[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9]",
                        "a valid name (PEP 508)")
fetch_name = matching(r"[a-z0-9][a-z0-9._-]*", "a fetch name ([a-z0-9][a-z0-9._-]*)")
debian_suite = matching(r"[A-Za-z0-9][A-Za-z0-9._-]*", "a Debian suite such as 'bookworm'")
debian_package = matching(r"[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+:~-]+)?", "a Debian package name")
user_value = matching(r"[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)?",
                      "'user', 'uid', 'user:group' or 'uid:gid'")
env_name = matching(r"[A-Za-z_][A-Za-z0-9_]*", "an environment variable name")
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


def real_path(path: Path) -> Path:
    """``path`` with symlinks resolved; a symlink loop is left for the caller's existence
    check to report (Path.resolve raises RuntimeError on one before Python 3.13)."""
    return Path(os.path.realpath(path))


def build_env_name(name: str) -> str:
    if name in RESERVED_ENV or name.startswith("UV_"):
        why = RESERVED_ENV.get(name, _UV_OWNED)
        raise ValueError(f"{name} cannot be set here: {why}; remove it")
    return env_name(name)


def app_version(text: str) -> str:
    if not text:
        raise ValueError('must not be empty; write e.g. version = "1.0.0"')
    return store_name(text)


def app_name(text: str) -> str:
    if text.startswith(".") or len(text) > 100:
        raise ValueError(f"{text!r} must not start with '.' and must be at most 100 characters")
    return store_name(text)


def hash_value(text: str) -> Sha256 | None:
    try:
        return parse_sha256(text) if text else None
    except HashFormatError as e:  # the Problem carries the key path, the message the rest
        raise ValueError(str(e)) from None


def git_rev(text: str) -> str:
    if not re.fullmatch(r"[0-9a-fA-F]{40}", text):
        raise ValueError(f"{text!r} is not a full 40-hex commit id; a branch, tag or short id "
                         "can move, so pin the commit")
    return text.lower()


def url_value(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*://\S+", text):
        shown = redact_url(text) if "://" in text else text  # a token stays hidden
        raise ValueError(f"{shown!r} is not a URL such as 'https://host/file.tar.gz'")
    return text


def module_name(text: str) -> str:
    if not all(p.isidentifier() and not keyword.iskeyword(p) for p in text.split(".")):
        raise ValueError(f"{text!r} is not a module name such as 'package.module'")
    return text


def link_name(text: str) -> str:
    if not text or "/" in text or text in (".", "..") or "\0" in text:
        raise ValueError(f"link name {text!r} must be a single file name (no '/')")
    return text


def soname_pattern(text: str) -> str:
    if not text or "/" in text:
        raise ValueError(f"{text!r} is not a soname pattern such as 'libfoo.so.*'")
    return text


def nonempty(text: str) -> str:
    if not text:
        raise ValueError("must not be empty")
    return text


@dataclass(frozen=True, slots=True)
class Context:
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


