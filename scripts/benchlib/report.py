"""Medians, targets (PASS/MISS) and the printed table of `./scripts/bench`."""

from __future__ import annotations

import math

import statistics

from benchlib import capabilities
from benchlib.ops import OPERATIONS

CPU_TARGET = {"production": 0.85, "validate_responses": 0.65}
RPS_TARGET = CPU_TARGET
# The hub against what users would pick instead (issue 16): FastAPI CPU / hub CPU and hub/FastAPI
# req/s, on production settings. With the hub's response validation on, the ratio is shown, no target.
FASTAPI_TARGET = {"production": 1.1}
APPS = ("floor", "fastapi", "hub")
P99_MAX = 1.3
DEEP_PAGE_MAX = 1.5
COLD_START_MAX_S = 1.0
PEAK_RSS_MAX_MIB = 200.0


def summary(values: list[float]) -> dict:
    """Median, min and max of `values` (and the values)."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _fmt(s: dict, digits: int = 0) -> str:
    return f"{s['median']:,.{digits}f} [{s['min']:,.{digits}f}-{s['max']:,.{digits}f}]"


def _spread(s: dict) -> str:
    """Median and half the min-max range as a share of it: `12,345 ±3%` (narrower than `_fmt`)."""
    half = (s["max"] - s["min"]) / 2 / s["median"] * 100 if s["median"] else 0.0
    return f"{s['median']:,.0f} ±{half:.0f}%"


def _ratio(numerator: float, denominator: float) -> float:
    """`numerator / denominator`, or NaN (a MISS against every target) when the denominator is 0.

    A wrk run in which an app completed no request (a loaded machine, `--quick`'s one-second
    runs) has 0 req/s and a 0 ms p99.
    """
    return numerator / denominator if denominator else math.nan


def _target(name: str, value: float, config: str, targets: dict[str, float]) -> dict | None:
    """The target `value >= targets[config]`, or None when `config` has none."""
    if config not in targets:
        return None
    return {"name": name, "value": value, "target": f">= {targets[config]}", "pass": value >= targets[config]}


def build(results: dict) -> tuple[dict, list[dict]]:
    """Return (summarised figures, targets) from the raw results of every phase."""
    figures, targets = {"cpu_us": {}, "wrk": None}, []
    for config, per_op in results["cpu"].items():
        figures["cpu_us"][config] = {}
        for op in OPERATIONS:
            floor, fastapi, hub = (summary(per_op[op.key][app]) for app in APPS)
            ratio, fastapi_ratio = floor["median"] / hub["median"], fastapi["median"] / hub["median"]
            figures["cpu_us"][config][op.key] = {"floor": floor, "fastapi": fastapi, "hub": hub, "ratio": ratio,
                                                 "fastapi_ratio": fastapi_ratio}
            targets.append({"name": f"cpu {config} {op.key}: floor/hub CPU", "value": ratio,
                            "target": f">= {CPU_TARGET[config]}", "pass": ratio >= CPU_TARGET[config]})
            if t := _target(f"cpu {config} {op.key}: FastAPI/hub CPU", fastapi_ratio, config, FASTAPI_TARGET):
                targets.append(t)
    if results.get("wrk"):
        figures["wrk"] = {"floor_peak_rss_mib": results["wrk"]["floor_peak_rss_mib"],
                          "fastapi_peak_rss_mib": results["wrk"]["fastapi_peak_rss_mib"]}
        for config in CPU_TARGET:
            if config not in results["wrk"]:
                continue
            raw = results["wrk"][config]
            block = figures["wrk"][config] = {"hub_peak_rss_mib": raw["hub_peak_rss_mib"], "ops": {}}
            for op in OPERATIONS:
                entry = {}
                for app in APPS:
                    runs = raw["ops"][op.key][app]
                    entry[app] = {m: summary([r[m] for r in runs]) for m in ("rps", "p50_ms", "p99_ms", "server_cpu_us")}
                    entry[app]["errors"] = sum(r["errors"] for r in runs)
                entry["rps_ratio"] = _ratio(entry["hub"]["rps"]["median"], entry["floor"]["rps"]["median"])
                entry["p99_ratio"] = _ratio(entry["hub"]["p99_ms"]["median"], entry["floor"]["p99_ms"]["median"])
                entry["fastapi_rps_ratio"] = _ratio(entry["hub"]["rps"]["median"], entry["fastapi"]["rps"]["median"])
                block["ops"][op.key] = entry
                targets.append({"name": f"wrk {config} {op.key}: hub/floor req/s", "value": entry["rps_ratio"],
                                "target": f">= {RPS_TARGET[config]}", "pass": entry["rps_ratio"] >= RPS_TARGET[config]})
                if t := _target(f"wrk {config} {op.key}: hub/FastAPI req/s", entry["fastapi_rps_ratio"], config,
                                FASTAPI_TARGET):
                    targets.append(t)
                if config == "production":
                    targets.append({"name": f"wrk {config} {op.key}: hub/floor p99", "value": entry["p99_ratio"],
                                    "target": f"<= {P99_MAX}", "pass": entry["p99_ratio"] <= P99_MAX})
        rss = figures["wrk"]["production"]["hub_peak_rss_mib"] if "production" in figures["wrk"] else None
        if rss is not None:
            targets.append({"name": "peak RSS of the hub worker (MiB)", "value": rss, "target": f"<= {PEAK_RSS_MAX_MIB:g}",
                            "pass": rss <= PEAK_RSS_MAX_MIB})
    growth = results["growth"]
    figures["growth"] = growth
    audit_first, audit_deep = growth["audit"]["first"][-1]["median_ms"], growth["audit"]["deep"][-1]["median_ms"]
    targets.append({"name": f"audit deep/first page at {growth['sizes'][-1]['audit_rows']:,} rows",
                    "value": audit_deep / audit_first, "target": f"<= {DEEP_PAGE_MAX}",
                    "pass": audit_deep / audit_first <= DEEP_PAGE_MAX})
    catalog_first = growth["catalog"]["first"][-1]["median_ms"]
    catalog_cursor = growth["catalog"]["deep_cursor"][-1]["median_ms"]
    targets.append({"name": f"catalog deep/first page (cursor) at {growth['sizes'][-1]['catalog_rows']:,} rows",
                    "value": catalog_cursor / catalog_first, "target": f"<= {DEEP_PAGE_MAX}",
                    "pass": catalog_cursor / catalog_first <= DEEP_PAGE_MAX})
    cold = results["cold_start"]["hub"]["ready_s"]["median"]
    figures["cold_start"] = results["cold_start"]
    targets.append({"name": "hub cold start: import + build + start-up (s)", "value": cold,
                    "target": f"<= {COLD_START_MAX_S}", "pass": cold <= COLD_START_MAX_S})
    if results.get("capabilities"):
        figures["capabilities"] = results["capabilities"]
        targets += capabilities.targets(results["capabilities"])
    return figures, targets


def table(figures: dict, targets: list[dict], meta: dict) -> str:
    """Return the printable report."""
    verdict = {t["name"]: t for t in targets}
    lines = [(f"Integration Hub benchmark ({meta['mode']}; {meta['rounds']} rounds, medians [min-max]; "
              f"load avg at start {meta['loadavg_start']}, at end {meta['loadavg_end']})"), ""]
    for config, per_op in figures["cpu_us"].items():
        fastapi_rule = (f", FastAPI/hub >= {FASTAPI_TARGET[config]}" if config in FASTAPI_TARGET
                        else ", FastAPI/hub: no target")
        lines.append(f"CPU µs/request in-process, hub {config} (target floor/hub >= {CPU_TARGET[config]}{fastapi_rule})")
        lines.append(f"  {'operation':<30} {'floor':>24} {'FastAPI':>24} {'hub':>24} {'floor/hub':>14} {'FastAPI/hub':>16}")
        for op in OPERATIONS:
            e = per_op[op.key]
            t = verdict[f"cpu {config} {op.key}: floor/hub CPU"]
            f = verdict.get(f"cpu {config} {op.key}: FastAPI/hub CPU")
            lines.append(f"  {op.label:<30} {_fmt(e['floor']):>24} {_fmt(e['fastapi']):>24} {_fmt(e['hub']):>24} "
                         f"{e['ratio']:>9.2f} {_verdict(t['pass'])} {e['fastapi_ratio']:>11.2f} "
                         f"{_verdict(f['pass']) if f else ''}")
        lines.append("")
    if figures.get("wrk"):
        for config in CPU_TARGET:
            if config not in figures["wrk"]:
                continue
            block = figures["wrk"][config]
            p99_rule = f"; p99 hub/floor <= {P99_MAX}" if config == "production" else ""
            fastapi_rule = (f"; hub/FastAPI >= {FASTAPI_TARGET[config]}" if config in FASTAPI_TARGET
                            else "; hub/FastAPI: no target")
            lines.append(f"wrk -c32, hub {config} (req/s median ±half-range; target hub/floor >= {RPS_TARGET[config]}"
                         f"{fastapi_rule}{p99_rule})")
            lines.append(f"  {'operation':<30} {'floor req/s':>14} {'FastAPI req/s':>14} {'hub req/s':>14} "
                         f"{'hub/floor':>11} {'hub/FastAPI':>13}   {'p50/p99 ms floor | FastAPI | hub':<39} "
                         f"{'p99 h/f':>12}  server CPU µs/req floor/FastAPI/hub")
            for op in OPERATIONS:
                e = block["ops"][op.key]
                rps_ok = verdict[f"wrk {config} {op.key}: hub/floor req/s"]["pass"]
                fastapi_ok = verdict.get(f"wrk {config} {op.key}: hub/FastAPI req/s")
                p99 = verdict.get(f"wrk {config} {op.key}: hub/floor p99")
                errors = sum(e[app]["errors"] for app in APPS)
                latency = " | ".join(f"{e[app]['p50_ms']['median']:.1f}/{e[app]['p99_ms']['median']:.1f}" for app in APPS)
                cpu = "/".join(f"{e[app]['server_cpu_us']['median']:,.0f}" for app in APPS)
                lines.append(
                    f"  {op.label:<30} {_spread(e['floor']['rps']):>14} {_spread(e['fastapi']['rps']):>14} "
                    f"{_spread(e['hub']['rps']):>14} {e['rps_ratio']:>6.2f} {_verdict(rps_ok)} "
                    f"{e['fastapi_rps_ratio']:>8.2f} {_verdict(fastapi_ok['pass']) if fastapi_ok else '    '}   "
                    f"{latency:<39} {e['p99_ratio']:>7.2f} {_verdict(p99['pass']) if p99 else '    '}  {cpu}"
                    + (f"  ({errors} non-2xx)" if errors else ""))
            lines.append(f"  peak RSS (VmHWM) hub worker: {block['hub_peak_rss_mib']:.0f} MiB")
            lines.append("")
        lines.append(f"  peak RSS (VmHWM) floor worker: {figures['wrk']['floor_peak_rss_mib']:.0f} MiB, "
                     f"FastAPI worker: {figures['wrk']['fastapi_peak_rss_mib']:.0f} MiB")
        lines.append("")
    else:
        lines += ["wrk: not installed, throughput runs skipped (apt-get install -y wrk)", ""]
    growth = figures["growth"]
    lines.append("Cost growth, hub in-process latency (ms, median): first page vs deep page")
    lines.append(f"  {'rows':>10} {'catalog first':>14} {'deep offset':>12} {'ratio':>7} {'deep cursor':>12} {'ratio':>7}   "
                 f"{'audit first':>12} {'audit deep':>11} {'ratio':>7}")
    for i, size in enumerate(growth["sizes"]):
        cf, cd = growth["catalog"]["first"][i]["median_ms"], growth["catalog"]["deep"][i]["median_ms"]
        cc = growth["catalog"]["deep_cursor"][i]["median_ms"]
        af, ad = growth["audit"]["first"][i]["median_ms"], growth["audit"]["deep"][i]["median_ms"]
        lines.append(f"  {size['audit_rows']:>10,} {cf:>14.1f} {cd:>12.1f} {cd / cf:>7.2f} {cc:>12.1f} {cc / cf:>7.2f}   "
                     f"{af:>12.1f} {ad:>11.1f} {ad / af:>7.2f}")
    lines.append("  (catalog: deep page by offset, no target, and by cursor; cursor pages (catalog, audit): "
                 f"deep/first at the largest size <= {DEEP_PAGE_MAX})")
    lines.append("")
    for app in ("hub", "floor", "fastapi"):
        c = figures["cold_start"][app]
        lines.append(f"Cold start {app:<7}: ready {c['ready_s']['median']:.2f} s (import {c['import_s']['median']:.2f} + "
                     f"build {c['build_s']['median']:.2f} + start-up {c['startup_s']['median']:.2f}); first request "
                     f"{c['first_request_s']['median'] * 1e3:.0f} ms; whole process {c['process_s']['median']:.2f} s")
    if figures.get("capabilities"):
        lines += ["", *capabilities.table(figures["capabilities"])]
    lines += ["", "Targets:"]
    for t in targets:
        lines.append(f"  {_verdict(t['pass'])}  {t['name']}: {t['value']:.2f} (target {t['target']})")
    passed = sum(t["pass"] for t in targets)
    lines.append(f"  {passed}/{len(targets)} targets met")
    return "\n".join(lines)
