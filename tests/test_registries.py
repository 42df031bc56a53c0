"""Every list a registry implies is derived from it or held to it here: the export's
writers, the benchmark's precisions, the CLI's help, the preflight's sets, the fuzzed tasks."""
from __future__ import annotations

from xlmr_serverless.runtime import precisions, tasks


def test_every_precision_has_one_writer():
    from xlmr_serverless.export.writers import UNFUSED, WRITERS, writer_for

    assert set(WRITERS) == set(precisions.REGISTRY) and UNFUSED <= set(WRITERS)
    for p in precisions.REGISTRY.values():
        assert writer_for(p).__name__ == f"write_{p.name}"


def test_derived_lists_name_only_registered_precisions(capsys):
    import pytest

    from benchmarks.harness import BENCHMARKED
    from xlmr_serverless.cli import build_parser
    from xlmr_serverless.export.preflight import TABLE_BITS_PRECISIONS

    assert set(BENCHMARKED) <= set(precisions.REGISTRY)
    assert TABLE_BITS_PRECISIONS <= set(precisions.REGISTRY)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["export", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"--precision PRECISION {', '.join(precisions.NAMES)} (default int8)" in help_text


def test_the_fuzz_and_hostile_tests_cover_every_task():
    from tests.test_fuzz import TASKS

    assert set(TASKS) == set(tasks.names())


def test_the_docs_name_every_task_and_precision():
    """The docs' lists are held to the registries: docs/runtime.md names every task's
    parameters, docs/export.md every precision."""
    from tests.conftest import ROOT

    runtime_doc = (ROOT / "docs" / "runtime.md").read_text()
    export_doc = (ROOT / "docs" / "export.md").read_text()
    assert [t for t in tasks.names() if t not in runtime_doc] == []
    assert [p for p in precisions.NAMES if f"`{p}`" not in export_doc] == []


def test_every_route_a_task_names_is_in_the_route_table():
    """A spec's routes and its natural route (SageMaker's /invocations) are POST routes of the
    table, and each task serves its natural route."""
    from xlmr_serverless.aws_lambda.routes import ROUTES

    posts = {r.path for r in ROUTES if r.method == "POST"}
    for spec in tasks.specs().values():
        assert set(spec.routes) <= posts and spec.natural_route in spec.routes, spec.name
