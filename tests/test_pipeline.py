"""The orchestrator's own pieces that need no sandbox: the store's cache of members' wheels,
and the deps path's handle.

Whole pipelines run in test_build_e2e.py, test_assemble.py and test_authentik_e2e.py.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from support import write

from venvseal import pipeline
from venvseal.deps import stage as deps
from venvseal.errors import StoreError
from venvseal.hashes import Sha256
from venvseal.store.core import Store, StorePath
from venvseal.toolchain.sandbox import Sandbox


@pytest.fixture
def ctx(tmp_path: Path) -> pipeline.Context:
    store = Store(tmp_path / "store")
    return pipeline.Context(store=store, sandbox=Sandbox("/nonexistent/bwrap"),
                            uv_cache=tmp_path / "uv-cache",
                            network=deps.Network(resolv_conf=None, ca_file=None))


def in_store(path: StorePath) -> pipeline.DepsHandle:
    """A handle to a deps path the store holds: asking for it realises nothing."""
    named = pipeline.DepsResult(path=path, hash=Sha256(bytes(32)), reused=True)
    return pipeline.DepsHandle(named, realise=lambda: pytest.fail("realised a valid path"))


def test_a_wheel_is_built_once_per_key(ctx: pipeline.Context, tmp_path: Path) -> None:
    deps_path = StorePath(tmp_path / "deps")
    builds: list[Path] = []

    def build(work: Path, deps_host: Path) -> Path:
        builds.append(deps_host)
        return write(work / "member-0.1-py3-none-any.whl", "a wheel\n")

    first = pipeline.realise_wheel(ctx, in_store(deps_path), "member", "k1", build)
    again = pipeline.realise_wheel(ctx, in_store(deps_path), "member", "k1", build)
    other = pipeline.realise_wheel(ctx, in_store(deps_path), "member", "k2", build)
    assert first == again != other
    assert first.read_text() == "a wheel\n" and first.name == "member-0.1-py3-none-any.whl"
    assert builds == [deps_path, deps_path]  # k1 once, k2 once


def test_a_wheel_path_emptied_after_it_was_made_is_refused(ctx: pipeline.Context,
                                                          tmp_path: Path) -> None:
    def build(work: Path, _deps: Path) -> Path:
        return write(work / "member-0.1-py3-none-any.whl", "a wheel\n")

    wheel = pipeline.realise_wheel(ctx, in_store(StorePath(tmp_path)), "member", "k1", build)
    os.chmod(wheel.parent, 0o755)
    wheel.unlink()
    with pytest.raises(StoreError) as info:
        pipeline.realise_wheel(ctx, in_store(StorePath(tmp_path)), "member", "k1", build)
    message = str(info.value)
    assert str(wheel.parent) in message and "holds 0" in message
    assert "run 'venvseal gc'" in message


def test_a_deferred_deps_path_is_realised_once_and_only_when_read(tmp_path: Path) -> None:
    named = pipeline.DepsResult(path=StorePath(tmp_path / "x-deps"), hash=Sha256(bytes(32)),
                                reused=True, deferred=True)
    realised: list[pipeline.DepsResult] = []

    def realise() -> pipeline.DepsResult:
        realised.append(dataclasses.replace(named, deferred=False, fetched=(named.path,)))
        return realised[-1]

    deps = pipeline.DepsHandle(named, realise=realise)
    assert deps.result is named and realised == []  # named only: nothing read it yet
    assert deps.path() == deps.path() == named.path
    assert len(realised) == 1 and deps.result is realised[0]
