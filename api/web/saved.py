"""Saved views on a list page: the caller's views of the entity as tabs above the list,
the form that saves the list's current query as a view, and the one that renames,
updates, makes default or deletes the view that is open. The page's script sends those
changes to `/api/views` like any client (CSRF as for every change); nothing is written here.

The page says which view is open with `?view=<id>` beside the view's own query; a list
opened with no query at all shows the caller's default view, and `?view=all` the whole
list. A view whose query the list now refuses (the setup changed) is marked on its tab,
and when opened shows the list's refusal above an empty list, never an error page.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from engine.core import Kartoteka
from engine.records.saved_views import POSITION, query_pairs

#: the query parameter naming the open view; `all` names none (not even the default)
PARAM = "view"
ALL = "all"

_EN = {
    "views": "Views", "all": "All", "save_view": "Save this list as a view",
    "name": "Name", "default": "Open by default", "save_new": "Save as a new view",
    "update_view": "Save changes to this view", "changed": "changed",
    "confirm_delete": "Delete this view?", "broken": "This view no longer fits the setup:",
    "delete": "Delete view",
}
_RU = {
    "views": "Виды", "all": "Все", "save_view": "Сохранить этот список как вид",
    "name": "Название", "default": "Открывать по умолчанию", "save_new": "Сохранить как новый вид",
    "update_view": "Сохранить изменения вида", "changed": "изменён",
    "confirm_delete": "Удалить этот вид?", "broken": "Этот вид больше не подходит к настройке:",
    "delete": "Удалить вид",
}
_FA = {
    "views": "نماها", "all": "همه", "save_view": "ذخیرهٔ این فهرست به‌عنوان نما",
    "name": "نام", "default": "باز شدن به‌طور پیش‌فرض", "save_new": "ذخیره به‌عنوان نمای جدید",
    "update_view": "ذخیرهٔ تغییرات این نما", "changed": "تغییر کرده",
    "confirm_delete": "این نما حذف شود؟", "broken": "این نما دیگر با پیکربندی سازگار نیست:",
    "delete": "حذف نما",
}
_ZH = {
    "views": "视图", "all": "全部", "save_view": "将此列表保存为视图", "name": "名称",
    "default": "默认打开", "save_new": "另存为新视图", "update_view": "保存对此视图的更改",
    "changed": "已更改", "confirm_delete": "删除此视图？", "broken": "此视图已不适用于当前配置：",
    "delete": "删除视图",
}
WORDS: Mapping[str, Mapping[str, str]] = {"en": _EN, "ru": _RU, "fa": _FA, "zh": _ZH}


def words(language: str) -> dict[str, str]:
    """The saved views' words in `language` (its primary subtag), English where it has none."""
    return {**_EN, **WORDS.get(language.split("-")[0].lower(), {})}


def with_default(kt: Kartoteka, entity: str, params: Sequence[tuple[str, str]]
                 ) -> list[tuple[str, str]]:
    """The page's query; a list opened with none at all is the caller's default view."""
    if params:
        return list(params)
    default = kt.views.default(entity)
    if default is None:
        return []
    return [*query_pairs(default["query"]), (PARAM, str(default["id"]))]


def list_query(params: Sequence[tuple[str, str]]) -> str:
    """What a view of this page keeps: its query without the page's position and the
    open view's name."""
    return urlencode([(k, v) for k, v in params
                      if k not in POSITION and k != PARAM and v.strip()], safe="[],:")


def bar(kt: Kartoteka, entity: str, params: Sequence[tuple[str, str]], language: str
        ) -> dict[str, Any]:
    """The tabs and forms of the caller's views, for list.html's views_bar.html."""
    chosen = dict(params).get(PARAM, "")
    base = f"/app/{entity}"
    current = list_query(params)
    items = []
    active = None
    for view in kt.views.for_entity(entity):
        item = {**view, "href": f"{base}?{_joined(view['query'], view['id'])}",
                "active": str(view["id"]) == chosen}
        if item["active"]:
            active = item
        items.append(item)
    return {"items": items, "active": active, "all": f"{base}?{PARAM}={ALL}",
            "query": current, "changed": active is not None and active["query"] != current,
            "words": words(language)}


def _joined(query: str, view_id: int) -> str:
    return (query + "&" if query else "") + f"{PARAM}={view_id}"
