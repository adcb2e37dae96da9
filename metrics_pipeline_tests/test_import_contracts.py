"""The import contracts `lint-imports` checks in CI (`[tool.importlinter]` in pyproject.toml)
break on the imports they forbid: they are run here on a planted package that has them."""

import tomllib
from pathlib import Path
from typing import Any

import pytest
from importlinter.cli import lint_imports

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"

PLANTED = {
    # settings and warehouse import each other: a cycle between a module and a subpackage.
    "settings.py": "from planted.warehouse import lake\n",
    "warehouse/resources.py": "from planted import settings\n",
    # Three collection modules in a ring: a cycle inside a subpackage.
    "collection/store.py": "from planted.collection import runs\n",
    "collection/runs.py": "from planted.collection import assets\n",
    "collection/assets.py": "from planted.collection import store\n",
    # The analysts' API reaching the collection through another domain.
    "analysts/query.py": "from planted.healing import progress\n",
    "healing/progress.py": "from planted.collection.store import *\n",
    # The storage depending on a domain.
    "warehouse/lake.py": "from planted.quality import checks\n",
    "quality/checks.py": "",
    # The dashboard reaching a writer.
    "dashboard/app.py": "from planted.warehouse import resources\n",
}


def contracts() -> list[dict[str, Any]]:
    return tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]["contracts"]


def named_modules() -> set[str]:
    """The modules the contracts name, as paths below the root package (warehouse/resources
    for metrics_pipeline.warehouse.resources)."""
    keys = ("ancestors", "source_modules", "forbidden_modules")
    return {
        module.partition(".")[2].replace(".", "/")
        for contract in contracts()
        for key in keys
        for module in contract.get(key, [])
        if "." in module
    }


def plant(root: Path, with_imports: bool) -> None:
    """The planted package: every module the contracts name (a folder for the project's
    folders), with the planted imports or without."""
    package = root / "planted"
    project = PYPROJECT.parent / "metrics_pipeline"
    files = {
        f"{name}/__init__.py" if (project / name).is_dir() else f"{name}.py"
        for name in named_modules()
    }
    for name in sorted(files | {"__init__.py"} | set(PLANTED)):
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if not (path.parent / "__init__.py").exists() and path.parent != package:
            (path.parent / "__init__.py").write_text("")
        path.write_text(PLANTED.get(name, "") if with_imports else "")


def planted_config(tmp_path: Path) -> Path:
    """The project's own contracts, about the planted package instead of metrics_pipeline."""
    text = PYPROJECT.read_text()
    start = text.index("[tool.importlinter]")
    end = text.index("\n[tool.", start + 1)
    config = tmp_path / "planted.toml"
    config.write_text(text[start:end].replace('"metrics_pipeline', '"planted'))
    return config


def test_the_contracts_break_on_cycles_and_on_imports_across_the_boundaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    plant(tmp_path, with_imports=True)
    monkeypatch.syspath_prepend(str(tmp_path))

    assert lint_imports(config_filename=str(planted_config(tmp_path)), no_cache=True) == 1

    out = capsys.readouterr().out
    assert f"Contracts: 0 kept, {len(contracts())} broken." in out
    assert ".warehouse -> .settings" in out or ".settings -> .warehouse" in out
    assert "planted.collection" in out.split("No cycles are allowed in planted.collection")[1]
    assert "planted.analysts is not allowed to import planted.collection" in out
    assert "planted.healing.progress -> planted.collection.store" in out
    assert "planted.warehouse is not allowed to import planted.quality" in out
    assert "planted.dashboard is not allowed to import planted.warehouse.resources" in out


def test_the_contracts_keep_an_acyclic_package_with_its_boundaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same package without the planted imports: the contracts pass, so the test above
    fails for the imports it planted, not for the configuration."""
    plant(tmp_path, with_imports=False)
    monkeypatch.syspath_prepend(str(tmp_path))

    assert lint_imports(config_filename=str(planted_config(tmp_path)), no_cache=True) == 0
    assert f"Contracts: {len(contracts())} kept, 0 broken." in capsys.readouterr().out


def test_the_contracts_name_modules_that_exist() -> None:
    """A module renamed without its contract would silently be checked no more."""
    package = PYPROJECT.parent / "metrics_pipeline"
    for name in named_modules():
        assert (package / name).is_dir() or (package / f"{name}.py").is_file(), name
