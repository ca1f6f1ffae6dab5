"""Python actions installed as packages: what `kartoteka serve` and `kartoteka worker`
give a setup's `call:` without any code of their own.

A package declares its actions as entry points of the group `kartoteka.actions`:

    # the package's pyproject.toml
    [project.entry-points."kartoteka.actions"]
    score_supplier = "my_crm.actions:score_supplier"

From Python, pass them instead: `Kartoteka.open(..., actions={"score_supplier": f})`.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from engine.automations.worker import Action
from engine.errors import SettingsError

GROUP = "kartoteka.actions"


def installed_actions() -> dict[str, Action]:
    """Every action installed packages declare, by name; a name declared twice, or one
    that does not load, is a SettingsError saying which."""
    found: dict[str, Action] = {}
    for point in entry_points(group=GROUP):
        if point.name in found:
            raise SettingsError(f"two installed packages declare the action {point.name!r} "
                                f"({GROUP}); uninstall one")
        try:
            found[point.name] = point.load()
        except Exception as error:  # any import failure, said plainly
            raise SettingsError(f"the action {point.name!r} ({point.value}) does not load: "
                                f"{type(error).__name__}: {error}") from None
    return found
