"""What every command starts from: the recipe, the store, the pipeline's context and the
toolchain, chosen from the command line and this host's environment.

The only place the CLI reads ``os.environ``, the home and working folders; the library gets
them as arguments.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from venvseal import pipeline
from venvseal.cli.ui import Ui
from venvseal.deps.stage import Network
from venvseal.errors import StoreError, UsageError
from venvseal.recipe import files
from venvseal.recipe.model import Recipe
from venvseal.store.core import STORE_DIR, Store, StoreAccessError, default_store_root
from venvseal.toolchain import resolve as toolchain
from venvseal.toolchain.sandbox import Sandbox

DEFAULT_CA_FILE = Path("/etc/ssl/certs/ca-certificates.crt")
RESOLV_CONF = Path("/etc/resolv.conf")

# Host variables a networked fetch may need; nothing else from the host reaches a build.
NETWORK_ENV = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY",
               "NO_PROXY", "SSL_CERT_FILE", "GIT_SSL_CAINFO")


def store_root(env: Mapping[str, str], home: Path, *, uid: int,
               shared: Path = Path(STORE_DIR)) -> Path:
    """$VENVSEAL_STORE; else /venvseal/store for root, or for a user who made it theirs
    (there, closures run on the host as they are); else under the XDG data folder."""
    if env.get("VENVSEAL_STORE"):
        return Path(env["VENVSEAL_STORE"])
    if uid == 0 or (shared.is_dir() and os.access(shared, os.W_OK | os.X_OK)):
        return shared
    return default_store_root(env, home)


def default_uv_cache(env: Mapping[str, str], home: Path) -> Path:
    """uv's cache for the deps stage: $VENVSEAL_UV_CACHE, else under the XDG cache folder."""
    if env.get("VENVSEAL_UV_CACHE"):
        return Path(env["VENVSEAL_UV_CACHE"])
    base = env.get("XDG_CACHE_HOME") or str(home / ".cache")
    return Path(base) / "venvseal" / "uv"


def host_network(env: Mapping[str, str]) -> Network:
    """What networked stages borrow from the host: resolver config and CA bundle."""
    ca = Path(env["SSL_CERT_FILE"]) if env.get("SSL_CERT_FILE") else DEFAULT_CA_FILE
    return Network(resolv_conf=RESOLV_CONF if RESOLV_CONF.exists() else None,
                   ca_file=ca if ca.is_file() else None)


def seconds(text: str) -> float:
    """A positive number of seconds, for --cache-timeout and $VENVSEAL_CACHE_TIMEOUT."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 86400:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds from 0 to "
                                         "86400 (e.g. --cache-timeout 60)")
    return value


def network_env(env: Mapping[str, str]) -> dict[str, str]:
    """The allowlisted host variables for fetches (proxies and CA bundles)."""
    return {k: env[k] for k in NETWORK_ENV if env.get(k)}


@dataclass(kw_only=True)
class Opened:
    """A recipe with its store and context open; the toolchain is resolved on first use."""

    recipe: Recipe
    store: Store
    ctx: pipeline.Context
    _tc: toolchain.ResolvedToolchain | None = field(default=None, repr=False)

    @property
    def toolchain(self) -> toolchain.ResolvedToolchain:
        """The recipe's toolchain (a Debian root is made once, then reused)."""
        if self._tc is None:
            self._tc = pipeline.resolve_toolchain(self.recipe, self.ctx)
        return self._tc

    def build(self, *, out_link: Path | None = None, update_hash: bool = False,
              update_on_drift: bool = False) -> pipeline.BuildResult:
        """``pipeline.run_build`` with this session's toolchain."""
        return pipeline.run_build(self.recipe, self.ctx, tc=self.toolchain, out_link=out_link,
                                  update_hash=update_hash, update_on_drift=update_on_drift)


@dataclass(kw_only=True)
class Session:
    """One invocation's view of the host: its arguments, environment and folders.

    ``recipe_file`` is the recipe once found, so an error can name it.
    """

    args: argparse.Namespace
    ui: Ui
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    home: Path = field(default_factory=Path.home)
    cwd: Path = field(default_factory=Path.cwd)
    recipe_file: Path | None = None
    key_prefix: str = ""

    def load(self) -> Recipe:
        """The recipe named on the command line, else the nearest one from here up."""
        found, self.key_prefix = files.find_recipe(getattr(self.args, "recipe", None),
                                                    self.cwd)
        self.recipe_file = found
        return files.load_recipe(found)

    def store_root(self) -> Path:
        if self.args.store is not None:
            return Path(self.args.store)
        return store_root(self.env, self.home, uid=os.geteuid())

    def store_to_read(self) -> Store:
        """The store, opened for reading only when this user may not write it (a read-only
        mount, another user's store): for ``store-verify`` and ``gc --dry-run``."""
        try:
            return self.store()  # substituters unused, but a bad setting is still an error
        except StoreAccessError as err:
            try:
                return Store(Path(err.path), writable=False)
            except StoreError:
                raise err from None

    def store(self, *, substituters: bool = True) -> Store:
        """The store, with the substituters of --substituter, else $VENVSEAL_SUBSTITUTERS."""
        root = self.store_root()
        urls = (getattr(self.args, "substituter", None)
                or self.env.get("VENVSEAL_SUBSTITUTERS", "").split())
        if not urls or not substituters:
            return Store(root)
        from venvseal.oci import cache, registry

        config = registry.docker_config_path(self.env, self.home)
        return Store(root, substituters=cache.substituters(
            urls, config_file=config, notify=self.ui.info, timeout=self.cache_timeout(),
            env=network_env(self.env)))

    def cache_timeout(self) -> float:
        """--cache-timeout, else $VENVSEAL_CACHE_TIMEOUT, else the substituters' default."""
        from venvseal.oci.substituter import DEFAULT_TIMEOUT

        if getattr(self.args, "cache_timeout", None) is not None:
            return float(self.args.cache_timeout)
        if not self.env.get("VENVSEAL_CACHE_TIMEOUT"):
            return DEFAULT_TIMEOUT
        try:
            return seconds(self.env["VENVSEAL_CACHE_TIMEOUT"])
        except argparse.ArgumentTypeError as err:
            raise UsageError(f"$VENVSEAL_CACHE_TIMEOUT: {err}") from None

    def context(self, store: Store) -> pipeline.Context:
        """The side effects a pipeline run gets from this host."""
        cache = getattr(self.args, "uv_cache", None) or default_uv_cache(self.env, self.home)
        return pipeline.Context(store=store, sandbox=Sandbox.locate(), uv_cache=cache,
                                network=host_network(self.env),
                                network_env=network_env(self.env), on_step=self.ui.info,
                                jobs=len(os.sched_getaffinity(0)),
                                debian_mirror=self.env.get("VENVSEAL_DEBIAN_MIRROR") or None)

    @contextmanager
    def open(self, *, substituters: bool = True) -> Iterator[Opened]:
        """The recipe, then its store (closed on leaving) and context."""
        rec = self.load()
        with self.store(substituters=substituters) as store:
            yield Opened(recipe=rec, store=store, ctx=self.context(store))
