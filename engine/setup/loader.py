"""Load a setup folder: YAML → checked, immutable `SetupSpec`, or every problem at once.

The steps, each yielding diagnostics rather than stopping at the first:
1. read each file, keeping the line of every key (`engine/yamlsource.py`);
2. check its shape against the meta-schema (`engine/metaschema.py`);
3. check names and each declaration on its own (identifiers, field types, defaults);
4. check cross-references between entities (link targets, reverse names, stages);
5. build the frozen specs, only when nothing above was an error.

Why one module this long: each check writes its own message and hint, and all of them
read and extend the same drafts of one load; the meta-schema's messages live apart, in
`engine/metaschema.py`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import jsonschema

from engine.errors import Diagnostic, SetupError
from engine.setup.automations import check_automations
from engine.setup.constraints import (
    OverlapSpec,
    UniqueSpec,
    check_constraints,
    check_overlap_where,
)
from engine.setup.defaults import (
    DEFAULT_TIMEZONE,
    dynamic_default,
    timezone_hint,
    timezone_problem,
)
from engine.setup.duplicates import EntityDuplicates, check_duplicates
from engine.setup.formula_check import check_formulas
from engine.setup.intakes import check_intakes
from engine.setup.metaschema import SETUP_SCHEMA, entity_schema, shape_diagnostics
from engine.setup.names import (
    INTERNAL_PREFIX,
    LINKS_ROUTE,
    MAX_NAME,
    RECORD_ROUTES,
    SERVER_MANAGED,
    TOP_LEVEL_PATHS,
    did_you_mean,
    identifier_problem,
    link_column,
    pascal,
    poly_entity_column,
)
from engine.setup.options import option_labels, option_problems, option_values
from engine.setup.phones import region_hint, region_problem
from engine.setup.roles import ADMIN, check_roles
from engine.setup.rollups import check_rollups
from engine.setup.rules import check_rules
from engine.setup.source import SourceFile, read_yaml
from engine.setup.spec import (
    MAX_STAGES,
    EntitySpec,
    FieldSpec,
    Label,
    LinkSpec,
    Location,
    PipelineSpec,
    PipelinesSpec,
    SetupSpec,
    StageSpec,
)
from engine.types.fields import (
    ChoiceType,
    DateType,
    FieldTypeRegistry,
    ValueProblem,
    default_registry,
)

SETUP_FILE = "setup.yaml"
BOUNDED_KEYS = ("min", "max", "min_length", "max_length", "pattern", "options")


@dataclass
class LoadResult:
    """What checking a setup found: the spec (None when there were errors) and diagnostics."""

    setup: SetupSpec | None
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity != "error"]


def load_setup(folder: str | Path, registry: FieldTypeRegistry | None = None, *,
               actions: Collection[str] = ()) -> SetupSpec:
    """Load and check a setup folder; raise `SetupError` listing every problem. `actions`
    are the names of the Python actions automations may `call:`."""
    result = check_setup(folder, registry, actions=actions)
    if result.setup is None:
        raise SetupError(result.diagnostics)
    return result.setup


def check_setup(folder: str | Path, registry: FieldTypeRegistry | None = None, *,
                actions: Collection[str] = ()) -> LoadResult:
    """Load a setup folder, returning the spec and all diagnostics instead of raising."""
    return _Loader(Path(folder), registry or default_registry(), actions).run()


class _Loader:
    def __init__(self, folder: Path, registry: FieldTypeRegistry, actions: Collection[str] = ()):
        self.folder = folder
        self.registry = registry
        self.actions = frozenset(actions)
        self.diagnostics: list[Diagnostic] = []
        #: entity names of files that could not be loaded (their problems are reported)
        self.broken: set[str] = set()
        #: setup.yaml's `region:` (phones written without +), checked; None without one
        self.region: str | None = None
        self.setup_source: SourceFile | None = None
        self.entity_validator = jsonschema.Draft202012Validator(entity_schema(registry))
        self.setup_validator = jsonschema.Draft202012Validator(SETUP_SCHEMA)

    # -- driver ----------------------------------------------------------------------------
    def run(self) -> LoadResult:
        if not self.folder.is_dir():
            what = "does not exist" if not self.folder.exists() else "is not a folder"
            self.diagnostics.append(Diagnostic(
                "setup.missing", f"{what}", str(self.folder),
                hint="give the folder that holds setup.yaml and one <entity>.yaml per entity"))
            return LoadResult(None, self.diagnostics)

        settings, languages = self._load_setup_file()
        drafts: dict[str, _EntityDraft] = {}
        declared: set[str] = set()
        files = sorted(
            p for p in self.folder.iterdir()
            if p.is_file() and p.suffix in (".yaml", ".yml") and p.name != SETUP_FILE
            and not p.name.startswith(".")
        )
        if not files:
            self.diagnostics.append(Diagnostic(
                "setup.empty", "holds no entity files", str(self.folder),
                hint="add one <entity>.yaml per entity, e.g. client.yaml with 'entity: client'"))
        for path in files:
            draft = self._load_entity_file(path, languages)
            if draft is None:
                # already reported; links to it must not add "no entity" errors
                self.broken.add(path.stem)
                continue
            if draft.name in drafts:
                other = drafts[draft.name].source.name
                self.diagnostics.append(draft.source.diagnostic(
                    "entity.duplicate", ("entity",),
                    f"entity {draft.name!r} is also declared in {other}",
                    "give each entity its own name"))
                continue
            declared.add(draft.name)
            drafts[draft.name] = draft

        for draft in drafts.values():
            self._check_links(draft, drafts)
        self._check_reverse_names(drafts)
        self._note_route_names(drafts)
        self._check_schema_names(drafts)
        self._check_entity_renames(drafts)
        self._check_title_links(drafts)
        self.diagnostics.extend(check_formulas(drafts, self.broken))

        self.diagnostics.sort(key=self._place)
        if any(d.severity == "error" for d in self.diagnostics):
            return LoadResult(None, self.diagnostics)
        entities = {name: draft.build() for name, draft in drafts.items()}
        setup = SetupSpec(
            name=settings.get("name") or self.folder.resolve().name,
            languages=languages,
            entities=MappingProxyType(entities),
            source=str(self.folder),
            timezone=settings.get("timezone") or DEFAULT_TIMEZONE,
        )
        # roles name entities and fields, so they are checked against the built entities
        roles, problems = check_roles(self.setup_source, settings.get("roles"), setup,
                                      self.registry)
        problems += self._check_stage_roles(drafts, roles)
        problems += check_overlap_where(setup, self.registry,  # no_overlap's where:
                                        {name: draft.source for name, draft in drafts.items()})
        rules, found = check_rules({n: d.source for n, d in drafts.items()}, setup, roles,
                                   self.registry)
        problems += [d for d in found if d.severity == "error"]
        entities, rolled = check_rollups(setup, {n: d.source for n, d in drafts.items()},
                                         self.registry)
        problems += rolled
        setup = replace(setup, roles=MappingProxyType(roles), rules=MappingProxyType(rules),
                        entities=MappingProxyType(entities))
        automations, troubles = check_automations(
            self.setup_source, settings.get("automations"), setup, self.registry, self.actions)
        problems += troubles
        intakes, troubles = check_intakes(self.setup_source, settings.get("intakes"), setup)
        problems += troubles
        if problems:
            return LoadResult(None, [*self.diagnostics, *problems])
        return LoadResult(replace(setup, automations=automations, intakes=intakes),
                          [*self.diagnostics, *(d for d in found if d.severity != "error")])

    def _check_stage_roles(self, drafts: Mapping[str, _EntityDraft],
                           roles: Mapping[str, Any]) -> list[Diagnostic]:
        """`roles:` of a stage name roles of setup.yaml (or the built-in admin)."""
        known = [*roles, ADMIN]
        problems = []
        for draft in drafts.values():
            declared: list[tuple[tuple[str, ...], Any]]
            if "pipeline" in draft.data:
                declared = [(("pipeline",), draft.data["pipeline"])]
            else:
                declared = [(("pipelines", name), body)
                            for name, body in (draft.data.get("pipelines") or {}).items()]
            for base, body in declared:
                for index, item in enumerate(body.get("stages") or ()):
                    for position, role in enumerate(
                            item.get("roles") or () if isinstance(item, dict) else ()):
                        if role not in known:
                            problems.append(draft.source.diagnostic(
                                "stage.roles", (*base, "stages", index, "roles", position),
                                f"no role {role!r} in setup.yaml",
                                did_you_mean(role, known) or "roles: " + ", ".join(known)))
        return problems

    def _place(self, diagnostic: Diagnostic) -> tuple[int, str, int, int]:
        """Folder-level problems first, then setup.yaml, then the entity files by name."""
        rank = 0 if not diagnostic.line else 1 if diagnostic.file == SETUP_FILE else 2
        return rank, diagnostic.file, diagnostic.line, diagnostic.column

    # -- setup.yaml --------------------------------------------------------------------------
    def _load_setup_file(self) -> tuple[dict[str, Any], tuple[str, ...]]:
        path = self.folder / SETUP_FILE
        if not path.exists():
            return {}, ("en",)
        source, problems = read_yaml(path, SETUP_FILE)
        self.diagnostics.extend(problems)
        if source is None:
            return {}, ("en",)
        data = source.data if source.data is not None else {}
        if not self._validate_shape(source, data, self.setup_validator):
            return {}, ("en",)
        self.setup_source = source
        zone_problem = timezone_problem(data["timezone"]) if "timezone" in data else None
        if zone_problem:
            self.diagnostics.append(source.diagnostic(
                "setup.timezone", ("timezone",), zone_problem, timezone_hint(data["timezone"])))
        if "region" in data:
            self._check_region(source, data["region"])
        return data, tuple(data.get("languages") or ("en",))

    def _check_region(self, source: SourceFile, region: Any) -> None:
        problem = region_problem(region)
        if problem:
            self.diagnostics.append(source.diagnostic("setup.region", ("region",), problem,
                                                      region_hint(region)))
        else:
            self.region = str(region).upper()

    # -- one entity file --------------------------------------------------------------------
    def _load_entity_file(self, path: Path, languages: tuple[str, ...]) -> _EntityDraft | None:
        source, problems = read_yaml(path, path.name)
        self.diagnostics.extend(problems)
        if source is None:
            return None
        data = source.data
        if data is None:
            self.diagnostics.append(source.diagnostic(
                "entity.empty", (), "is empty", "declare at least 'entity:' and 'fields:'"))
            return None
        if isinstance(data, dict) and isinstance(data.get("entity"), str):
            self.broken.add(data["entity"])
        if not self._validate_shape(source, data, self.entity_validator):
            return None
        name = data.get("entity", path.stem)
        problem = identifier_problem(name)
        if problem:
            self.diagnostics.append(source.diagnostic(
                "entity.name", ("entity",) if "entity" in data else (), f"entity name {problem}",
                _rename_hint(name) if "entity" in data else "add 'entity: <name>' to the file"))
            return None
        if name in TOP_LEVEL_PATHS:
            self.diagnostics.append(source.diagnostic(
                "entity.reserved", ("entity",) if "entity" in data else (),
                f"'/api/{name}' is a path of the API itself, so no entity can be named {name!r}",
                "choose another name, e.g. " + repr(name + "_record")))
            return None
        self.broken.discard(name)
        draft = _EntityDraft(name, source, languages)
        self._check_fields(draft)
        self._check_link_declarations(draft)
        self._check_pipeline(draft)
        self._check_search_and_title(draft)
        problems, draft.unique, draft.no_overlap = check_constraints(
            source, data, draft.fields, draft.links, (*draft.field_names, *(data.get("links") or {})))
        self.diagnostics += problems
        draft.duplicates, problems = check_duplicates(source, name, data, draft.fields,
                                                      draft.links, draft.field_names,
                                                      region=self.region)
        self.diagnostics += problems
        return draft

    def _validate_shape(self, source: SourceFile, data: Any,
                        validator: jsonschema.Draft202012Validator) -> bool:
        found = False
        seen: set[tuple[tuple[Any, ...], str]] = set()
        for error in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.path))):
            for diagnostic in shape_diagnostics(source, error):
                marker = (diagnostic.path, diagnostic.message)
                if marker not in seen:
                    seen.add(marker)
                    self.diagnostics.append(diagnostic)
                    found = True
        return not found

    # -- fields ------------------------------------------------------------------------------
    def _check_fields(self, draft: _EntityDraft, at: tuple[str | int, ...] = ("fields",),
                      into: dict[str, FieldSpec] | None = None) -> None:
        """The fields declared at `at` (an entity's fields, or a link's `through`), checked
        and built into `into` (the entity's fields unless given)."""
        source = draft.source
        declared: Any = draft.data
        for key in at:
            declared = declared.get(key) or {}
        fields = draft.fields if into is None else into
        for name, raw in declared.items():
            path: tuple[str | int, ...] = (*at, name)
            decl: dict[str, Any] = {"type": raw} if isinstance(raw, str) else dict(raw)
            if not self._member_name_ok(source, path, name, "field"):
                continue
            field_type = self.registry.get(decl["type"])
            if field_type is None:
                self.diagnostics.append(source.diagnostic(
                    "field.type", (*path, "type") if isinstance(raw, dict) else path,
                    f"unknown field type {decl['type']!r}",
                    did_you_mean(decl["type"], self.registry.names())
                    or "use one of: " + ", ".join(self.registry.names())))
                continue
            ok = True
            for key in BOUNDED_KEYS:
                if key in decl and key not in field_type.accepts:
                    ok = False
                    accepting = [n for n in self.registry.names()
                                 if key in self.registry.get(n).accepts]  # type: ignore[union-attr]
                    self.diagnostics.append(source.diagnostic(
                        "field.key", (*path, key),
                        f"{_a(field_type.name)} field takes no {key}",
                        f"{key} applies to: {', '.join(accepting)}", at_key=True))
            for key in self.registry.all_extra_keys():
                if key in decl and key not in field_type.extra_keys:
                    ok = False
                    accepting = [n for n in self.registry.names()
                                 if key in self.registry.get(n).extra_keys]  # type: ignore[union-attr]
                    self.diagnostics.append(source.diagnostic(
                        "field.key", (*path, key), f"{_a(field_type.name)} field takes no {key}",
                        f"{key} applies to: {', '.join(accepting)}", at_key=True))
            if decl.get("unique") and not field_type.can_be_unique:
                ok = False
                self.diagnostics.append(source.diagnostic(
                    "field.unique", (*path, "unique"),
                    f"{_a(field_type.name)} field cannot be unique", "remove 'unique: true'"))
            if "pattern" in decl:
                try:
                    re.compile(decl["pattern"])
                except re.error as exc:
                    ok = False
                    self.diagnostics.append(source.diagnostic(
                        "field.pattern", (*path, "pattern"),
                        f"is not a valid regular expression: {exc}",
                        "write a Python regular expression, in single quotes so that "
                        "backslashes stay as written: '^[0-9]{10}$'"))
            if "options" in decl and "options" in field_type.accepts:  # twice, a language
                wrong_options = option_problems(source, path, decl["options"], draft.languages)
                self.diagnostics.extend(wrong_options)
                ok = ok and not wrong_options
            bounds = self._bounds(source, path, decl, field_type)
            if bounds is None:
                ok = False
            if not ok:
                continue
            spec = FieldSpec(
                name=name,
                type=field_type,
                label=_label(decl.get("label"), name, draft.languages),
                required=bool(decl.get("required", False)),
                unique=decl.get("unique") is True,
                index=bool(decl.get("index", False)),
                min=bounds["min"] if bounds else None,
                max=bounds["max"] if bounds else None,
                min_length=decl.get("min_length"),
                max_length=decl.get("max_length"),
                pattern=decl.get("pattern"),
                options=option_values(decl["options"]) if "options" in decl else None,
                option_labels=option_labels(decl.get("options"), draft.languages),
                required_in_stages=frozenset(decl.get("required_in_stages") or ()),
                help=_label(decl["help"], "", draft.languages) if "help" in decl else None,
                params=MappingProxyType(field_type.params(decl)),
                location=Location(source.name, source.line_of(path, key=True)[0]),
                renamed_from=decl.get("renamed_from"),
            )
            problems = list(field_type.check(spec))
            for key, message, hint in problems:
                self.diagnostics.append(source.diagnostic("field.invalid", (*path, key), message, hint))
            if problems:
                continue
            if "default" in decl and decl["default"] is not None:
                raw_default = decl["default"]
                if isinstance(raw_default, dt.date) and not isinstance(raw_default, dt.datetime):
                    raw_default = raw_default.isoformat()
                try:
                    dynamic = dynamic_default(spec, field_type, raw_default)
                    default = None if dynamic else field_type.parse(spec, raw_default)
                except ValueProblem as exc:
                    hint = (did_you_mean(str(raw_default), spec.options or ())
                            if spec.options else "")
                    self.diagnostics.append(source.diagnostic(
                        "field.default", (*path, "default"), f"default {raw_default!r} {exc}",
                        hint or f"give {field_type.noun} as the default, or remove it"))
                    continue
                if dynamic is not None:  # computed on each create (engine/setup/defaults.py)
                    fields[name] = _replace(spec, dynamic_default=dynamic)
                    continue
                broken = _schema_problem(field_type.json_schema(spec),
                                         field_type.render(spec, default))
                if broken:
                    self.diagnostics.append(source.diagnostic(
                        "field.default", (*path, "default"),
                        f"default {raw_default!r} breaks the field's own rule: {broken}",
                        "give a default the field accepts, or remove it"))
                    continue
                spec = _replace(spec, default=default)
            fields[name] = spec
        if into is None:
            self._check_field_renames(draft)

    def _check_field_renames(self, draft: _EntityDraft) -> None:
        """`renamed_from` names the field's old column: not a field still declared, not one
        claimed twice."""
        claimed: dict[str, str] = {}
        for name, spec in list(draft.fields.items()):
            old = spec.renamed_from
            if old is None:
                continue
            path = ("fields", name, "renamed_from")
            problem = identifier_problem(old)
            if problem:
                message, hint = f"old name {problem}", "give the field's name before the rename"
            elif old == name:
                message, hint = "names the field itself", "remove renamed_from, or give the old name"
            elif old in draft.field_names or old in (draft.data.get("links") or {}):
                message = f"{old!r} is still declared in {draft.name}; a rename leaves no old field"
                hint = f"remove {old!r} from the setup, or drop renamed_from from {name!r}"
            elif old in claimed:
                message = f"field {claimed[old]!r} is already renamed from {old!r}"
                hint = "one old field becomes one new field"
            else:
                claimed[old] = name
                continue
            self.diagnostics.append(draft.source.diagnostic("field.renamed_from", path, message, hint))

    def _bounds(self, source: SourceFile, path: tuple[str | int, ...], decl: Mapping[str, Any],
                field_type: Any) -> dict[str, Any] | None:
        bounds: dict[str, Any] = {"min": None, "max": None}
        for key in ("min", "max"):
            if key not in decl:
                continue
            value = decl[key]
            if isinstance(field_type, DateType):
                if isinstance(value, dt.date):
                    value = value.isoformat()
                try:
                    dt.date.fromisoformat(str(value))
                except ValueError:
                    self.diagnostics.append(source.diagnostic(
                        "field.bound", (*path, key), f"{key} must be a date (YYYY-MM-DD)"))
                    return None
            elif isinstance(value, bool) or not isinstance(value, (int, float)):
                self.diagnostics.append(source.diagnostic(
                    "field.bound", (*path, key), f"{key} must be a number, found {value!r}"))
                return None
            bounds[key] = value
        return bounds

    def _member_name_ok(self, source: SourceFile, path: tuple[str | int, ...], name: str,
                        what: str) -> bool:
        problem = identifier_problem(name)
        if problem:
            self.diagnostics.append(source.diagnostic(
                f"{what}.name", path, f"{what} name {problem}", _rename_hint(name), at_key=True))
            return False
        if name in SERVER_MANAGED:
            self.diagnostics.append(source.diagnostic(
                f"{what}.reserved", path,
                f"{name!r} is managed by Kartoteka on every record that has it",
                "choose another name" + (
                    "; 'owner: true' adds the owner field" if name == "owner" else
                    "; a pipeline adds the stage field" if name == "stage" else ""),
                at_key=True))
            return False
        return True

    # -- links -------------------------------------------------------------------------------
    def _check_link_declarations(self, draft: _EntityDraft) -> None:
        source = draft.source
        columns = {name for name in draft.field_names}
        for name, raw in (draft.data.get("links") or {}).items():
            path: tuple[str | int, ...] = ("links", name)
            decl: dict[str, Any] = {"to": raw} if isinstance(raw, str) else dict(raw)
            if not self._member_name_ok(source, path, name, "link"):
                continue
            if name in draft.field_names:
                self.diagnostics.append(source.diagnostic(
                    "link.clash", path, f"{name!r} is both a field and a link",
                    "rename one of them", at_key=True))
                continue
            clash = {link_column(name), poly_entity_column(name)} & columns
            if clash:
                self.diagnostics.append(source.diagnostic(
                    "link.clash", path,
                    f"link {name!r} stores its id in column {sorted(clash)[0]!r}, which is a field",
                    "rename the field or the link", at_key=True))
                continue
            polymorphic = isinstance(decl["to"], list)
            targets = tuple(decl["to"]) if polymorphic else (decl["to"],)
            many = bool(decl.get("many", False))
            on_delete = decl.get("on_delete", "restrict")
            required = bool(decl.get("required", False))
            # (broken?, code, key, message, hint): combinations a link cannot have
            rules = (
                (polymorphic and many, "link.many_polymorphic", "many",
                 "a link to several entities cannot also be many-to-many",
                 "declare one many-to-many link per target entity"),
                (on_delete == "set_null" and required, "link.on_delete", "on_delete",
                 "set_null cannot empty a required link",
                 "use restrict or cascade, or drop 'required: true'"),
                (on_delete == "cascade" and many, "link.on_delete", "on_delete",
                 "a many-to-many link cannot cascade deletes to the records it lists",
                 "use set_null to unlink them, or restrict"),
                (many and required, "link.required", "required",
                 "a many-to-many link cannot be required", "drop 'required: true'"),
            )
            ok = True
            for broken, code, key, message, hint in rules:
                if broken:
                    ok = False
                    self.diagnostics.append(source.diagnostic(code, (*path, key), message, hint))
            reverse = decl.get("reverse")
            if reverse is not None:
                problem = identifier_problem(reverse)
                if problem:
                    ok = False
                    self.diagnostics.append(source.diagnostic(
                        "link.reverse", (*path, "reverse"), f"reverse name {problem}",
                        _rename_hint(reverse)))
            through: dict[str, FieldSpec] = {}
            if "through" in decl:
                ok = self._check_through(draft, path, decl, through) and ok
            if ok:
                draft.links[name] = LinkSpec(
                    name=name,
                    targets=targets,
                    label=_label(decl.get("label"), name, draft.languages),
                    many=many,
                    polymorphic=polymorphic,
                    required=required,
                    on_delete=on_delete,
                    reverse=reverse,
                    location=Location(source.name, source.line_of(path, key=True)[0]),
                    through=MappingProxyType(through),
                )
                draft.link_paths[name] = path

    def _check_through(self, draft: _EntityDraft, path: tuple[str | int, ...],
                       decl: Mapping[str, Any], into: dict[str, FieldSpec]) -> bool:
        """A link's `through` fields, checked as an entity's fields are; only a
        many-to-many link has a row of its own to carry them."""
        if not decl.get("many"):
            self.diagnostics.append(draft.source.diagnostic(
                "link.through", (*path, "through"),
                "only a many-to-many link can carry fields",
                "add 'many: true', or move the fields to the entity", at_key=True))
            return False
        before = len(self.diagnostics)
        self._check_fields(draft, (*path, "through"), into)
        clash = sorted(set(into) & {"id", "link"})
        for name in clash:
            self.diagnostics.append(draft.source.diagnostic(
                "link.through", (*path, "through", name),
                f"a through field cannot be called {name!r}: a linked record shows it",
                "rename the field", at_key=True))
        return len(self.diagnostics) == before

    def _check_links(self, draft: _EntityDraft, drafts: Mapping[str, _EntityDraft]) -> None:
        for name, link in list(draft.links.items()):
            path = draft.link_paths[name]
            for index, target in enumerate(link.targets):
                if target not in drafts and target not in self.broken:
                    at: tuple[str | int, ...] = (*path, "to", index) if link.polymorphic else (*path, "to")
                    self.diagnostics.append(draft.source.diagnostic(
                        "link.target", at, f"no entity {target!r}",
                        did_you_mean(target, drafts) or "entities: " + ", ".join(sorted(drafts))))

    def _check_reverse_names(self, drafts: Mapping[str, _EntityDraft]) -> None:
        taken: dict[tuple[str, str], str] = {}
        for draft in drafts.values():
            for name in (*draft.field_names, *draft.links):
                taken[(draft.name, name)] = f"a {'link' if name in draft.links else 'field'} of {draft.name}"
        for draft in drafts.values():
            for name, link in draft.links.items():
                if not link.reverse:
                    continue
                for target in link.targets:
                    if target not in drafts:
                        continue
                    key = (target, link.reverse)
                    if link.reverse in SERVER_MANAGED:
                        what = "a column Kartoteka manages"
                    elif key in taken:
                        what = f"already {taken[key]}"
                    else:
                        taken[key] = f"the reverse of {draft.name}.{name}"
                        continue
                    self.diagnostics.append(draft.source.diagnostic(
                        "link.reverse_clash", (*draft.link_paths[name], "reverse"),
                        f"reverse name {link.reverse!r} on {target} is {what}",
                        f"choose another name, e.g. {link.reverse}_of_{draft.name}"))

    def _note_route_names(self, drafts: Mapping[str, _EntityDraft]) -> None:
        """A link or way back named like a route under a record (`timeline`) keeps its name,
        but its URL is `/api/{e}/{id}/links/{name}`: say so, at the name."""
        for draft in drafts.values():
            for name, link in draft.links.items():
                ways = [("link", draft.name, name, draft.link_paths[name])]
                if link.reverse:
                    ways += [("way back", target, link.reverse, (*draft.link_paths[name], "reverse"))
                             for target in link.targets if target in drafts]
                for kind, entity, way, path in ways:
                    if way not in RECORD_ROUTES:
                        continue
                    self.diagnostics.append(draft.source.diagnostic(
                        "link.route", path,
                        f"/api/{entity}/{{id}}/{way} is the API's own {way} route, so this "
                        f"{kind} is served at /api/{entity}/{{id}}/{LINKS_ROUTE}/{way}",
                        f"use that path (everywhere else it is still {way!r}), "
                        "or rename it to get the short path", at_key=kind == "link",
                        severity="note"))

    def _check_entity_renames(self, drafts: Mapping[str, _EntityDraft]) -> None:
        claimed: dict[str, str] = {}
        for draft in drafts.values():
            old = draft.data.get("renamed_from")
            if old is None:
                continue
            problem = identifier_problem(old)
            if problem:
                message, hint = f"old name {problem}", "give the entity's name before the rename"
            elif old == draft.name:
                message, hint = "names the entity itself", "remove renamed_from, or give the old name"
            elif old in drafts or old in self.broken:
                message = f"entity {old!r} is still in the setup; a rename leaves no old entity"
                hint = f"remove {old}.yaml, or drop renamed_from from {draft.name}"
            elif old in claimed:
                message = f"entity {claimed[old]!r} is already renamed from {old!r}"
                hint = "one old entity becomes one new entity"
            else:
                claimed[old] = draft.name
                continue
            self.diagnostics.append(draft.source.diagnostic(
                "entity.renamed_from", ("renamed_from",), message, hint))

    def _check_schema_names(self, drafts: Mapping[str, _EntityDraft]) -> None:
        owners: dict[str, str] = {}
        for draft in drafts.values():
            for suffix in ("", "Create", "Patch", "List"):
                schema_name = pascal(draft.name) + suffix
                if schema_name in owners and owners[schema_name] != draft.name:
                    self.diagnostics.append(draft.source.diagnostic(
                        "entity.schema_name", ("entity",),
                        f"its API schema name {schema_name} is also used by entity "
                        f"{owners[schema_name]!r}", "rename one of the two entities"))
                owners.setdefault(schema_name, draft.name)

    # -- pipelines ---------------------------------------------------------------------------
    def _check_pipeline(self, draft: _EntityDraft) -> None:
        source, data = draft.source, draft.data
        if "pipeline" in data and "pipelines" in data:
            self.diagnostics.append(source.diagnostic(
                "pipeline.both", ("pipelines",), "declare either 'pipeline' or 'pipelines', not both",
                "'pipeline:' for one process; 'pipelines:' with 'pipeline_by:' for several",
                at_key=True))
            return
        raw_pipelines: dict[str, Any]
        if "pipeline" in data:
            raw_pipelines = {"default": data["pipeline"]}
            base: tuple[str | int, ...] = ("pipeline",)
        elif "pipelines" in data:
            raw_pipelines = data["pipelines"]
            base = ("pipelines",)
        else:
            if "pipeline_by" in data:
                self.diagnostics.append(source.diagnostic(
                    "pipeline.by", ("pipeline_by",), "pipeline_by needs 'pipelines:'",
                    "declare 'pipelines: {name: {stages: [...]}, ...}', or remove pipeline_by",
                    at_key=True))
            self._stages_without_pipeline(draft)
            return
        if "pipeline" in data and "pipeline_by" in data:
            self.diagnostics.append(source.diagnostic(
                "pipeline.by", ("pipeline_by",),
                "pipeline_by picks one of several 'pipelines:', but this entity has one 'pipeline:'",
                "remove pipeline_by, or declare 'pipelines: {name: {stages: [...]}, ...}'",
                at_key=True))
        pipelines: dict[str, PipelineSpec] = {}
        for pipeline_name, raw in raw_pipelines.items():
            path = base if "pipeline" in data else (*base, pipeline_name)
            if "pipelines" in data:
                problem = identifier_problem(pipeline_name)
                if problem:
                    self.diagnostics.append(source.diagnostic(
                        "pipeline.name", path, f"pipeline name {problem}",
                        _rename_hint(pipeline_name), at_key=True))
                    continue
            pipeline = self._pipeline(source, path, pipeline_name, raw, draft.languages)
            if pipeline is not None:
                pipelines[pipeline_name] = pipeline
        if len(pipelines) != len(raw_pipelines):
            return
        selector = data.get("pipeline_by")
        if "pipelines" in data:
            if selector is None and len(pipelines) > 1:
                self.diagnostics.append(source.diagnostic(
                    "pipeline.by", ("pipelines",),
                    "several pipelines need 'pipeline_by:' naming the choice field that picks one",
                    f"add 'pipeline_by: <field>', a choice field with options "
                    f"[{', '.join(pipelines)}]", at_key=True))
                return
            if selector is not None:
                if selector in draft.field_names and selector not in draft.fields:
                    return  # the field itself is wrong, and reported
                chooser = draft.fields.get(selector)
                if chooser is None or not isinstance(chooser.type, ChoiceType):
                    if chooser is None:
                        what = f"no field {selector!r}"
                        hint = did_you_mean(selector, [n for n, f in draft.fields.items()
                                                       if isinstance(f.type, ChoiceType)])
                    else:
                        what = f"{selector!r} is {_a(chooser.type.name)} field"
                        hint = ""
                    self.diagnostics.append(source.diagnostic(
                        "pipeline.by", ("pipeline_by",),
                        f"pipeline_by must name a choice field of this entity: {what}",
                        hint or f"declare {selector}: {{type: choice, options: "
                                f"[{', '.join(pipelines)}]}}"))
                    return
                options, names = set(chooser.options or ()), set(pipelines)
                if options != names:
                    missing = sorted(options - names)
                    extra = sorted(names - options)
                    self.diagnostics.append(source.diagnostic(
                        "pipeline.by", ("pipeline_by",),
                        f"the options of {selector!r} must be the pipeline names"
                        + (f"; no pipeline for {', '.join(missing)}" if missing else "")
                        + (f"; no option for {', '.join(extra)}" if extra else ""),
                        f"options: [{', '.join(pipelines)}], one per pipeline"))
                    return
        draft.pipeline = PipelinesSpec(MappingProxyType(pipelines), selector)
        stage_names = draft.pipeline.all_stage_names
        if len(stage_names) > MAX_STAGES:
            self._too_many_stages(draft, base, draft.pipeline)
        for field_name, spec in draft.fields.items():
            if not spec.required_in_stages:
                continue
            listed = draft.data["fields"][field_name]["required_in_stages"]
            for index, stage in enumerate(listed):
                if stage not in stage_names:
                    self.diagnostics.append(source.diagnostic(
                        "field.required_in_stages",
                        ("fields", field_name, "required_in_stages", index),
                        f"no stage {stage!r}",
                        did_you_mean(stage, stage_names) or "stages: " + ", ".join(stage_names)))

    def _too_many_stages(self, draft: _EntityDraft, base: tuple[str | int, ...],
                         spec: PipelinesSpec) -> None:
        """Reported at the first stage past the limit, counting names across pipelines."""
        pipelines = spec.pipelines
        total = len(spec.all_stage_names)
        seen: set[str] = set()
        for pipeline_name, pipeline in pipelines.items():
            for index, stage_name in enumerate(pipeline.stage_names):
                seen.add(stage_name)
                if len(seen) <= MAX_STAGES:
                    continue
                path = base if "pipeline" in draft.data else (*base, pipeline_name)
                where = ("its pipeline" if len(pipelines) == 1
                         else f"its {len(pipelines)} pipelines together")
                self.diagnostics.append(draft.source.diagnostic(
                    "pipeline.too_many_stages", (*path, "stages", index),
                    f"{draft.name} has {total} distinct stage names in {where}; at most "
                    f"{MAX_STAGES} are allowed (the funnel keeps the stages a record has "
                    "reached as the bits of one 64-bit integer), and this is stage "
                    f"{MAX_STAGES + 1}",
                    "use fewer stages: pipelines that share a step can share its stage name "
                    "(a name counts once), or move a separate part of the process to an "
                    "entity of its own, linked to this one"))
                return

    def _stages_without_pipeline(self, draft: _EntityDraft) -> None:
        for field_name, spec in draft.fields.items():
            if spec.required_in_stages:
                self.diagnostics.append(draft.source.diagnostic(
                    "field.required_in_stages", ("fields", field_name, "required_in_stages"),
                    f"names stages, but {draft.name} has no pipeline",
                    "declare 'pipeline: {stages: [...]}', or use 'required: true'"))

    def _pipeline(self, source: SourceFile, path: tuple[str | int, ...], name: str,
                  raw: Mapping[str, Any], languages: tuple[str, ...]) -> PipelineSpec | None:
        stages: list[StageSpec] = []
        ok = True
        final = list(raw.get("final") or ())
        for index, item in enumerate(raw["stages"]):
            decl: Mapping[str, Any] = {"name": item} if isinstance(item, str) else item
            stage_name = decl["name"]
            problem = identifier_problem(stage_name)
            if problem:
                ok = False
                self.diagnostics.append(source.diagnostic(
                    "stage.name", (*path, "stages", index), f"stage name {problem}",
                    _rename_hint(stage_name)))
                continue
            if stage_name in (s.name for s in stages):
                ok = False
                first = next(i for i, s in enumerate(stages) if s.name == stage_name)
                self.diagnostics.append(source.diagnostic(
                    "stage.duplicate", (*path, "stages", index),
                    f"stage {stage_name!r} is listed twice",
                    f"list each stage once; it is already stage {first + 1} of the pipeline"))
                continue
            category = decl.get("category") or ("closed" if stage_name in final else "open")
            stages.append(StageSpec(stage_name, _label(decl.get("label"), stage_name, languages),
                                    decl.get("probability"), category,
                                    tuple(decl.get("roles") or ())))
        names = [s.name for s in stages]
        for index, stage_name in enumerate(final):
            if stage_name not in names:
                ok = False
                self.diagnostics.append(source.diagnostic(
                    "pipeline.final", (*path, "final", index), f"no stage {stage_name!r}",
                    did_you_mean(stage_name, names)))
        transitions = raw.get("transitions", "free")
        if isinstance(transitions, dict):
            for source_stage, targets in transitions.items():
                if source_stage not in names:
                    ok = False
                    self.diagnostics.append(source.diagnostic(
                        "pipeline.transitions", (*path, "transitions", source_stage),
                        f"no stage {source_stage!r}", did_you_mean(source_stage, names),
                        at_key=True))
                for index, target in enumerate(targets):
                    if target not in names:
                        ok = False
                        self.diagnostics.append(source.diagnostic(
                            "pipeline.transitions", (*path, "transitions", source_stage, index),
                            f"no stage {target!r}", did_you_mean(target, names)))
            transitions = MappingProxyType({k: tuple(v) for k, v in transitions.items()})
        for old, new in (raw.get("moved") or {}).items():
            where = (*path, "moved", old)
            if old in names:
                ok = False
                self.diagnostics.append(source.diagnostic(
                    "pipeline.moved", where,
                    f"stage {old!r} is still in the pipeline; only a removed stage moves",
                    f"remove {old!r} from stages, or drop it from moved", at_key=True))
            elif identifier_problem(old):
                ok = False
                self.diagnostics.append(source.diagnostic(
                    "pipeline.moved", where, f"old stage name {identifier_problem(old)}",
                    "give the name of the removed stage", at_key=True))
            elif new not in names:
                ok = False
                self.diagnostics.append(source.diagnostic(
                    "pipeline.moved", where, f"moves records to {new!r}, which is not a stage",
                    did_you_mean(new, names) or "stages: " + ", ".join(names)))
        if not ok:
            return None
        moved = MappingProxyType(dict(raw.get("moved") or {}))
        return PipelineSpec(name, tuple(stages), frozenset(final), transitions, moved)

    # -- search and title --------------------------------------------------------------------
    def _check_search_and_title(self, draft: _EntityDraft) -> None:
        source = draft.source
        for index, name in enumerate(draft.data.get("search") or ()):
            spec = draft.fields.get(name)
            if spec is None:
                if name not in draft.field_names:
                    self.diagnostics.append(source.diagnostic(
                        "search.field", ("search", index), f"no field {name!r}",
                        did_you_mean(name, draft.field_names)))
            elif not spec.type.searchable:
                self.diagnostics.append(source.diagnostic(
                    "search.field", ("search", index),
                    f"{name!r} is {_a(spec.type.name)} field; search covers text fields",
                    "list string, text, e-mail, phone, url or choice fields"))
        title = draft.data.get("title")
        if title is None:
            return
        for match in re.finditer(r"\{([^{}]*)\}", title):
            ref = match.group(1).strip()
            head, _, tail = ref.partition(".")
            if not tail:
                if head not in draft.field_names and head not in ("id", "stage"):
                    self.diagnostics.append(source.diagnostic(
                        "title.field", ("title",), f"no field {head!r} in {{{ref}}}",
                        did_you_mean(head, draft.field_names)))
            elif head not in (draft.data.get("links") or {}):
                self.diagnostics.append(source.diagnostic(
                    "title.link", ("title",), f"no link {head!r} in {{{ref}}}",
                    did_you_mean(head, draft.data.get("links") or {})))

    def _check_title_links(self, drafts: Mapping[str, _EntityDraft]) -> None:
        """`{link.field}` in a title must name a field of the linked entity."""
        for draft in drafts.values():
            for match in re.finditer(r"\{([^{}]*)\}", draft.data.get("title") or ""):
                head, _, tail = match.group(1).strip().partition(".")
                link = draft.links.get(head)
                if not tail or link is None or link.many or link.polymorphic:
                    continue
                target = drafts.get(link.target)
                if target is not None and tail not in target.field_names and tail != "id":
                    self.diagnostics.append(draft.source.diagnostic(
                        "title.link_field", ("title",),
                        f"{link.target} has no field {tail!r} in {{{match.group(1)}}}",
                        did_you_mean(tail, target.field_names)
                        or "fields: " + ", ".join(target.field_names)))


class _EntityDraft:
    """An entity under construction: what has been checked so far."""

    def __init__(self, name: str, source: SourceFile, languages: tuple[str, ...]):
        self.name = name
        self.source = source
        self.data: dict[str, Any] = source.data
        self.languages = languages
        self.field_names = tuple((self.data.get("fields") or {}).keys())
        self.fields: dict[str, FieldSpec] = {}
        self.links: dict[str, LinkSpec] = {}
        self.link_paths: dict[str, tuple[str | int, ...]] = {}
        self.pipeline: PipelinesSpec | None = None
        self.unique: tuple[UniqueSpec, ...] = ()
        self.no_overlap: tuple[OverlapSpec, ...] = ()
        self.duplicates: EntityDuplicates | None = None

    def build(self) -> EntitySpec:
        data = self.data
        label = _label(data.get("label"), self.name, self.languages)
        return EntitySpec(
            name=self.name,
            label=label,
            plural=_label(data.get("plural"), "", self.languages) if "plural" in data else label,
            fields=MappingProxyType(dict(self.fields)),
            links=MappingProxyType(dict(self.links)),
            title=data.get("title"),
            search=tuple(data.get("search") or ()),
            owner=bool(data.get("owner", False)),
            pipeline=self.pipeline,
            help=_label(data["help"], "", self.languages) if "help" in data else None,
            location=Location(self.source.name, 1),
            renamed_from=data.get("renamed_from"),
            unique=self.unique,
            no_overlap=self.no_overlap,
            duplicates=self.duplicates,
        )


def _label(raw: Any, fallback: str, languages: tuple[str, ...]) -> Label:
    if raw is None:
        return MappingProxyType({languages[0]: fallback.replace("_", " ").capitalize()})
    if isinstance(raw, str):
        return MappingProxyType({languages[0]: raw})
    return MappingProxyType(dict(raw))


def _a(word: str) -> str:
    """`integer` → `an integer`, `string` → `a string`."""
    return ("an " if word[:1] in "aeiou" else "a ") + word


def _rename_hint(name: object) -> str:
    """A hint for a name that is not an identifier: a corrected spelling where one exists."""
    if not isinstance(name, str):
        return "write the name as plain text"
    if not name.isascii():
        return ("use a Latin name and put this text in the label, "
                f"e.g. {{..., label: {name}}}")
    guess = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()
    guess = re.sub(r"[^a-z0-9]+", "_", guess).strip("_")
    guess = guess.removeprefix(INTERNAL_PREFIX).lstrip("0123456789_")[:MAX_NAME].rstrip("_")
    if guess and guess != name and identifier_problem(guess) is None:
        return f"rename it, e.g. {guess!r}"
    return "choose another name"


def _schema_problem(schema: dict[str, Any], value: Any) -> str:
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(value))
    if error is None:
        return ""
    if error.validator in ("minimum", "maximum"):
        return f"must be at {'least' if error.validator == 'minimum' else 'most'} {error.validator_value}"
    if error.validator in ("minLength", "maxLength"):
        return f"must be at {'least' if error.validator == 'minLength' else 'most'} " \
               f"{error.validator_value} characters long"
    if error.validator == "pattern":
        return f"does not match the pattern {error.validator_value}"
    return str(error.message)


def _replace(spec: FieldSpec, **changes: Any) -> FieldSpec:
    from dataclasses import replace

    return replace(spec, **changes)
