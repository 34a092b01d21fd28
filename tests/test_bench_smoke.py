"""Smoke test of the benchmark: `./scripts/bench --quick` runs every phase and writes its report.

The quick run measures three apps (the bare-Starlette floor, the idiomatic FastAPI app of
scripts/bench_fastapi.py, the hub) and first checks that the FastAPI app answers the benchmarked
requests as the floor does (status and body); the report must carry all three.

Nothing about speed is asserted: a quick run's figures mean nothing. It runs on its own SQLite
database and free ports, so it does not depend on the suite's `--db`; it is skipped on the
PostgreSQL run so the suite does not pay for it twice.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OPERATIONS = {"catalog", "me", "create", "me_limited"}
CAPABILITY_TARGETS = ("webhooks:", "realtime:", "sync:", "search:")


def test_quick_bench_writes_its_report(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if request.config.getoption("--db", default="sqlite") == "postgresql":
        pytest.skip("the benchmark runs on its own SQLite database; covered by the SQLite run")
    out = tmp_path / "bench.json"

    done = subprocess.run([str(ROOT / "scripts" / "bench"), "--quick", "--out", str(out), "--workdir",
                           str(tmp_path / "work")], cwd=ROOT, capture_output=True, text=True, timeout=900,
                          check=False)

    assert done.returncode == 0, done.stderr[-4000:]
    assert "Targets:" in done.stdout
    report = json.loads(out.read_text())
    assert {"meta", "parity", "cpu_us", "wrk", "growth", "cold_start", "capabilities", "targets"} <= report.keys()
    assert report["meta"]["mode"] == "quick"
    assert set(report["cpu_us"]) == {"production", "validate_responses"}
    for per_op in report["cpu_us"].values():
        assert set(per_op) == OPERATIONS
        for entry in per_op.values():
            assert entry["floor"]["median"] > 0 and entry["fastapi"]["median"] > 0 and entry["hub"]["median"] > 0
            assert entry["fastapi_ratio"] == entry["fastapi"]["median"] / entry["hub"]["median"]
    if report["wrk"] is not None:
        assert set(report["wrk"]["production"]["ops"]) == OPERATIONS
        for entry in report["wrk"]["production"]["ops"].values():
            assert all(entry[app]["rps"]["median"] > 0 for app in ("floor", "fastapi", "hub"))
            assert entry["fastapi_rps_ratio"] == entry["hub"]["rps"]["median"] / entry["fastapi"]["rps"]["median"]
        assert report["wrk"]["production"]["hub_peak_rss_mib"] > 0
        assert report["wrk"]["fastapi_peak_rss_mib"] > 0 and report["wrk"]["floor_peak_rss_mib"] > 0
    assert len(report["growth"]["sizes"]) == len(report["growth"]["audit"]["deep"]) == 2
    assert {"hub", "floor", "fastapi"} <= report["cold_start"].keys()
    assert all({"name", "value", "target", "pass"} <= target.keys() for target in report["targets"])
    names = {target["name"] for target in report["targets"]}
    assert {f"cpu production {op}: FastAPI/hub CPU" for op in OPERATIONS} <= names
    if report["wrk"] is not None:
        assert {f"wrk production {op}: hub/FastAPI req/s" for op in OPERATIONS} <= names
    # The FastAPI app answered every benchmarked operation and the refused requests as the floor did.
    assert {case["case"]: case["status"] for case in report["parity"]} == {
        "catalog": 200, "me": 200, "create": 201, "me_limited": 200, "catalog: unknown parameter": 400,
        "catalog: limit out of bounds": 400, "catalog: sortBy not in the enum": 400, "create: unknown field": 400,
        "create: name too long": 400, "create: not JSON": 400, "me: no token": 401}
    capabilities = report["capabilities"]
    assert report["meta"]["capabilities"]["realtime_sockets"] == capabilities["realtime"]["sockets"] == 20
    assert capabilities["webhooks"]["deliveries"] == report["meta"]["capabilities"]["webhook_events"]
    assert capabilities["sync"]["records"] == 3 * report["meta"]["capabilities"]["sync_accounts"]
    assert capabilities["search"]["records"] == report["meta"]["capabilities"]["search_records"]
    assert capabilities["search"]["matches"] == 20  # the selective word's records were found
    figures = [capabilities["webhooks"]["deliveries_per_s"], capabilities["webhooks"]["latency_ms"]["p50"],
               capabilities["webhooks"]["latency_ms"]["p99"], capabilities["realtime"]["p50_ms"],
               capabilities["realtime"]["p99_ms"], capabilities["sync"]["records_per_s"],
               capabilities["search"]["p95_ms"]]
    assert all(figure > 0 for figure in figures), figures
    names = [t["name"] for t in report["targets"] if t["name"].startswith(CAPABILITY_TARGETS)]
    assert len(names) == 8, names  # deliveries/s, p50, p99; socket p50, p99, memory; records/s; search p95
    assert "New capabilities" in done.stdout


def test_quick_bench_without_capabilities(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """`--no-capabilities` skips the phase: no block in the report, no capability targets."""
    if request.config.getoption("--db", default="sqlite") == "postgresql":
        pytest.skip("the benchmark runs on its own SQLite database; covered by the SQLite run")
    out = tmp_path / "bench.json"

    done = subprocess.run([str(ROOT / "scripts" / "bench"), "--quick", "--no-wrk", "--no-capabilities", "--out",
                           str(out), "--workdir", str(tmp_path / "work")], cwd=ROOT, capture_output=True, text=True,
                          timeout=900, check=False)

    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(out.read_text())
    assert "capabilities" not in report and report["meta"]["capabilities"] is None
    assert "New capabilities" not in done.stdout
    assert not [t for t in report["targets"] if t["name"].startswith(CAPABILITY_TARGETS)]


def test_quick_sync_bench_writes_its_report(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """`./scripts/bench --only sync --quick`: every phase runs against a real sandbox process and a served hub."""
    if request.config.getoption("--db", default="sqlite") == "postgresql":
        pytest.skip("the benchmark runs on its own SQLite database; covered by the SQLite run")
    out = tmp_path / "bench-sync.json"

    done = subprocess.run([str(ROOT / "scripts" / "bench"), "--only", "sync", "--quick", "--out", str(out),
                           "--workdir", str(tmp_path / "work")], cwd=ROOT, capture_output=True, text=True,
                          timeout=900, check=False)

    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["full"]["added"] == report["sandbox_records"] and report["full"]["outcomes"] == ["succeeded"] * 2
    assert report["incremental"]["kinds"] == ["incremental"] and report["incremental"]["updated"] >= 1
    assert set(report["targets"]) == {"records_per_s", "incremental_share_pct", "deep_page_ratio", "webhook_p50_ms",
                                     "index_cost_pct"}
    assert report["first_page_ms_p50"] > 0 and report["deep_page_ms_p50"] > 0 and report["webhook_p50_ms"] >= 0
