"""What a client can filter and sort an entity by: its fields, the columns the server
manages (id, created_at, updated_at, version, owner, stage) and each single link's record
id — each as a `FieldSpec`, so system columns parse, filter and render like fields. The
filter grammar (`engine.setup.filters`) reads these; the tables (`engine.storage.tables`)
give each one its column."""

from __future__ import annotations

from engine.setup.spec import EntitySpec, FieldSpec, LinkSpec
from engine.types.fields import FieldTypeRegistry

#: an attribute: its field spec, and the link when it is a single link's record id
Attribute = tuple[FieldSpec, LinkSpec | None]


class SystemFields:
    """FieldSpecs for the columns the server manages, built from one type registry."""

    def __init__(self, registry: FieldTypeRegistry):
        integer, datetime, choice = (registry.get("integer"), registry.get("datetime"),
                                     registry.get("choice"))
        assert integer is not None and datetime is not None and choice is not None
        self._integer, self._choice = integer, choice
        self.id = FieldSpec("id", integer, {"en": "ID"}, system=True)
        self.created_at = FieldSpec("created_at", datetime, {"en": "Created"}, system=True)
        self.updated_at = FieldSpec("updated_at", datetime, {"en": "Updated"}, system=True)
        self.version = FieldSpec("version", integer, {"en": "Version"}, system=True)
        self.owner = FieldSpec("owner", integer, {"en": "Owner"}, system=True)

    def stage(self, names: tuple[str, ...]) -> FieldSpec:
        return FieldSpec("stage", self._choice, {"en": "Stage"}, options=names, system=True)

    def link_id(self, link: LinkSpec) -> FieldSpec:
        return FieldSpec(link.name, self._integer, link.label, required=link.required)

    def attributes(self, entity: EntitySpec) -> dict[str, Attribute]:
        """The entity's attributes by name, in column order."""
        found: dict[str, Attribute] = {
            "id": (self.id, None), "created_at": (self.created_at, None),
            "updated_at": (self.updated_at, None), "version": (self.version, None),
        }
        if entity.owner:
            found["owner"] = (self.owner, None)
        if entity.pipeline:
            found["stage"] = (self.stage(entity.pipeline.all_stage_names), None)
        for spec in entity.fields.values():
            found[spec.name] = (spec, None)
        for link in entity.links.values():
            if not link.many and not link.polymorphic:
                found[link.name] = (self.link_id(link), link)
        return found
