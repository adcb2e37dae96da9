"""The suite's own rules (conftest.py): a test that starts a process is marked `e2e`, a
warehouse test that leaves out a storage kind says why, and a storage-neutral one runs on one
kind per code path unless every kind is asked for."""

import subprocess
import sys

import pytest

from metrics_pipeline_tests.conftest import (
    STORAGE_KINDS,
    ProcessWatch,
    process_watch,
    selected_storage_kinds,
    storage_kinds_of,
    storage_kinds_to_run,
)


def test_an_unmarked_test_that_starts_a_process_is_named_and_a_marked_one_is_not(
    request: pytest.FixtureRequest,
) -> None:
    watch = ProcessWatch()
    sys.addaudithook(watch.audit)  # stays installed, but looks only while watching
    with process_watch.paused():  # the suite's own watch would fail this test
        watch.watching = True
        subprocess.run(["true"], check=True)
        watch.watching = False
        subprocess.run(["false"], check=False)  # not watched: not counted

        assert watch.verdict(request.node) == (
            f"{request.node.nodeid} started a process but is not marked e2e (mark it "
            "@pytest.mark.e2e): subprocess.Popen true"
        )

        request.node.add_marker(pytest.mark.e2e)
        watch.watching = True
        subprocess.run(["true"], check=True)
        watch.watching = False
    assert watch.verdict(request.node) is None


def test_a_storage_kinds_marker_without_a_reason_is_refused(
    request: pytest.FixtureRequest,
) -> None:
    assert storage_kinds_of(request.node, "t") == list(STORAGE_KINDS)
    request.node.add_marker(pytest.mark.storage_kinds("duckdb"))
    with pytest.raises(pytest.UsageError) as refused:
        storage_kinds_of(request.node, "t")
    assert str(refused.value) == (
        "t: @pytest.mark.storage_kinds needs reason='why the test cannot run on the other kinds'"
    )


def test_a_storage_kinds_marker_names_known_kinds(request: pytest.FixtureRequest) -> None:
    request.node.add_marker(pytest.mark.storage_kinds("tape", reason="old habits"))
    with pytest.raises(pytest.UsageError, match=r"unknown storage kind \['tape'\]"):
        storage_kinds_of(request.node, "t")


def test_a_storage_kinds_marker_with_a_reason_limits_the_kinds(
    request: pytest.FixtureRequest,
) -> None:
    request.node.add_marker(pytest.mark.storage_kinds("duckdb", reason="reads the file"))
    assert storage_kinds_of(request.node, "t") == ["duckdb"]


def test_a_storage_neutral_test_runs_on_one_kind_per_code_path_unless_all_are_asked(
    request: pytest.FixtureRequest,
) -> None:
    assert storage_kinds_to_run(request.node, "t", "default") == list(STORAGE_KINDS)
    request.node.add_marker(pytest.mark.storage_neutral)
    assert storage_kinds_to_run(request.node, "t", "default") == ["duckdb", "local_lake"]
    assert storage_kinds_to_run(request.node, "t", "all") == list(STORAGE_KINDS)
    assert storage_kinds_to_run(request.node, "t", "lake") == ["lake"]
    request.node.add_marker(pytest.mark.storage_kinds("duckdb", reason="reads the file"))
    assert storage_kinds_to_run(request.node, "t", "default") == ["duckdb"]


def test_an_unknown_storage_option_is_refused_naming_the_choices() -> None:
    with pytest.raises(pytest.UsageError) as refused:
        selected_storage_kinds("tape")
    assert str(refused.value) == (
        "--storage: unknown storage kind 'tape'; choose among duckdb, lake, local_lake, "
        "or default, or all"
    )
