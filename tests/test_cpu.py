"""The ISA a bundle is tuned on: named from the CPU's flags, recorded by export, and a runtime
on another ISA says so in its log."""
from __future__ import annotations

import logging
import shutil

import pytest

from tests.conftest import needs_bundles, rewrite_manifest

pytestmark = pytest.mark.serving


@pytest.mark.parametrize("flags,level", [
    ({"sse4_2", "avx2", "fma"}, "avx2"),
    ({"avx2", "avx512f", "avx512bw"}, "avx512"),
    ({"avx2", "avx512f", "avx512_vnni"}, "avx512_vnni"),
    ({"avx2", "avx_vnni"}, "avx_vnni"),
    ({"avx512_vnni", "amx_tile", "amx_int8"}, "amx"),
    ({"fp", "asimd", "asimddp"}, "arm_dotprod"),
    ({"fp", "asimd"}, "arm_neon"),
])
def test_isa_names_the_best_int8_level(flags, level):
    from xlmr_serverless.runtime.cpu import isa

    assert isa(frozenset(flags)) == level


def test_this_machine_has_a_level():
    from xlmr_serverless.runtime.cpu import LEVELS, isa

    assert isa() in {name for _, name in LEVELS} or isa() == isa(frozenset())


@needs_bundles
def test_a_bundle_tuned_on_another_isa_is_logged(bundle_factory, tmp_path, caplog):
    import json

    from xlmr_serverless.runtime import load
    from xlmr_serverless.runtime.cpu import isa

    folder = tmp_path / "b"
    shutil.copytree(bundle_factory("feature-extraction"), folder)
    data = json.loads((folder / "manifest.json").read_text())
    assert data["tuned_on"]["isa"] == isa()  # export records the machine it judged on
    with caplog.at_level(logging.WARNING, logger="xlmr.runtime"):
        load(folder)
    assert not [r for r in caplog.records if "tuned and judged on" in r.getMessage()]
    rewrite_manifest(folder, {**data, "tuned_on": {"isa": "amx", "cpu": "elsewhere"}})
    with caplog.at_level(logging.WARNING, logger="xlmr.runtime"):
        load(folder)
    said = [r.getMessage() for r in caplog.records if "tuned and judged on amx" in r.getMessage()]
    assert said and f"this CPU is {isa()}" in said[0]
