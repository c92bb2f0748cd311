"""A script's ``#!`` line, read as Linux reads it (fs/binfmt_script.c)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

SHEBANG_MAX = 256  # BINPRM_BUF_SIZE: the kernel reads no more of a script's first line
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True, slots=True)
class Shebang:
    """A script's ``#!`` line: the interpreter and the rest, one argument as Linux passes it."""

    interpreter: PurePosixPath
    argument: str = ""

    @property
    def env_program(self) -> str | None:
        """For ``#!/usr/bin/env [-S] [-i] [NAME=VALUE...] PROGRAM``: PROGRAM, else None."""
        if self.interpreter.name != "env":
            return None
        words = iter(self.argument.split())
        for word in words:
            if word in ("-u", "--unset", "-C", "--chdir"):
                next(words, None)  # these take a value
            elif word.startswith("-S") and len(word) > 2:
                return word[2:]
            elif not word.startswith("-") and not _ASSIGNMENT.match(word):
                return word
        return None


def parse_shebang(head: bytes) -> Shebang | None:
    """The ``#!`` line at the start of ``head`` (a file's first bytes), or None."""
    if not head.startswith(b"#!"):
        return None
    line = head[2:SHEBANG_MAX].split(b"\n", 1)[0].replace(b"\t", b" ").strip(b" \r")
    interpreter, _, argument = line.partition(b" ")
    if not interpreter:
        return None
    return Shebang(PurePosixPath(os.fsdecode(interpreter)), os.fsdecode(argument.strip(b" ")))
