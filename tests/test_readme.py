"""The README's walkthrough works when pasted in order (issue 11 item 13).

Every ```bash block of README.md preceded by the marker `<!-- readme-test: run -->` is run, in
order, in one `bash` with `set -euo pipefail`, against a hub served by `integration-hub serve`
(sandbox included) on free ports, with its own HUB_VAR_DIR and a known HUB_ADMIN_PASSWORD. Blocks
without the marker (serving, production, fuzzing, bundling) are illustrative and skipped; a
section added later with the marker is picked up without changing this test.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MARKER = "<!-- readme-test: run -->"
BLOCK = re.compile(re.escape(MARKER) + r"\s*\n```bash\n(.*?)\n```", re.DOTALL)
ADMIN_PASSWORD = "readme-walkthrough-password"
START_TIMEOUT = 90  # seconds for `serve` to migrate, bootstrap and answer /health
RUN_TIMEOUT = 300  # seconds for every marked block together


def marked_blocks(text: str) -> list[str]:
    """Return the bodies of the marked ```bash blocks of `text`, in order."""
    return BLOCK.findall(text)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_marker_selects_only_marked_bash_blocks():
    text = f"```bash\nskipped\n```\n{MARKER}\n```bash\nfirst\n```\n```json\n{{}}\n```\n{MARKER}\n\n```bash\nsecond\nthird\n```\n"

    assert marked_blocks(text) == ["first", "second\nthird"]


def test_the_readme_marks_its_walkthrough():
    blocks = marked_blocks(README.read_text(encoding="utf-8"))

    assert len(blocks) >= 5
    assert README.read_text(encoding="utf-8").count(MARKER) == len(blocks)  # no marker on anything but a bash block


@pytest.fixture
def served_hub(tmp_path, db_kind, pg_cluster):
    """`integration-hub serve` with the sandbox, on free ports; yields (environment, log file)."""
    port, sandbox_port = free_port(), free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HUB_", "DATABASE_URL", "JWT_"))}
    env.update({
        "HUB_HOST": "127.0.0.1", "HUB_PORT": str(port), "HUB_VAR_DIR": str(tmp_path / "var"),
        "HUB_ADMIN_PASSWORD": ADMIN_PASSWORD, "HUB_SANDBOX_PORT": str(sandbox_port),
        "HUB_SANDBOX_URL": f"http://127.0.0.1:{sandbox_port}", "PYTHONUNBUFFERED": "1",
    })
    if pg_cluster is not None:
        env["DATABASE_URL"] = pg_cluster.create_database(f"readme_{port}")
    log = tmp_path / "serve.log"
    command = [str(Path(sys.executable).parent / "integration-hub"), "serve"]
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "serve did not answer /health:\n" + log.read_text()
            time.sleep(0.5)
        yield env, log
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def test_the_marked_blocks_run_in_order_against_a_served_hub(served_hub):
    env, log = served_hub
    script = "set -euo pipefail\n" + "\n".join(marked_blocks(README.read_text(encoding="utf-8"))) + "\n"

    run = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)

    report = f"exit {run.returncode}\n--- stdout\n{run.stdout[-4000:]}\n--- stderr\n{run.stderr[-4000:]}\n--- serve log\n{log.read_text()[-3000:]}"
    assert run.returncode == 0, report
    # What the walkthrough's comments promise, at the points that depend on earlier steps.
    assert "302 http://localhost:3000/integrations?status=connected" in run.stdout, report
    # JSON as the hub writes it: answers compact (orjson), error envelopes with spaces (json.dumps).
    assert re.search(r'"code":\s*"PERMISSION_DENIED"', run.stdout), report
    assert len(re.findall(r'"status":\s*"active"', run.stdout)) >= 4, report  # OAuth, API key, basic, custom
    assert "RATE_LIMIT_EXCEEDED" in run.stdout, report
