"""The recipe's toolchain: resolved, or a Debian root made (from a pin) and kept in the store."""

from __future__ import annotations

from typing import TYPE_CHECKING

from venvseal.recipe.model import Recipe
from venvseal.store.core import (
    Store,
    StorePath,
)
from venvseal.toolchain import resolve as toolchain

if TYPE_CHECKING:  # these pull in pyelftools, needed only when building or comparing
    pass


from venvseal.pipeline.context import Context


def resolve_toolchain(rec: Recipe, ctx: Context) -> toolchain.ResolvedToolchain:
    """The recipe's toolchain, its Debian root file system made first if it names one.

    A Debian root pinned in ``venvseal.lock`` is made from exactly the pinned ``.deb`` files;
    an unpinned one from today's mirror with debootstrap.
    """
    spec = rec.toolchain.debian
    if spec is None:
        return toolchain.resolve(rec.toolchain)
    from venvseal.toolchain import debian, debpin, debroot

    lock_file = debpin.lock_path(rec.file)
    pin = debpin.read_pin(lock_file)
    if pin is None:
        root = debian.realise(spec, ctx.store, on_step=ctx.on_step)
    elif not pin.fits(spec):
        raise debpin.PinError(f"{lock_file}: [debian]", "was locked for another suite, variant "
                              "or package list than the recipe's [toolchain] debian",
                              "run 'venvseal toolchain --update-lock' to pin it again")
    else:
        root = debroot.realise_root(spec, pin, ctx.store, on_step=ctx.on_step,
                                    mirror=ctx.debian_mirror or debian.apt_mirror())
    return toolchain.resolve(rec.toolchain, root=root)


def toolchain_paths(rec: Recipe, store: Store, tc: toolchain.ResolvedToolchain
                    ) -> list[StorePath]:
    """The store paths a Debian toolchain is made of: its root, and its pinned ``.deb``s."""
    if rec.toolchain.debian is None:
        return []
    from venvseal.toolchain import debpin, debroot

    paths = [store.parse_path(str(tc.root))]
    pin = debpin.read_pin(debpin.lock_path(rec.file))
    if pin is not None and store.is_valid(debroot.debs_path(pin, store)):
        paths.append(debroot.debs_path(pin, store))
    return paths


def lock_toolchain(rec: Recipe, ctx: Context) -> toolchain.ResolvedToolchain:
    """Pin the recipe's Debian root to today's packages (``venvseal.lock``), then make it."""
    from venvseal.toolchain import debian, debpin, debroot

    spec = rec.toolchain.debian
    if spec is None:
        raise debpin.PinError(str(rec.file), "names no [toolchain] debian root to lock",
                              "a host or prepared root is pinned by its package database")
    mirror = ctx.debian_mirror or debian.apt_mirror()
    with ctx.store.scratch() as work:
        pin, debs = debroot.lock(spec, mirror=mirror, work=work, on_step=ctx.on_step)
        root = debroot.realise_root(spec, pin, ctx.store, on_step=ctx.on_step, mirror=mirror,
                                    local=debs)
    debpin.write_pin(debpin.lock_path(rec.file), pin)
    ctx.on_step(f"pinned {len(pin.debs)} packages in {debpin.lock_path(rec.file)}")
    return toolchain.resolve(rec.toolchain, root=root)


