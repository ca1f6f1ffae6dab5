"""What a computed field reads, all the way down — and so which computed fields a role
may not see.

A formula or a roll-up shows what it reads: `margin = price - purchase_price` gives the
purchase price away to anyone who sees the price and the margin, `client_debt` summed from
invoices tells the invoices' totals. So a computed field is hidden from a role when
anything it reads — directly, through links, through other formulas and roll-ups — is a
field hidden from that role, or lives on an entity the role may not read at all. Derived
once per role (and per user, for a user of several roles: after their roles' hidden sets
are combined), never per request.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping

from engine.setup.rollups import computed_reads
from engine.setup.spec import SetupSpec

Node = tuple[str, str]  # (entity, field)


def transitive_reads(setup: SetupSpec) -> dict[Node, frozenset[Node]]:
    """For each computed field, every field it reads, directly or through other computed
    fields (which are listed too)."""
    direct = computed_reads(setup)
    closure: dict[Node, frozenset[Node]] = {}

    def visit(node: Node) -> frozenset[Node]:  # the setup has no cycles of computed fields
        if node not in closure:
            found = set(direct[node])
            for read in direct[node]:
                if read in direct:
                    found |= visit(read)
            closure[node] = frozenset(found)
        return closure[node]

    for node in direct:
        visit(node)
    return closure


def derived_hidden(reads: Mapping[Node, frozenset[Node]], hidden: Callable[[str], frozenset[str]],
                   unreadable: Callable[[str], bool]) -> dict[str, frozenset[str]]:
    """Per entity, its computed fields that read something hidden (`hidden(entity)`) or
    something of an entity that is `unreadable` — for one role, or one user's roles."""
    found: dict[str, set[str]] = defaultdict(set)
    for (entity, field), read in reads.items():
        if "." in field:
            continue  # a formula of a link's pairs: shown, or not, with the link
        if any(name in hidden(owner) or unreadable(owner) for owner, name in read):
            found[entity].add(field)
    return {entity: frozenset(names) for entity, names in found.items()}
