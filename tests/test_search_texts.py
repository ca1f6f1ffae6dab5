"""A batch's search texts folded in one call (engine/storage/tables.py `search_texts`) are
each row's `search_text`: across the NUL between them no Unicode form changes."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from engine.storage.tables import search_text, search_texts

TEXTS = ["\u0301ударение в начале", "конец с ударением\u0301", "ᄀ", "ᅡ", "Ёлка", "كيك",
         "ＡＢＣ ﬁ Straße", "ǅ", "", None, "\u200cنیم\u200cفاصله", "a\x00b", "行\n多", 12, "ɸ"]


def test_the_batch_fold_is_each_rows_fold() -> None:
    spec: Any = SimpleNamespace(search=["name", "code"])
    rows = [{"name": a, "code": b} for a in TEXTS for b in TEXTS[::-1]]
    assert search_texts(spec, rows) == [search_text(spec, row) for row in rows]
    clean = [row for row in rows if "\x00" not in str(row["name"]) + str(row["code"])]
    assert search_texts(spec, clean) == [search_text(spec, row) for row in clean]
    assert search_texts(spec, []) == [] and search_texts(spec, [{}]) == [None]
    texts = [row for row in rows if 12 not in (row["name"], row["code"])]  # text or None only
    assert search_texts(spec, texts) == [search_text(spec, row) for row in texts]
    assert search_texts(spec, [{"name": "a"}, {"code": ""}]) == ["a", None]
