"""The suite's command-line options, here at the root where pytest reads them before it
collects (a conftest further down is read too late for an option given without a path)."""

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--storage",
        default="all",
        help="the storage kinds the warehouse tests run on, comma-separated, or all (the "
        "default); the kinds are STORAGE_KINDS in metrics_pipeline_tests/conftest.py",
    )
