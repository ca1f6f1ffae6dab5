"""The web app's pages: server-rendered HTML from the engine's own calls, as the caller.

Every page handler does its engine work in one thread-pool call (the engine is
synchronous) inside the request's acting user (set by api.auth's middleware), so a page
shows exactly what the API would answer the same user. Pages only read: every change is
sent by the page's script as JSON to the API (`/api/...`), which checks it as for any
client, so the app has no write path of its own.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from api.errors import STATUS
from api.threads import in_thread
from api.web import i18n, saved, views
from engine.core import Kartoteka
from engine.errors import Forbidden, MalformedRequest, NotFound, RequestError
from engine.records.saved_views import typed_params
from engine.records.titles import Titles
from engine.records.totals import linked_totals
from engine.setup.roles import OPERATIONS
from engine.setup.spec import EntitySpec

HERE = Path(__file__).parent
STATIC = HERE / "static"
#: a list page's rows, and a board column's cards per "more"
PAGE_SIZE = 50
COLUMN_SIZE = 10
#: the records of each way back a card lists (a client's sales)
LINKED_SIZE = 20
TIMELINE_SIZE = 50
#: on every page: per user, never cached; only the app's own script and styles run (an
#: injected script or style would not), and no other site may frame it (a framed board
#: could be dragged by a click-jacking page)
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; object-src 'none'; base-uri 'none'; "
                               "form-action 'self'; frame-ancestors 'none'",
    "Referrer-Policy": "same-origin",
}
#: query parameters the pages read themselves and never pass to the engine
UI_PARAMS = frozenset({"lang", saved.PARAM})


class WebApp:
    """One setup's pages. Built once at start-up; nothing in it depends on a request."""

    def __init__(self, kt: Kartoteka):
        self.kt = kt
        self.setup = kt.setup
        self.titles = Titles(kt.records)
        self.env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True,
                               undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        digest = hashlib.sha256()
        for path in sorted(STATIC.iterdir()):
            digest.update(path.read_bytes())
        #: appended to asset URLs, so a browser never runs an old script with a new page
        self.asset_version = digest.hexdigest()[:12]

    # -- plumbing ------------------------------------------------------------------------------
    async def page(self, request: Request, build: Callable[..., tuple[str, dict[str, Any]]],
                   *args: Any) -> Response:
        """Render `build(base, *args)` → (template, values) as the caller; an engine
        refusal becomes an error page with the API's status."""
        user = getattr(request.state, "user", None)
        if self.signed_out(request):
            # api.auth sends a browser without a session to the sign-in page; this only
            # keeps a page from ever rendering as the unrestricted system when users exist
            return RedirectResponse("/app/sign-in?next=" + quote(request.url.path), 303)
        language = i18n.page_language(request, self.setup.languages)
        base = self._base(request, language, user)

        def run() -> tuple[str, int]:
            try:
                base["nav"] = self.nav(base["lang"])
                template, values = build(base, *args)
                return self.env.get_template(template).render(**base, **values), 200
            except RequestError as error:
                status = next((code for cls, code in STATUS.items() if isinstance(error, cls)), 400)
                return self.env.get_template("error.html").render(
                    **base, error=error, status=status), status

        html, status = await in_thread(run)
        response = HTMLResponse(html, status)
        response.headers.update(PAGE_HEADERS)
        asked = request.query_params.get("lang")
        if asked and asked == language:
            response.set_cookie(i18n.COOKIE, language, max_age=365 * 86400, samesite="lax",
                                httponly=True)
        return response

    def signed_out(self, request: Request) -> bool:
        """Whether users exist but none is signed in (api.auth normally answers first)."""
        return getattr(request.state, "user", None) is None and self.kt.users.any_users()

    def _base(self, request: Request, language: str | None, user: Any) -> dict[str, Any]:
        words = i18n.words(language)
        params = [(k, v) for k, v in request.query_params.multi_items() if k != "lang"]
        return {
            "lang": language or "en", "dir": i18n.direction(language), "w": words,
            "setup_name": self.setup.name, "user": user, "asset": self.asset_version,
            "languages": [(lang, views.query_string(params, lang=lang))
                          for lang in self.setup.languages],
            "path": request.url.path, "params": params,
            "csrf": request.cookies.get("kt_csrf", ""),
        }

    def rights(self, entity: str) -> dict[str, bool]:
        granted = self.kt.records.access.rights(entity)
        return {op: granted is None or granted.allows(op) for op in OPERATIONS}

    def spec(self, entity: str) -> EntitySpec:
        return self.setup.entities[entity]

    def label(self, entity: str, language: str, plural: bool = False) -> str:
        spec = self.spec(entity)
        return views.text(spec.plural if plural else spec.label, language) or entity

    def title_map(self, wanted: Mapping[str, set[int]]) -> dict[tuple[str, int], str]:
        """(entity, id) → title of the records the caller may read."""
        out: dict[tuple[str, int], str] = {}
        with self.kt.db.read() as conn:
            for entity, ids in wanted.items():
                for record_id, title in self.titles.of(conn, entity, ids).items():
                    out[(entity, record_id)] = title
        return out

    def user_names(self, ids: Iterable[Any]) -> dict[int, str]:
        """Who did what on a timeline, by id: a user's name, else their e-mail (a user
        since deleted is left out, and shown by nothing)."""
        wanted = [i for i in ids if isinstance(i, int)]
        if not wanted:
            return {}
        with self.kt.db.read() as conn:
            return {u.id: u.name or u.email for u in self.kt.users.by_ids(conn, wanted)}

    def _user_options(self, inputs: Sequence[views.Input]) -> None:
        """The choices of a `user` or `users` input: the active users by name, and any
        user the record names who is no longer active (kept unless unticked)."""
        pickers = [item for item in inputs if item.kind in ("user", "users")]
        if not pickers:
            return
        with self.kt.db.read() as conn:
            active = [(str(u.id), u.name or u.email) for u in self.kt.users.all_active(conn)]
        for item in pickers:
            chosen = item.value if isinstance(item.value, list) else [item.value]
            known = {value for value, _ in active}
            gone = [i for i in chosen if isinstance(i, int) and str(i) not in known]
            names = self.user_names(gone)
            item.options = [*active, *((str(i), names.get(i, f"#{i}")) for i in gone)]

    def record_titles(self, entity: str, records: Sequence[Mapping[str, Any]]
                      ) -> dict[tuple[str, int], str]:
        """The titles of records already read (a list's page): only the records their
        titles name through a link are fetched, not these again."""
        template = self.titles.templates.get(entity)
        if template is None or not records:
            return {}
        spec = self.spec(entity)
        linked: dict[str, dict[int, Mapping[str, Any]]] = {}
        with self.kt.db.read() as conn:
            for link in template.links:
                ids = {r[link] for r in records if isinstance(r.get(link), int)}
                linked[link] = {r["id"]: r for r in self.kt.records.fetch(
                    conn, spec.links[link].target, ids)}
        return {(entity, r["id"]): template.render(r, {
            link: linked[link].get(r.get(link)) for link in template.links})  # type: ignore[arg-type]
            for r in records}

    def engine_params(self, entity: str, params: Sequence[tuple[str, str]]
                      ) -> list[tuple[str, str]]:
        """The page's query as the engine's list grammar: the app's own keys out, then
        read as people type it (empty inputs out, a bare date in a datetime range as the
        whole day in UTC), as a saved view's query is checked."""
        return typed_params(self.spec(entity), [(k, v) for k, v in params if k not in UI_PARAMS])

    # -- pages ---------------------------------------------------------------------------------
    def home(self, base: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        lang = base["lang"]
        entities = []
        for name, spec in self.setup.entities.items():
            rights = self.rights(name)
            if rights["read"]:
                entities.append({"name": name, "label": self.label(name, lang, True),
                                 "pipeline": spec.pipeline is not None,
                                 "create": rights["create"]})
        return "home.html", {"entities": entities}

    def nav(self, lang: str) -> list[dict[str, Any]]:
        return [{"name": name, "label": self.label(name, lang, True)}
                for name in self.setup.entities if self.rights(name)["read"]]

    def list_page(self, base: dict[str, Any], entity: str) -> tuple[str, dict[str, Any]]:
        lang, words = base["lang"], base["w"]
        spec = self.spec(entity)
        rights = self.rights(entity)
        granted = self.kt.records.access.rights(entity)
        base["params"] = saved.with_default(self.kt, entity, base["params"])  # api/web/saved.py
        params = self.engine_params(entity, base["params"])
        query = [*params]
        if not any(k == "limit" for k, _ in query):
            query.append(("limit", str(PAGE_SIZE)))
        if not any(k == "total" for k, _ in query):
            query.append(("total", "false"))  # a count of a million rows costs; paging does not
        error = None
        try:
            page = self.kt.records.list_page(entity, query)
            items, next_cursor = page.items, page.next
        except MalformedRequest as refused:
            error, items, next_cursor = refused, [], None
        columns = views.columns(spec, granted, lang, words["title"])
        for column in columns:
            if column.name == "stage":
                column.label = words["stage"]
        wanted = views.refs_of(self.setup, entity, items, [c.name for c in columns])
        panel = self.filter_panel(spec, base)
        chosen = panel["chosen"]
        titles = self.title_map(wanted)
        titles.update(self.record_titles(entity, items))
        people = self.user_names(views.user_ids(spec, items))
        rows = [{
            "href": views.card_href(entity, record["id"]),
            "title": titles.get((entity, record["id"])) or f"#{record['id']}",
            "cells": [views.show(spec, c.name, record.get(c.name), lang, titles, words, people)
                      for c in columns[1:]],
        } for record in items]
        sort = chosen.get("sort", "")
        kept = [(k, v) for k, v in base["params"] if k != "cursor"]
        return "list.html", {
            "entity": entity, "label": self.label(entity, lang, True),
            "singular": self.label(entity, lang), "rights": rights,
            "pipeline": spec.pipeline is not None, "columns": columns, "rows": rows,
            "sort": sort, "error": error, **panel,
            "sort_link": lambda name: views.query_string(
                kept, sort=("-" + name) if sort == name else name),
            "next_link": views.query_string(base["params"], cursor=next_cursor)
            if next_cursor else None,
            "first_link": views.query_string(kept) if chosen.get("cursor") else None,
            "views": saved.bar(self.kt, entity, base["params"], lang),
        }

    def lookup(self, entity: str, q: str) -> list[dict[str, Any]]:
        """Records matching `q` with their titles, for a link picker."""
        params = [("limit", "12"), ("total", "false")]
        if q.strip():
            params.append(("q", q.strip()[:200]))
        items = self.kt.records.list_page(entity, params).items
        titles = self.title_map({entity: {r["id"] for r in items}})
        return [{"id": r["id"], "title": titles.get((entity, r["id"])) or f"#{r['id']}"}
                for r in items]

    def card(self, base: dict[str, Any], entity: str, record_id: int
             ) -> tuple[str, dict[str, Any]]:
        lang, words = base["lang"], base["w"]
        spec = self.spec(entity)
        granted = self.kt.records.access.rights(entity)
        record = self.kt.records.get(entity, record_id)
        hidden = granted.hidden if granted else frozenset()
        wanted = views.refs_of(self.setup, entity, [record], spec.links)
        wanted.setdefault(entity, set()).add(record_id)
        linked = self._ways_back(entity, record_id, lang, words, wanted)
        older = dict(base["params"]).get("cursor")  # the timeline's next page
        timeline = self.kt.timeline.page(entity, record_id, [
            ("limit", str(TIMELINE_SIZE)), *([("cursor", older)] if older else [])])
        for item in timeline["items"]:
            if item.get("type") == "record" and isinstance(item.get("record"), dict):
                wanted.setdefault(item["entity"], set()).add(item["record"]["id"])
        titles = self.title_map(wanted)
        people = self.user_names([*(item.get("by") for item in timeline["items"]),
                                  *views.user_ids(spec, [record]),
                                  *_changed_users(spec, timeline["items"])])
        for way in linked:
            other = way.pop("spec")
            way["rows"] = [{
                "href": views.card_href(way["entity"], r["id"]),
                "title": titles.get((way["entity"], r["id"])) or f"#{r['id']}",
                "stage": views.show(other, "stage", r.get("stage"), lang, titles, words),
                "money": [views.show(other, n, r.get(n), lang, titles, words)
                          for n, _ in way["money"]],
            } for r in way.pop("items")]
        pairs = self._pairs(entity, record, lang, titles)
        fields = [{"name": name, "label": views.field_label(spec, name, lang),
                   "value": views.show(spec, name, record.get(name), lang, titles, words,
                                       people)}
                  for name in [*spec.fields, *spec.links]
                  if name not in hidden and name in record
                  and not any(p["name"] == name for p in pairs)]
        pipeline = None
        if spec.pipeline:
            chosen = spec.pipeline.for_record(record.get(spec.pipeline.pipeline_by or ""))
            pipeline = {"stage": record.get("stage"),
                        "stages": [(s.name, views.text(s.label, lang) or s.name)
                                   for s in chosen.stages]}
        return "card.html", {
            "entity": entity, "label": self.label(entity, lang),
            "plural": self.label(entity, lang, True), "record": record,
            "title": titles.get((entity, record_id)) or f"#{record_id}",
            "fields": fields, "linked": linked, "rights": self.rights(entity),
            "pairs": pairs, "pipeline": pipeline, "field_labels": self.field_labels(spec, lang),
            "older": views.query_string([], cursor=timeline["next"]) if timeline["next"] else None,
            "newest": bool(older),
            "timeline": [{**self._timeline_item(spec, item, lang, words, titles, people),
                          "who": people.get(item.get("by"))} for item in timeline["items"]],
        }

    def _ways_back(self, entity: str, record_id: int, lang: str, words: Mapping[str, str],
                   wanted: dict[str, set[int]]) -> list[dict[str, Any]]:
        """The records linking to this one, per way back: the first LINKED_SIZE of them, and
        the count and money sums of all of them the user may read (one aggregate each)."""
        out = []
        ways = self.setup.reverse_links[entity].values()
        shared = {other: sum(1 for r in ways if r.entity == other) for other in
                  {r.entity for r in ways}}
        readable = {name: reverse for name, reverse in self.setup.reverse_links[entity].items()
                    if self.rights(reverse.entity)["read"]}
        totals = linked_totals(self.kt.records, entity, record_id, list(readable))
        for name, reverse in readable.items():
            other = self.spec(reverse.entity)
            page = self.kt.records.linked(entity, record_id, name,
                                          [("limit", str(LINKED_SIZE)), ("total", "false")])
            granted = self.kt.records.access.rights(reverse.entity)
            hidden = granted.hidden if granted else frozenset()
            money = [n for n, f in other.fields.items()
                     if f.type.summable and n not in hidden]
            wanted.setdefault(reverse.entity, set()).update(r["id"] for r in page.items)
            link = reverse.link
            key = f"{link.name}[eq]"
            value = f"{entity}:{record_id}" if link.polymorphic else str(record_id)
            new = None
            if self.rights(reverse.entity)["create"] and not link.many:
                new = f"/app/{reverse.entity}/new" + views.query_string([(link.name, value)])
            out.append({
                "name": name, "entity": reverse.entity, "new": new,
                "label": self.label(reverse.entity, lang, True) + (
                    f" ({views.text(link.label, lang) or link.name})" if shared[reverse.entity] > 1
                    else ""),
                "items": page.items, "more": page.next is not None,
                "count": totals[name].count,
                "all": f"/app/{reverse.entity}" + views.query_string([(key, value)]),
                "stage": other.pipeline is not None,
                "money": [(n, views.field_label(other, n, lang)) for n in money],
                "sums": {n: totals[name].sums.get(n) for n in money},
                "places": {n: other.fields[n].params.get("places", 2) for n in money},
                "spec": other,
            })
        return out

    def _pairs(self, entity: str, record: Mapping[str, Any], lang: str,
               titles: Mapping[tuple[str, int], str]) -> list[dict[str, Any]]:
        """The links of this record that carry data, pair by pair, with their values as
        inputs: editable (PUT and DELETE of a pair, docs/api.md) when the role may update
        the record and the link is not read-only for it; absent when it is hidden."""
        spec = self.spec(entity)
        granted = self.kt.records.access.rights(entity)
        readonly = granted.readonly if granted else frozenset()
        out = []
        for name, link in spec.links.items():
            if not link.through or name not in record:
                continue
            editable = self.rights(entity)["update"] and name not in readonly
            rows = [{"id": pair["id"], "href": views.card_href(link.target, pair["id"]),
                     "title": titles.get((link.target, pair["id"])) or f"#{pair['id']}",
                     "inputs": views.pair_inputs(link, lang, pair)}
                    for pair in record[name] if isinstance(pair, dict)]
            blank = views.pair_inputs(link, lang)
            for inputs in [*(row["inputs"] for row in rows), blank]:
                self._user_options(inputs)
            out.append({"name": name, "label": views.field_label(spec, name, lang),
                        "target": link.target, "editable": editable, "rows": rows,
                        "blank": blank, "base": f"/api/{entity}/{record['id']}/{name}"})
        return out

    def _timeline_item(self, spec: EntitySpec, item: Mapping[str, Any], lang: str,
                       words: Mapping[str, str], titles: Mapping[tuple[str, int], str],
                       people: Mapping[int, str] | None = None) -> dict[str, Any]:
        kind = item.get("type", "")
        stages = views.stage_labels(spec, lang)
        out: dict[str, Any] = {"type": kind, "at": item.get("at"), "by": item.get("by"),
                               "lines": [], "word": words.get("t_" + kind, kind)}
        if kind == "comment":
            out["text"] = item.get("text")
        elif kind in ("call", "email", "meeting"):
            out["text"] = " · ".join(str(item[k]) for k in ("subject", "text", "result")
                                     if item.get(k))
        elif kind == "stage":
            out["text"] = " → ".join(stages.get(s, s) for s in (item.get("from"), item.get("to"))
                                    if s)
        elif kind == "change":
            for name, change in (item.get("changes") or {}).items():
                label = words["stage"] if name == "stage" else views.field_label(spec, name, lang)
                # a create's values are as they are; a change's are [old, new] pairs
                if item.get("action") != "create" and isinstance(change, list) \
                        and len(change) == 2:
                    old, new = (views.show(spec, name, v, lang, titles, words, people)
                                for v in change)
                    out["lines"].append(Markup("{0}: {1} → {2}").format(label, old or "—",
                                                                         new or "—"))
                else:
                    shown = views.show(spec, name, change, lang, titles, words, people) \
                        if not isinstance(change, dict) else Markup("")
                    out["lines"].append(Markup("{0}: {1}").format(label, shown))
            out["text"] = words.get(item.get("action", ""), item.get("action", ""))
        elif kind == "record" and isinstance(item.get("record"), dict):
            other = item["entity"]
            record_id = item["record"]["id"]
            out["text"] = self.label(other, lang)
            out["href"] = views.card_href(other, record_id)
            out["link"] = titles.get((other, record_id)) or f"#{record_id}"
        elif kind == "automation":
            name = views.text(item.get("label"), lang) or item.get("automation", "")
            out["text"] = f"{name}: {item.get('status', '')}"
            out["lines"] = self._run_lines(item.get("detail") or {}, lang)
        else:  # a kind this app does not know yet: its keys and values
            out["text"] = ", ".join(f"{k}: {v}" for k, v in item.items()
                                    if k not in ("type", "id", "at", "by") and v is not None)
        return out

    def _run_lines(self, detail: Mapping[str, Any], lang: str) -> list[Markup]:
        """What an automation run did, one line per action (`create Task #12`), then any
        other detail as it is (an error's message)."""
        lines = []
        for key, value in detail.items():
            if key != "actions" or not isinstance(value, list):
                shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
                lines.append(Markup("{0}: {1}").format(key, shown))
                continue
            for action in value:
                if not (isinstance(action, dict) and len(action) == 1):
                    continue
                kind, data = next(iter(action.items()))
                line = Markup("{0}").format(kind)
                data = data if isinstance(data, dict) else {}
                entity = data.get("entity")
                if isinstance(entity, str) and entity in self.setup.entities:
                    line += Markup(" {0}").format(self.label(entity, lang))
                    if isinstance(data.get("id"), int):
                        line += Markup(' <a href="{0}">#{1}</a>').format(
                            views.card_href(entity, data["id"]), data["id"])
                for many in ("ids", "users"):
                    if isinstance(data.get(many), list):
                        line += Markup(" ×{0}").format(len(data[many]))
                lines.append(line)
        return lines

    def form(self, base: dict[str, Any], entity: str, record_id: int | None
             ) -> tuple[str, dict[str, Any]]:
        lang = base["lang"]
        spec = self.spec(entity)
        rights = self.rights(entity)
        operation = "create" if record_id is None else "update"
        if not rights[operation]:
            raise Forbidden(f"your role may not {operation} a {entity}")
        record = None if record_id is None else self.kt.records.get(entity, record_id)
        schemas = self.kt.schemas[entity]
        schema = schemas.create if record is None else schemas.patch
        granted = self.kt.records.access.rights(entity)
        next_stage = dict(base["params"]).get("stage") if record is not None else None
        inputs = views.inputs(spec, schema, granted, lang, record, next_stage)
        shown = record
        if record is None:  # a new record linked from a card: /app/sale/new?client=7
            shown = views.prefill(spec, inputs, base["params"])
        wanted: dict[str, set[int]] = {}
        if shown is not None:
            wanted = views.refs_of(self.setup, entity, [shown], spec.links)
            if record is not None:
                wanted.setdefault(entity, set()).add(record["id"])
        titles = self.title_map(wanted)
        self._user_options(inputs)
        for item in inputs:
            if item.kind in ("link", "links", "poly") and shown is not None:
                for target, other in views.linked_refs(spec.links[item.name], item.value):
                    item.titles[f"{target}:{other}"] = titles.get((target, other)) or f"#{other}"
        return "form.html", {
            "entity": entity, "label": self.label(entity, lang),
            "plural": self.label(entity, lang, True), "record": record, "inputs": inputs,
            "title": titles.get((entity, record_id)) if record_id else None,
            "target_labels": {name: self.label(name, lang) for name in self.setup.entities},
        }

    def board(self, base: dict[str, Any], entity: str) -> tuple[str, dict[str, Any]]:
        lang = base["lang"]
        spec = self.spec(entity)
        if spec.pipeline is None:
            raise NotFound(f"{entity} has no pipeline, so no board")
        params = self.engine_params(entity, base["params"])
        error = None
        try:
            board = self.kt.reports.board(entity, [*params, ("limit", str(COLUMN_SIZE))]
                                          if not any(k == "limit" for k, _ in params) else params)
        except MalformedRequest as refused:
            error, board = refused, {"pipeline": "", "columns": []}
        stages = views.stage_labels(spec, lang)
        # from the cards already read: only the records their titles name are fetched (one
        # statement per link of the title for the whole board), not the cards again
        titles = self.record_titles(entity, [r for c in board["columns"] for r in c["items"]])
        columns = [{**column, "label": stages.get(column["stage"], column["stage"]),
                    "sums": self._sums(spec, column["sums"], lang),
                    "cards": [self._card(entity, r, titles) for r in column["items"]]}
                   for column in board["columns"]]
        return "board.html", {
            "entity": entity, "label": self.label(entity, lang, True),
            "columns": columns, "error": error, "pipeline": board["pipeline"],
            "pipelines": self.pipeline_tabs(spec, lang),
            **self.filter_panel(spec, base), "rights": self.rights(entity),
            "field_labels": self.field_labels(spec, lang),
            "more_query": views.query_string([(k, v) for k, v in params
                                              if k not in ("pipeline", "limit")]),
        }

    def filter_panel(self, spec: EntitySpec, base: Mapping[str, Any]) -> dict[str, Any]:
        """The filter form's inputs, what they hold (as typed: a day, not the moment it
        stands for) and the titles of the records its link filters name."""
        granted = self.kt.records.access.rights(spec.name)
        filters = views.filters(spec, granted, base["lang"], base["w"])
        chosen = {k: v for k, v in base["params"] if v.strip()}
        named = {f.keys[0]: (f.target, int(chosen[f.keys[0]])) for f in filters
                 if f.kind == "link" and chosen.get(f.keys[0], "").isascii()
                 and chosen.get(f.keys[0], "").isdigit() and len(chosen[f.keys[0]]) < 19}
        wanted: dict[str, set[int]] = {}
        for target, record_id in named.values():
            wanted.setdefault(target, set()).add(record_id)
        titles = self.title_map(wanted)
        return {"filters": filters, "chosen": chosen,
                "filter_titles": {key: titles.get(ref, "") for key, ref in named.items()}}

    def pipeline_tabs(self, spec: EntitySpec, lang: str) -> list[tuple[str, str]]:
        """(pipeline, its label) when there are several: the label of the value of the
        field that picks them (`pipeline_by`), else the pipeline's name."""
        assert spec.pipeline is not None
        if len(spec.pipeline.pipelines) < 2:
            return []
        chooser = spec.fields.get(spec.pipeline.pipeline_by or "")
        return [(name, views.option_label(chooser, name, lang) if chooser else name)
                for name in spec.pipeline.pipelines]

    def field_labels(self, spec: EntitySpec, lang: str) -> dict[str, str]:
        """Labels by name, for the script to name the fields of a refusal."""
        return {name: views.field_label(spec, name, lang) for name in [*spec.fields, *spec.links]}

    def _card(self, entity: str, record: Mapping[str, Any],
              titles: Mapping[tuple[str, int], str]) -> dict[str, Any]:
        spec = self.spec(entity)
        money = [(n, record.get(n), spec.fields[n].params.get("places", 2))
                 for n, f in spec.fields.items() if f.type.summable and record.get(n) is not None]
        return {"id": record["id"], "version": record["version"],
                "title": titles.get((entity, record["id"])) or f"#{record['id']}",
                "href": views.card_href(entity, record["id"]), "money": money[:2]}

    def _sums(self, spec: EntitySpec, sums: Mapping[str, Any], lang: str
              ) -> list[tuple[str, Any, int]]:
        return [(views.field_label(spec, name, lang), value,
                 spec.fields[name].params.get("places", 2) if name in spec.fields else 2)
                for name, value in sums.items()]

    def more_cards(self, base: dict[str, Any], entity: str) -> tuple[str, dict[str, Any]]:
        """The next cards of one board column: the list call by stage, as the board's
        documentation says, with the column's cursor and the board's filters."""
        spec = self.spec(entity)
        params = self.engine_params(entity, base["params"])
        pipeline = dict(params).get("pipeline")
        params = [(k, v) for k, v in params if k != "pipeline"]
        if pipeline and spec.pipeline and spec.pipeline.pipeline_by:
            params.append((f"{spec.pipeline.pipeline_by}[eq]", pipeline))
        if not any(k == "limit" for k, _ in params):
            params.append(("limit", str(COLUMN_SIZE)))
        params.append(("total", "false"))
        page = self.kt.records.list_page(entity, params)
        titles = self.record_titles(entity, page.items)  # the cards are not read again
        return "cards.html", {"cards": [self._card(entity, r, titles) for r in page.items],
                              "next": page.next}

    def funnel(self, base: dict[str, Any], entity: str) -> tuple[str, dict[str, Any]]:
        lang = base["lang"]
        spec = self.spec(entity)
        if spec.pipeline is None:
            raise NotFound(f"{entity} has no pipeline, so no funnel")
        params = self.engine_params(entity, base["params"])
        error = None
        try:
            funnel = self.kt.reports.funnel(entity, params)
        except MalformedRequest as refused:
            error, funnel = refused, {"pipeline": "", "records": 0, "stages": []}
        stages = views.stage_labels(spec, lang)
        top = max([s["reached"] or 0 for s in funnel["stages"]] + [1])
        rows = [{**stage, "label": stages.get(stage["stage"], stage["stage"]),
                 "width": round(100 * (stage["reached"] or 0) / top, 1),
                 "sums": self._sums(spec, stage["current"]["sums"], lang),
                 "forecast": self._sums(spec, stage["forecast"] or {}, lang)}
                for stage in funnel["stages"]]
        return "funnel.html", {
            "entity": entity, "label": self.label(entity, lang, True),
            "rows": rows, "records": funnel["records"], "error": error,
            "pipeline": funnel["pipeline"],
            "pipelines": self.pipeline_tabs(spec, lang),
            **self.filter_panel(spec, base), "rights": self.rights(entity),
        }


def _changed_users(spec: EntitySpec, items: Sequence[Mapping[str, Any]]) -> list[int]:
    """The user ids in the changes a timeline shows of fields naming users."""
    out: list[int] = []

    def walk(value: Any) -> None:
        if isinstance(value, list):
            for part in value:
                walk(part)
        elif isinstance(value, int) and not isinstance(value, bool):
            out.append(value)
    for item in items:
        for name, change in (item.get("changes") or {}).items():
            fspec = spec.fields.get(name)
            if fspec is not None and fspec.type.refers_to_users:
                walk(change)
    return out


def json_lookup(items: list[dict[str, Any]], status: int = 200) -> Response:
    return JSONResponse({"items": items}, status, headers={"Cache-Control": "no-store"})


__all__ = ["STATIC", "WebApp", "json_lookup"]
