"""The docs match the code: the configuration reference is the settings model's, and every link
between the README and the docs pages leads somewhere."""

import importlib.util
import re
from pathlib import Path

import pytest

from metrics_pipeline_tests.helpers import PROJECT_ROOT

PAGES = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for the page's headings."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_every_setting_is_in_the_configuration_reference() -> None:
    code = "".join(p.read_text() for p in (PROJECT_ROOT / "metrics_pipeline").rglob("*.py"))
    read = set(re.findall(r'"(METRICS_[A-Z_]+)"', code))
    reference = (PROJECT_ROOT / "docs" / "operations.md").read_text()
    documented = set(re.findall(r"^\| `(METRICS_[A-Z_]+)` \|", reference, re.M))
    assert read == documented


def test_the_configuration_reference_is_generated_from_the_settings_model() -> None:
    spec = importlib.util.spec_from_file_location(
        "update_settings_reference", PROJECT_ROOT / "scripts" / "update_settings_reference.py"
    )
    assert spec and spec.loader
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    page = script.PAGE.read_text()
    assert script.with_reference(page) == page, (
        "docs/operations.md differs from the settings model: run "
        "python scripts/update_settings_reference.py"
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_lead_somewhere(page: Path) -> None:
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name}: {target} does not exist"
        if anchor:
            assert anchor in anchors(linked), f"{page.name}: no heading for {target}"
