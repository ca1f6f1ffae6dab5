"""The typed, immutable model of a setup: what the loader builds and every generator reads.

Each spec checks nothing itself beyond construction; the loader has already checked every
invariant and reported problems with their file and line. Derived facts (reverse links,
which links point at an entity) are computed here once, on the frozen model, never
written back into it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from engine.types.fields import FieldType

if TYPE_CHECKING:
    from engine.setup.constraints import OverlapSpec, UniqueSpec
    from engine.setup.defaults import DynamicDefault
    from engine.setup.duplicates import EntityDuplicates
    from engine.setup.expressions import Formula
    from engine.setup.roles import RoleSpec
    from engine.setup.rollups import RollupSpec
    from engine.setup.rules import EntityRules

#: a label: one string, or one per language code
Label = Mapping[str, str]


def label_text(label: Label, language: str | None = None) -> str:
    if language and language in label:
        return label[language]
    return next(iter(label.values()), "")


@dataclass(frozen=True)
class Location:
    file: str
    line: int = 0


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: FieldType
    label: Label
    required: bool = False
    unique: bool = False
    index: bool = False
    default: Any = None
    min: Any = None
    max: Any = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    options: tuple[str, ...] | None = None
    required_in_stages: frozenset[str] = frozenset()
    help: Label | None = None
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    location: Location = Location("")
    #: set by the server (id, created_at, ...), never by clients
    system: bool = False
    #: the field's name in the database before a rename (`renamed_from:`); read by migrate
    renamed_from: str | None = None
    #: a default computed on each create (`today + 7d`, `$user`: engine/setup/defaults.py)
    dynamic_default: DynamicDefault | None = None
    #: per option, its label in each language given (`options: {new: {en: New, ru: Новое}}`)
    option_labels: Mapping[str, Label] = field(default_factory=lambda: MappingProxyType({}))
    #: `formula:` checked and compiled (engine/setup/expressions.py): the server computes
    #: and stores the value; clients never send it
    formula: Formula | None = None
    #: `rollup:` checked (engine/setup/rollups.py): a count, sum, min, max or average over
    #: the records linking here, computed and stored by the server
    rollup: RollupSpec | None = None

    @property
    def has_default(self) -> bool:
        return self.default is not None

    @property
    def computed(self) -> bool:
        """Computed and stored by the server (a formula or a roll-up): never sent by clients."""
        return self.formula is not None or self.rollup is not None


@dataclass(frozen=True)
class LinkSpec:
    name: str
    targets: tuple[str, ...]
    label: Label
    many: bool = False
    polymorphic: bool = False
    required: bool = False
    on_delete: str = "restrict"  # restrict | cascade | set_null
    reverse: str | None = None
    location: Location = Location("")
    #: the fields a many-to-many link carries on each (source, target) pair ("Links that
    #: carry data"); empty for a plain link
    through: Mapping[str, FieldSpec] = field(default_factory=dict, compare=False, hash=False)

    @property
    def target(self) -> str:
        """The one target of a plain (not polymorphic) link."""
        return self.targets[0]


@dataclass(frozen=True)
class StageSpec:
    name: str
    label: Label
    probability: int | None = None
    category: str = "open"  # open | won | lost
    #: who may move a record into this stage (empty: whoever may update the record)
    roles: tuple[str, ...] = ()


@dataclass(frozen=True)
class PipelineSpec:
    name: str
    stages: tuple[StageSpec, ...]
    final: frozenset[str]
    transitions: str | Mapping[str, tuple[str, ...]] = "free"  # free | forward | {from: [to]}
    #: removed or renamed stages → the stage their records move to (`moved:`); read by migrate
    moved: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def initial(self) -> str:
        return self.stages[0].name

    @property
    def stage_names(self) -> tuple[str, ...]:
        return tuple(stage.name for stage in self.stages)


#: distinct stage names an entity's pipelines may have together: the funnel keeps the stages
#: a record has reached as the bits of one signed 64-bit integer (engine/storage/progress.py)
MAX_STAGES = 63


@dataclass(frozen=True)
class PipelinesSpec:
    """An entity's pipelines; one named `default` unless chosen by a field (`pipeline_by`)."""

    pipelines: Mapping[str, PipelineSpec]
    pipeline_by: str | None = None

    @property
    def all_stage_names(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for pipeline in self.pipelines.values():
            for name in pipeline.stage_names:
                seen.setdefault(name)
        return tuple(seen)

    def for_record(self, selector_value: Any) -> PipelineSpec:
        if self.pipeline_by is None or selector_value not in self.pipelines:
            return next(iter(self.pipelines.values()))
        return self.pipelines[selector_value]


@dataclass(frozen=True)
class EntitySpec:
    name: str
    label: Label
    plural: Label
    fields: Mapping[str, FieldSpec]
    links: Mapping[str, LinkSpec]
    title: str | None = None
    search: tuple[str, ...] = ()
    owner: bool = False
    pipeline: PipelinesSpec | None = None
    help: Label | None = None
    location: Location = Location("")
    #: the entity's name in the database before a rename (`renamed_from:`); read by migrate
    renamed_from: str | None = None
    #: sets of fields no two records share, and ranges that must not overlap
    #: (`unique:`, `no_overlap:`; engine/setup/constraints.py)
    unique: tuple[UniqueSpec, ...] = ()
    no_overlap: tuple[OverlapSpec, ...] = ()
    #: which records are the same thing twice (`duplicates:`; engine/setup/duplicates.py)
    duplicates: EntityDuplicates | None = None


@dataclass(frozen=True)
class ReverseLink:
    """The way back along a link, seen from one of its targets (`client.sales`)."""

    name: str
    entity: str  # the entity the link is declared on (sale)
    link: LinkSpec  # the declared link (sale.client)


@dataclass(frozen=True)
class SetupSpec:
    name: str
    languages: tuple[str, ...]
    entities: Mapping[str, EntitySpec]
    roles: Mapping[str, RoleSpec] = field(default_factory=lambda: MappingProxyType({}))
    #: rules and stage locks by entity (engine/setup/rules.py); entities without are absent
    rules: Mapping[str, EntityRules] = field(default_factory=lambda: MappingProxyType({}))
    #: engine/setup/automations.py's AutomationSpec, engine/setup/intakes.py's IntakeSpec
    automations: tuple[Any, ...] = ()
    intakes: tuple[Any, ...] = ()
    source: str = ""
    #: the IANA time zone relative dates and dynamic defaults are taken in (`timezone:`)
    timezone: str = "UTC"

    def entity(self, name: str) -> EntitySpec:
        return self.entities[name]

    @cached_property
    def reverse_links(self) -> Mapping[str, Mapping[str, ReverseLink]]:
        """For each entity, the links declared elsewhere that name a way back to it."""
        result: dict[str, dict[str, ReverseLink]] = {name: {} for name in self.entities}
        for entity in self.entities.values():
            for link in entity.links.values():
                if link.reverse:
                    for target in link.targets:
                        result[target][link.reverse] = ReverseLink(link.reverse, entity.name, link)
        return MappingProxyType({k: MappingProxyType(v) for k, v in result.items()})

    @cached_property
    def inbound_links(self) -> Mapping[str, tuple[tuple[str, LinkSpec], ...]]:
        """For each entity, every (entity, link) that points at it, named way back or not."""
        result: dict[str, list[tuple[str, LinkSpec]]] = {name: [] for name in self.entities}
        for entity in self.entities.values():
            for link in entity.links.values():
                for target in link.targets:
                    result[target].append((entity.name, link))
        return MappingProxyType({k: tuple(v) for k, v in result.items()})
