"""The import contracts `lint-imports` checks in CI (`[tool.importlinter]` in pyproject.toml)
break on the imports they forbid: they are run here on a planted package that has them."""

import tomllib
from pathlib import Path

import pytest
from importlinter.cli import lint_imports

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"

PLANTED = {
    "__init__.py": "",
    # settings and warehouse import each other: a cycle between a module and a subpackage.
    "settings.py": "from planted.warehouse import lake\n",
    "warehouse/__init__.py": "",
    "warehouse/lake.py": "",
    "warehouse/resources.py": "from planted import settings\n",
    # Three collection modules in a ring: a cycle inside a subpackage.
    "collection/__init__.py": "",
    "collection/store.py": "from planted.collection import runs\n",
    "collection/runs.py": "from planted.collection import assets\n",
    "collection/assets.py": "from planted.collection import store\n",
    # The analysts' API reaching the collection through another domain.
    "analysts/__init__.py": "",
    "analysts/query.py": "from planted.healing import progress\n",
    "healing/__init__.py": "",
    "healing/progress.py": "from planted.collection.store import *\n",
}


def planted_config(tmp_path: Path) -> Path:
    """The project's own contracts, about the planted package instead of metrics_pipeline."""
    text = PYPROJECT.read_text()
    start = text.index("[tool.importlinter]")
    end = text.index("\n[tool.", start + 1)
    contracts = text[start:end].replace('"metrics_pipeline', '"planted')
    config = tmp_path / "planted.toml"
    config.write_text(contracts)
    return config


def test_the_contracts_break_on_cycles_and_on_the_analysts_reaching_collection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, source in PLANTED.items():
        (tmp_path / "planted" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "planted" / name).write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))

    assert lint_imports(config_filename=str(planted_config(tmp_path)), no_cache=True) == 1

    out = capsys.readouterr().out
    assert "Contracts: 0 kept, 2 broken." in out
    assert ".warehouse -> .settings" in out or ".settings -> .warehouse" in out
    assert "planted.collection" in out.split("No cycles are allowed in planted.collection")[1]
    assert "planted.analysts is not allowed to import planted.collection" in out
    assert "planted.healing.progress -> planted.collection.store" in out


def test_the_contracts_keep_an_acyclic_package_with_its_boundaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same package without the planted imports: the contracts pass, so the test above
    fails for the imports it planted, not for the configuration."""
    for name, source in PLANTED.items():
        (tmp_path / "planted" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "planted" / name).write_text("" if source.startswith("from") else source)
    monkeypatch.syspath_prepend(str(tmp_path))

    assert lint_imports(config_filename=str(planted_config(tmp_path)), no_cache=True) == 0
    assert "Contracts: 2 kept, 0 broken." in capsys.readouterr().out


def test_the_contracts_name_every_top_level_module_and_the_analysts() -> None:
    """The cycle contract covers the whole package at every depth, and the boundary contract
    the folders it is about: renaming one without the contract would silently check nothing."""
    contracts = {
        c["id"]: c
        for c in tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]["contracts"]
    }
    assert contracts["acyclic"]["ancestors"] == ["metrics_pipeline"]
    assert "depth" not in contracts["acyclic"]  # import-linter's default: 10 levels
    package = PYPROJECT.parent / "metrics_pipeline"
    for module in (
        contracts["analysts-read-the-warehouse"]["source_modules"]
        + contracts["analysts-read-the-warehouse"]["forbidden_modules"]
    ):
        assert (package / module.split(".", 1)[1]).is_dir(), module
