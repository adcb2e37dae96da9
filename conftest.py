"""The suite's command-line options, here at the root where pytest reads them before it
collects (a conftest further down is read too late for an option given without a path)."""

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--storage",
        default="default",
        help="the storage kinds the warehouse tests run on, comma-separated; default: every "
        "kind, but tests marked storage_neutral only on one kind per code path; all: every "
        "test on every kind (STORAGE_KINDS and CODE_PATH_KINDS in "
        "metrics_pipeline_tests/conftest.py)",
    )
