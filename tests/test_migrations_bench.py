"""bench/migrate.py does not rot: it seeds a small SQLite table, plans and applies "add a
field and an index", and the database is in step afterwards. No timing."""

from __future__ import annotations

from pathlib import Path

from bench.migrate import measure


def test_bench_migrate_adds_a_field_and_an_index(tmp_path: Path) -> None:
    result = measure(f"sqlite:///{tmp_path / 'bench.db'}", 300, tmp_path)
    assert result["plan"] == ["add field sale.discount (decimal, 300 existing rows left empty)",
                              "add index ix_sale_discount on sale (discount)"]
    assert result["applied_steps"] == 2
