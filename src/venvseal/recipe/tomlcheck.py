"""Reading, checking and editing TOML: typed getters that collect every problem.

The model is pypa/packaging's ``pylock.py``: a table is read through a few typed getters,
each problem is recorded with its full key path (``fetch[1].hash``, ``deps.env.PATH``) and
all are raised together, so a user fixes a file in one pass. Getters return ``None`` for a
key that is absent or wrong; callers supply defaults. Value rules are plain functions that
raise ``ValueError`` with a user-facing message; :meth:`Table.check` turns that into a problem.
"""

from __future__ import annotations

import difflib
import os
import posixpath
import re
import tempfile
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from venvseal.errors import Problem, RecipeError
from venvseal.netutil import scrub

T = TypeVar("T")
U = TypeVar("U")

MAX_TOML_BYTES = 1 << 20  # recipes are hand-written; anything bigger is a mistake
NESTED_TOO_DEEPLY = ("invalid TOML: arrays or tables nested too deeply to read; check that "
                     "this is the right file")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_TOML_POSITION = re.compile(r"\s*\((?:at line (\d+), column (\d+)|at end of document)\)$")
_PORT = re.compile(r"(\d+)(?:/(tcp|udp))?")
_KIND_NAMES: dict[type, str] = {
    str: "a string",
    int: "an integer",
    bool: "a boolean (true or false)",
    list: "an array",
    dict: "a table",
}


class StrMap(Mapping[str, str]):
    """An immutable, hashable str -> str mapping kept sorted by key (a TOML table of strings)."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] | Mapping[str, str] = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        self._items: tuple[tuple[str, str], ...] = tuple(sorted(dict(pairs).items()))

    def __getitem__(self, key: str) -> str:
        for k, v in self._items:
            if k == key:
                return v
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, StrMap):
            return self._items == other._items
        return super().__eq__(other)

    def __repr__(self) -> str:
        return f"StrMap({dict(self._items)!r})"


EMPTY = StrMap()


def key_path(parent: str, key: str) -> str:
    """``parent.key``, quoting ``key`` the way TOML does when it is not a bare key."""
    part = key if _BARE_KEY.fullmatch(key) else '"' + key.replace('"', '\\"') + '"'
    return f"{parent}.{part}" if parent else part


def describe(value: object) -> str:
    """A short, TOML-flavoured description of a value for 'expected X, got Y' messages."""
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, str):
        value = scrub(value)  # before cutting: a cut URL could no longer be redacted
        return f"string {value if len(value) <= 40 else value[:37] + '...'!r}"
    if isinstance(value, int | float):
        return f"{'integer' if isinstance(value, int) else 'float'} {value}"
    if isinstance(value, list):
        return f"an array of {len(value)} item{'' if len(value) == 1 else 's'}"
    if isinstance(value, Mapping):
        return "a table"
    return f"{type(value).__name__} {value}"  # TOML dates and times


def unknown_key_message(key: str, allowed: Sequence[str]) -> str:
    """'unknown key' with the near-miss spelling when there is one, else the allowed keys."""
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    if close:
        return f"unknown key {key!r}; did you mean {close[0]!r}?"
    return f"unknown key {key!r}; allowed keys: {', '.join(sorted(allowed))}"


class Problems:
    """Collects problems; ``prefix`` goes before every key path (``tool.venvseal.``)."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.items: list[Problem] = []

    def full(self, where: str) -> str:
        return self.prefix + where

    def add(self, where: str, message: str) -> None:
        self.items.append(Problem(self.full(where), message))

    def raise_if_any(self, file: str) -> None:
        if self.items:
            raise RecipeError(file, self.items)


def check_type(value: object, kind: type[T], where: str, problems: Problems) -> T | None:
    """``value`` if it is a ``kind`` (a bool is not an integer here), else record a problem."""
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    problems.add(where, f"expected {_KIND_NAMES.get(kind, kind.__name__)}, got {describe(value)}")
    return None


class Table:
    """One TOML table under validation; unknown keys are reported on construction."""

    def __init__(
        self, data: Mapping[str, Any], where: str, problems: Problems, allowed: Sequence[str]
    ) -> None:
        self.data = data
        self.where = where
        self.problems = problems
        for key in data:
            if key not in allowed:
                problems.add(key_path(where, key), unknown_key_message(key, allowed))

    def at(self, key: str, index: int | str | None = None) -> str:
        """The key path of ``key`` (the table itself for ""), of its item or of its sub-key."""
        where = key_path(self.where, key) if key else self.where
        if isinstance(index, int):
            return f"{where}[{index}]"
        return where if index is None else key_path(where, index)

    def has(self, key: str) -> bool:
        return key in self.data

    def add(self, key: str, message: str, index: int | str | None = None) -> None:
        """Record a problem about ``key`` ("" for the table itself), or one of its items."""
        self.problems.add(self.at(key, index), message)

    def check(
        self, key: str, value: T | None, rule: Callable[[T], U], index: int | str | None = None
    ) -> U | None:
        """``rule(value)``, or None with a problem if the rule raises ValueError."""
        if value is None:
            return None
        try:
            return rule(value)
        except ValueError as e:
            self.add(key, str(e), index)
            return None

    def check_each(self, key: str, values: Iterable[T], rule: Callable[[T], U]) -> tuple[U, ...]:
        """``rule`` applied to every item of array ``key``; items it rejects are left out."""
        checked = (self.check(key, v, rule, i) for i, v in enumerate(values))
        return tuple(v for v in checked if v is not None)

    def get(self, key: str, kind: type[T], *, example: str | None = None) -> T | None:
        """The value of ``key`` if it is a ``kind``; ``example`` makes the key required."""
        if key not in self.data:
            if example is not None:
                self.add(key, f"required key missing; add e.g. {key} = {example}")
            return None
        return check_type(self.data[key], kind, self.at(key), self.problems)

    def get_list(self, key: str, kind: type[T]) -> tuple[T, ...] | None:
        """An array whose every item is a ``kind``; None if absent or any item is wrong."""
        items = self.get(key, list)
        if items is None:
            return None
        checked = [check_type(v, kind, self.at(key, i), self.problems) for i, v in enumerate(items)]
        good = tuple(v for v in checked if v is not None)
        return good if len(good) == len(items) else None

    def get_map(self, key: str) -> StrMap | None:
        """A table of strings; None if absent or any value is not a string."""
        table = self.get(key, dict)
        if table is None:
            return None
        checked = [check_type(v, str, self.at(key, k), self.problems) for k, v in table.items()]
        return None if None in checked else StrMap(table)

    def get_table(self, key: str, allowed: Sequence[str], *, missing: str = "") -> Table | None:
        """A sub-table; ``missing`` (the message for its absence) makes it required."""
        if key not in self.data:
            if missing:
                self.add(key, missing)
            return None
        data = check_type(self.data[key], dict, self.at(key), self.problems)
        return None if data is None else Table(data, self.at(key), self.problems, allowed)

    def get_tables(self, key: str, allowed: Sequence[str]) -> list[Table]:
        """An array of tables (``[[key]]``), each item a :class:`Table` at ``key[i]``."""
        tables = []
        for i, item in enumerate(self.get(key, list) or ()):
            data = check_type(item, dict, self.at(key, i), self.problems)
            if data is not None:
                tables.append(Table(data, self.at(key, i), self.problems, allowed))
        return tables


# Value rules: return the normalised value or raise ValueError with the user's message.


def matching(pattern: str, what: str) -> Callable[[str], str]:
    """A rule accepting strings that fully match ``pattern``; ``what`` names the expected form."""
    regex = re.compile(pattern)

    def rule(text: str) -> str:
        if not regex.fullmatch(text):
            raise ValueError(f"{text!r} is not {what}")
        return text

    return rule


def relative_path(text: str) -> str:
    """A normalised relative path that stays inside its folder (no absolute path, no '..')."""
    if not text:
        raise ValueError("must not be empty")
    if text.startswith("/"):
        raise ValueError(f"{text!r} must be a relative path, not an absolute one")
    if ".." in text.split("/"):
        raise ValueError(f"{text!r} must not contain '..' (it must stay inside its folder)")
    if "\0" in text:
        raise ValueError("must not contain a NUL character")
    return posixpath.normpath(text)


def absolute_path(text: str) -> PurePosixPath:
    """A normalised absolute path without '..' (a path inside a root file system)."""
    if not text.startswith("/"):
        raise ValueError(f"{text!r} must be an absolute path (inside the toolchain root)")
    if ".." in text.split("/") or "\0" in text:
        raise ValueError(f"{text!r} must not contain '..' or NUL")
    return PurePosixPath(posixpath.normpath(text))


def port(value: object) -> str:
    """A port as 9000, "9000", "9000/tcp" or "53/udp", normalised to "N/proto"."""
    if isinstance(value, int) and not isinstance(value, bool):
        number, proto = value, "tcp"
    elif isinstance(value, str) and (m := _PORT.fullmatch(value)):
        number, proto = int(m.group(1)), m.group(2) or "tcp"
    else:
        example = 'a port such as 9000, "9000/tcp" or "53/udp"'
        raise ValueError(f"expected {example}, got {describe(value)}")
    if not 1 <= number <= 65535:
        raise ValueError(f"port {number} is out of range 1-65535")
    return f"{number}/{proto}"


# Files


def read_toml(file: Path) -> dict[str, Any]:
    """Parse ``file``; every way it can be unreadable becomes a one-problem RecipeError."""
    if file.exists() and not file.is_file() and not file.is_dir():  # a fifo blocks open()
        raise RecipeError(str(file), [Problem("", "cannot read: not a regular file; replace "
                                              "it with a TOML file")])
    try:
        with file.open("rb") as f:
            raw = f.read(MAX_TOML_BYTES + 1)
    except FileNotFoundError:
        raise RecipeError(str(file), [Problem("", "file not found; check the path")]) from None
    except OSError as e:
        raise RecipeError(str(file), [Problem("", f"cannot read: {e.strerror}")]) from e
    if len(raw) > MAX_TOML_BYTES:
        message = (f"larger than {MAX_TOML_BYTES >> 20} MiB, too big for a hand-written TOML "
                   "file; check that this is the right file")
        raise RecipeError(str(file), [Problem("", message)])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        message = f"not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); save as UTF-8"
        raise RecipeError(str(file), [Problem("", message)]) from e
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(str(file), [Problem("", toml_error_message(e, text))]) from e
    except RecursionError:  # tomllib parses nested arrays and inline tables recursively
        raise RecipeError(str(file), [Problem("", NESTED_TOO_DEEPLY)]) from None


def toml_error_message(error: tomllib.TOMLDecodeError, text: str) -> str:
    """'invalid TOML at line L, column C: reason' from tomllib's '(at line L, column C)'."""
    reason = str(error.args[0]) if error.args else str(error)
    m = _TOML_POSITION.search(reason)
    if m is None:
        return f"invalid TOML: {reason}"
    reason = reason[: m.start()]
    reason = reason[:1].lower() + reason[1:]
    if m.group(1):
        return f"invalid TOML at line {m.group(1)}, column {m.group(2)}: {reason}"
    lines = text.split("\n")
    return f"invalid TOML at line {len(lines)}, column {len(lines[-1]) + 1} (end of file): {reason}"


def set_toml_value(file: Path, keys: Sequence[str], value: str) -> None:
    """Set the string at ``keys`` in ``file`` with tomlkit, keeping comments and layout.

    Missing tables are created (intermediate ones as super tables, so only the innermost
    header is written); the file is replaced atomically.
    """
    import tomlkit  # only here: rewriting is rare and tomlkit is slow to import
    import tomlkit.exceptions

    try:
        doc = tomlkit.parse(file.read_text(encoding="utf-8"))
    except tomlkit.exceptions.ParseError as e:
        raise RecipeError(str(file), [Problem("", f"invalid TOML: {e}")]) from e
    except (OSError, UnicodeDecodeError) as e:
        raise RecipeError(str(file), [Problem("", f"cannot read: {e}")]) from e
    table: Any = doc
    created = False
    for depth, part in enumerate(keys[:-1]):
        if created := part not in table:
            table[part] = tomlkit.table(is_super_table=depth < len(keys) - 2)
        table = table[part]
        if not isinstance(table, dict):
            raise RecipeError(str(file), [Problem(".".join(keys[: depth + 1]), "expected a table")])
    table[keys[-1]] = value
    if created:  # a blank line before whatever header follows the new table
        table.add(tomlkit.nl())
    text = tomlkit.dumps(doc)
    write_atomic(file, text[:-1] if created and text.endswith("\n\n") else text)


def write_atomic(file: Path, text: str) -> None:
    """Replace ``file`` with ``text`` via a temporary file in its folder; keep its mode."""
    mode = file.stat().st_mode & 0o7777
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
