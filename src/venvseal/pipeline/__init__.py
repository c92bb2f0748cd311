"""The orchestrator: the stages in order, each reused from the store when its inputs match.

Reads like the pipeline and never touches the file system itself: stages build, the store
writes, and the caller (the CLI) supplies the side effects through :class:`Context`.
"""

from venvseal.pipeline.build import (
    BuildResult,
    relinked_name,
    run_build,
    run_relinked,
)
from venvseal.pipeline.context import Context
from venvseal.pipeline.deps import (
    CheckResult,
    DepsHandle,
    DepsResult,
    check_deps,
    deps_handle,
    deps_name,
    run_deps,
)
from venvseal.pipeline.toolchains import lock_toolchain, resolve_toolchain, toolchain_paths
from venvseal.pipeline.wheels import realise_wheel, realise_wheels, wheel_path

__all__ = ["BuildResult", "CheckResult", "Context", "DepsHandle", "DepsResult", "check_deps",
           "deps_handle", "deps_name", "lock_toolchain", "realise_wheel", "realise_wheels",
           "relinked_name", "resolve_toolchain", "run_build", "run_deps", "run_relinked",
           "toolchain_paths", "wheel_path"]
