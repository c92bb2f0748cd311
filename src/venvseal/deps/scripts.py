"""What a dependency installs in the venv's ``bin/`` besides the launchers: its ``.data/scripts``.

A wheel's ``<name>.data/scripts/`` files (binary distribution format, "Installing a wheel")
go to ``bin/`` as they are: a program (maturin's, ruff's), a shell script, a Python script
(setuptools ``scripts=[...]``). uv also writes a launcher per console and GUI entry point
there, and the venv's own files (the python links, the activate scripts); those are made per
run, so the deps stage deletes them and the assembly writes them again. The scripts stay:
they are the distribution's files, listed in its RECORD, and nothing else can make them.

A script whose first line is ``#!python`` in the wheel gets the installing interpreter's path
from the installer (uv writes ``#!/venvseal-build/out/bin/python``: the build's venv). The
deps stage writes it back as the wheel had it, ``#!python``, a placeholder; the assembly
replaces it with the closure's python, as an installer would, and both fix the RECORD row.
"""

from __future__ import annotations

import configparser
import csv
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath

from venvseal.toolchain.sandbox import OUT_DIR

# Binary distribution format: "If the file starts with #!python, rewrite to point to the
# correct interpreter."
PLACEHOLDER = b"#!python"
# The entry point sections whose names become launchers in bin/.
SCRIPT_SECTIONS = ("console_scripts", "gui_scripts")
# What uv's venv has in bin/ of its own (crates/uv-virtualenv), never a distribution's.
_VENV_OWN = re.compile(r"python[0-9.]*|activate(\.[a-z]+|_this\.py)?|deactivate\.bat|pydoc\.bat")


class _CaseSensitiveParser(configparser.ConfigParser):
    def optionxform(self, optionstr: str) -> str:
        return optionstr  # script names keep their case


def parse_entry_points(text: str, source: str) -> configparser.ConfigParser:
    """``entry_points.txt`` parsed as importlib.metadata reads it, names keeping their case
    (raises :class:`configparser.Error`)."""
    # No [DEFAULT] merging: a section named DEFAULT must not add scripts to every section.
    parser = _CaseSensitiveParser(delimiters=("=",), interpolation=None,
                                  default_section="\0no-defaults")
    parser.read_string(text, source=source)
    return parser


def _launcher_names(dist_info: Path) -> set[str]:
    """The console and GUI script names of a distribution (none if it has no readable
    entry_points.txt: the assembly reports a broken one)."""
    file = dist_info / "entry_points.txt"
    try:
        parser = parse_entry_points(file.read_text(encoding="utf-8"), str(file))
    except (OSError, UnicodeDecodeError, configparser.Error):
        return set()
    return {name for section in SCRIPT_SECTIONS if parser.has_section(section)
            for name in parser.options(section)}


def shipped_scripts(venv: Path, records: Iterable[Path]) -> frozenset[Path]:
    """The regular files in ``venv/bin`` that a distribution's RECORD (of ``records``) lists
    and that are neither its entry points' launchers nor the venv's own files."""
    bin_dir = os.path.normpath(venv / "bin")
    found = set()
    for record in records:
        base = os.fspath(record.parent.parent)
        with record.open(encoding="utf-8", newline="") as f:
            # Only a path naming "bin" can be one (a cheap test first: RECORDs are long).
            targets = [os.path.normpath(os.path.join(base, row[0]))
                       for row in csv.reader(f) if row and "bin" in row[0]]
        targets = [t for t in targets if os.path.dirname(t) == bin_dir]
        launchers = _launcher_names(record.parent) if targets else set()
        for target in targets:
            name = os.path.basename(target)
            if name not in launchers and not _VENV_OWN.fullmatch(name) \
                    and os.path.isfile(target) and not os.path.islink(target):
                found.add(Path(target))
    return frozenset(found)


def write_placeholders(scripts: Iterable[Path], venv: PurePosixPath = OUT_DIR) -> set[Path]:
    """Give every script whose shebang names the python of the venv at ``venv`` (the
    sandbox's path of the one being normalised) the wheel's ``#!python`` again, in place
    (each file has one link: see survey.copy_linked); the files changed."""
    return _replace_shebang(scripts, b"#!" + os.fsencode(venv / "bin" / "python"), PLACEHOLDER)


def write_interpreter(scripts: Iterable[Path], python: str,
                      own: Callable[[Path], Path]) -> set[Path]:
    """Replace the ``#!python`` placeholder by ``#!<python>`` in every script that has it,
    as an installer does; ``own(path)`` makes a file writable first and returns it. The
    files changed."""
    return _replace_shebang(scripts, PLACEHOLDER, b"#!" + os.fsencode(python), own)


def _replace_shebang(scripts: Iterable[Path], old: bytes, new: bytes,
                     own: Callable[[Path], Path] = lambda path: path) -> set[Path]:
    changed = set()
    for path in sorted(scripts):
        with open(path, "rb") as f:
            if f.read(len(old)) != old:
                continue  # a program, or a script for another interpreter: as it is
            rest = f.read()
        path = own(path)
        path.write_bytes(new + rest)
        changed.add(path)
    return changed
