"""The errors of ``[[fetch]]``."""

from __future__ import annotations

from venvseal.errors import LocatedError


class FetchError(LocatedError):
    """A fetch failed: ``where`` names the recipe file, key path and fetch name."""


class UnsafeMemberError(Exception):
    """An archive member that could write or point outside the output; never unpacked."""

    def __init__(self, member: str, reason: str) -> None:
        self.member = member
        self.reason = reason
        super().__init__(f"member {member!r} {reason}")

