"""The orchestrator: the stages in order, each reused from the store when its inputs match.

Reads like the pipeline and never touches the file system itself: stages build, the store
writes, and the caller (the CLI) supplies the side effects through :class:`Context`.
"""

from venvseal.pipeline.build import (
    BuildResult,
    cached_wheel,
    relinked_name,
    run_build,
    run_relinked,
)
from venvseal.pipeline.context import Context
from venvseal.pipeline.deps import CheckResult, DepsResult, check_deps, deps_name, run_deps
from venvseal.pipeline.toolchains import lock_toolchain, resolve_toolchain, toolchain_paths

__all__ = ["BuildResult", "CheckResult", "Context", "DepsResult", "cached_wheel", "check_deps",
           "deps_name", "lock_toolchain", "relinked_name", "resolve_toolchain", "run_build",
           "run_deps", "run_relinked", "toolchain_paths"]
