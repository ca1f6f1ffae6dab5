"""bench/bulk.py runs: its clients are created one by one and in one bulk call — none of
them anyone's duplicate by the default setup's rules (the bench broke silently when the
default setup gained duplicate control: every client shared one phone)."""

from __future__ import annotations

import sys

import pytest

from bench import bulk


def test_bulk_bench_runs_end_to_end(monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["bulk.py", "--rows", "30", "--synchronous", "NORMAL"])
    bulk.main()
    said = capsys.readouterr().out
    assert "30 single POSTs" in said and "bulk is" in said
