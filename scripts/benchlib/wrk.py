"""Throughput and latency under `wrk -c32` (wrk pinned to core 1), parsed from its output."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

WRK_CORE = "1"
CONNECTIONS = 32
# POST bodies with a name unique per request (one wrk thread, so one counter).
CREATE_LUA = """
wrk.method = "POST"
local prefix, provider, counter = "bench", "", 0
function init(args)
  prefix = args[1]
  provider = args[2]
end
function request()
  counter = counter + 1
  return wrk.format(nil, nil, nil, '{"integrationId":"' .. provider .. '","name":"' .. prefix .. '-' .. counter .. '"}')
end
"""
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


@dataclass(frozen=True)
class WrkResult:
    """Requests/s, latency percentiles (ms), and how many answers were not 2xx/3xx."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int

    def as_dict(self) -> dict:
        return asdict(self)


def available() -> bool:
    """True when wrk and taskset are installed."""
    return shutil.which("wrk") is not None and shutil.which("taskset") is not None


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * _UNITS[unit]


def parse(output: str) -> WrkResult:
    """Parse `wrk --latency` output."""
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+(?:us|ms|s|m))\s*$", output, re.MULTILINE))
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return WrkResult(
        rps=float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        p50_ms=_ms(percentiles["50"]), p99_ms=_ms(percentiles["99"]),
        requests=int(re.search(r"(\d+) requests in", output).group(1)),
        errors=(int(errors.group(1)) if errors else 0) + (sum(map(int, socket_errors.groups())) if socket_errors else 0),
    )


def run(url: str, *, token: str, seconds: float, workdir: Path, create: tuple[str, str] | None = None) -> WrkResult:
    """Run wrk against `url`; `create` = (name prefix, provider id) sends unique POST bodies."""
    argv = ["taskset", "-c", WRK_CORE, "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{max(1, round(seconds))}s", "--latency",
            "--timeout", "60s",  # slow answers count in the latency figures, not as errors
            "-H", f"Authorization: Bearer {token}", "-H", "Content-Type: application/json"]
    if create is not None:
        script = workdir / "create.lua"
        script.write_text(CREATE_LUA)
        argv += ["-s", str(script), url, "--", *create]
    else:
        argv.append(url)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return parse(done.stdout)
