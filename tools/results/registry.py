"""The one table of protocols. Each module of ``tools/results/protocols/`` registers its protocol here with
:func:`register`, so a new protocol is one new file there: the CLI's ``--protocol`` choices, the auto mode, the build
order and the "no results" message all read this table.

Importing :mod:`tools.results.protocols` (which :mod:`tools.results.build` does) loads the built-in protocols.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from tools.results.layout import Run, Scan
from tools.results.table import Table

Claims = Callable[[Table], Callable[[Run], bool]]


@dataclass
class BuildContext:
    """What a protocol's builder gets: the scanned runs, whether every protocol is being built (auto mode), and
    the runs that protocols built earlier claimed as theirs (e.g. an ImageNet source run belongs to xd/dg, so the
    few-shot table of the same tree leaves it out)."""

    scan: Scan
    auto: bool
    claims: list[Callable[[Run], bool]] = field(default_factory=list)

    def claimed(self, run: Run) -> bool:
        return any(claim(run) for claim in self.claims)


@dataclass(frozen=True)
class Protocol:
    """One registered protocol: its name (``--protocol``), where it sits in the build order, its expected layout
    (shown when nothing is found), its table builder, and optionally which runs of a built table it owns."""

    name: str
    order: int
    layout: str
    build: Callable[[BuildContext], "Table | None"]
    claims: Claims | None = None


_PROTOCOLS: dict[str, Protocol] = {}


def register(name: str, *, order: int, layout: str,
             claims: Claims | None = None) -> Callable[[Callable[[BuildContext], Table | None]],
                                                       Callable[[BuildContext], Table | None]]:
    """Decorator registering ``build(ctx) -> Table | None`` as protocol ``name``.

    ``order`` sets the build and print order (built-ins: base2new 10, xd 20, dg 30, fewshot 40, dfkd 50); a protocol
    that excludes runs claimed by others (``ctx.claimed``) must come after them.
    """
    def decorator(build: Callable[[BuildContext], Table | None]) -> Callable[[BuildContext], Table | None]:
        if name == "auto":
            raise ValueError("'auto' means every protocol on the command line; register the protocol under "
                             "another name")
        old = _PROTOCOLS.get(name)
        if old is not None:
            raise ValueError(f"protocol {name!r} is already registered by {old.build.__module__}; give the one in "
                             f"{build.__module__} another name (or unregister the old one first)")
        _PROTOCOLS[name] = Protocol(name, order, layout, build, claims)
        return build

    return decorator


def unregister(name: str) -> None:
    """Remove a registered protocol (tests register temporary ones)."""
    if name not in _PROTOCOLS:
        raise KeyError(f"no protocol {name!r} is registered; registered: {', '.join(names()) or 'none'}")
    del _PROTOCOLS[name]


def names() -> tuple[str, ...]:
    """The registered protocol names in build order."""
    return tuple(sorted(_PROTOCOLS, key=lambda n: (_PROTOCOLS[n].order, n)))


def get(name: str) -> Protocol:
    """The protocol registered as ``name``; KeyError naming the registered ones otherwise."""
    try:
        return _PROTOCOLS[name]
    except KeyError:
        raise KeyError(f"no protocol {name!r} is registered; registered: {', '.join(names()) or 'none'}") from None
