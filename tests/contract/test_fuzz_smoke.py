"""`./scripts/fuzz URL` works end to end: it logs in (HUB_FUZZ_EMAIL/HUB_FUZZ_PASSWORD), fuzzes
the live hub over loopback HTTP with every phase and check for a few seconds, and writes its
JUnit reports, with no failure."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

from tests import factories
from tests.contract.spec_tools import BUILD, run

REPORTS = {"api": BUILD / "fuzz-junit.xml", "root": BUILD / "fuzz-junit-root.xml"}


def failures(report) -> list[tuple[str, str]]:
    """(test case name, failure text) of every failed test case of a JUnit report."""
    found = []
    for case in ET.parse(report).getroot().iter("testcase"):
        for failure in list(case.iter("failure")) + list(case.iter("error")):
            found.append((case.get("name", ""), f"{failure.get('message', '')} {failure.text or ''}"))
    return found


def test_fuzz_script_against_a_live_hub(live_hub, client):
    admin = factories.register(client)
    for report in REPORTS.values():
        report.unlink(missing_ok=True)
    env = {**os.environ, "HUB_FUZZ_EMAIL": admin.email, "HUB_FUZZ_PASSWORD": admin.password}
    env.pop("HUB_FUZZ_TOKEN", None)
    result = run(["./scripts/fuzz", live_hub, "--max-time", "6", "--", "--seed", "1"], env=env, check=False, timeout=300)
    output = result.stdout + result.stderr
    assert f"Fuzzing {live_hub}/api/v1/openapi.json" in output and f"Fuzzing {live_hub}/openapi.json" in output, output
    for name, report in REPORTS.items():
        assert report.exists(), f"no JUnit report {report}\n{output[-3000:]}"
        assert sum(1 for _ in ET.parse(report).getroot().iter("testcase")) > 0, f"{name}: no test case run"
        found = [(case, text[:500]) for case, text in failures(report)]
        assert not found, f"{name}: fuzzing found failures:\n" + "\n".join(map(str, found))
    assert result.returncode == 0, output[-3000:]
