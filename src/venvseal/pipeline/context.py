"""The side effects a pipeline run may use, chosen by the caller (the CLI)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from venvseal.deps import stage as deps
from venvseal.store.core import (
    Store,
)
from venvseal.toolchain.sandbox import Sandbox

if TYPE_CHECKING:  # these pull in pyelftools, needed only when building or comparing
    pass




@dataclass(frozen=True, kw_only=True)
class Context:
    """The side effects a pipeline run may use, chosen by the caller."""

    store: Store
    sandbox: Sandbox
    uv_cache: Path
    network: deps.Network
    network_env: Mapping[str, str] = field(default_factory=dict)  # proxies, CA file for git
    on_step: Callable[[str], None] = field(default=lambda _msg: None)
    jobs: int = 1  # checks run side by side (never changes what is built)
    debian_mirror: str | None = None  # where pinned .debs are downloaded (default: apt's)


