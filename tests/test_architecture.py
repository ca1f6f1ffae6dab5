"""The engine's layers are contracts, not intentions: import-linter (pyproject.toml,
[tool.importlinter]) fails the build when a module imports upwards — setup → records,
storage → access... — or when the engine imports the HTTP layer or the command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_layers_import_only_downwards_and_the_engine_never_imports_api() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def test_every_engine_package_is_in_a_layer() -> None:
    """A new package under engine/ must be placed in the layers contract, or it could
    import anything."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    packages = sorted(p.name for p in (ROOT / "engine").iterdir()
                      if p.is_dir() and (p / "__init__.py").exists())
    missing = [name for name in packages if f'"engine.{name}"' not in text]
    assert not missing, f"add to [tool.importlinter] layers: {missing}"
