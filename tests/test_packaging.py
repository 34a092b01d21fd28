"""Installing the hub: pyproject.toml packages everything without setuptools warnings, and
scripts/_venv.sh repairs a half-created or broken .venv (issue 11 item 16).

The _venv.sh tests run the real script on a throwaway copy with a one-module project, so they
exercise venv creation and pip for real; each run is bounded by a timeout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN_TIMEOUT = 240  # seconds for one _venv.sh run: create a venv, upgrade pip, install a one-module project


def test_building_the_package_warns_about_no_package_left_out(tmp_path):
    build = subprocess.run(
        [sys.executable, "-W", "always", "-c", "import setuptools; setuptools.setup()", "build_py", "-d", str(tmp_path / "lib")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )

    output = build.stdout + build.stderr
    assert build.returncode == 0, output
    assert "Package would be ignored" not in output
    assert "is absent from the `packages` configuration" not in output
    assert (tmp_path / "lib" / "persistence" / "data" / "providers.json").is_file()
    assert (tmp_path / "lib" / "openapi" / "paths" / "auth.yaml").is_file()
    assert (tmp_path / "lib" / "persistence" / "migrations" / "script.py.mako").is_file()


@pytest.fixture
def project(tmp_path) -> Path:
    """A throwaway project beside a copy of scripts/_venv.sh: one module, no dependencies."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "_venv.sh", tmp_path / "scripts" / "_venv.sh")
    (tmp_path / "pyproject.toml").write_text(textwrap.dedent("""\
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "venv-probe"
        version = "0.0.1"

        [tool.setuptools]
        py-modules = ["venv_probe"]
        """))
    (tmp_path / "venv_probe.py").write_text("OK = True\n")
    return tmp_path


def source_venv(project: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("VIRTUAL_ENV", None)
    return subprocess.run(["bash", "-c", "source scripts/_venv.sh"], cwd=project, env=env,
                          capture_output=True, text=True, timeout=RUN_TIMEOUT)


def assert_installed(project: Path) -> None:
    python = project / ".venv" / "bin" / "python"
    check = subprocess.run([str(python), "-c", "import pip, venv_probe; print(venv_probe.OK)"],
                           capture_output=True, text=True, timeout=60)
    assert check.stdout.strip() == "True", check.stderr
    assert (project / ".venv" / ".installed").is_file()


class TestVenvRepair:
    def test_a_venv_created_without_pip_is_repaired(self, project):
        # What an install interrupted inside `python -m venv` leaves: an interpreter, no pip, no stamp.
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(project / ".venv")], check=True, timeout=120)

        run = source_venv(project)

        assert run.returncode == 0, run.stderr
        assert "Repairing" in run.stderr
        assert_installed(project)

    def test_a_venv_whose_python_is_broken_is_recreated(self, project):
        # An interpreter that no longer runs (its base Python removed or upgraded away).
        bin_dir = project / ".venv" / "bin"
        bin_dir.mkdir(parents=True)
        (bin_dir / "python").write_text("#!/bin/sh\nexit 1\n")
        (bin_dir / "python").chmod(0o755)
        (project / ".venv" / ".installed").touch()

        run = source_venv(project)

        assert run.returncode == 0, run.stderr
        assert "Repairing" in run.stderr
        assert_installed(project)

    def test_an_install_that_stopped_before_its_stamp_is_rerun(self, project):
        assert source_venv(project).returncode == 0
        (project / ".venv" / ".installed").unlink()
        subprocess.run([str(project / ".venv" / "bin" / "python"), "-m", "pip", "uninstall", "-y", "-q", "venv-probe"],
                       check=True, timeout=120)

        run = source_venv(project)

        assert run.returncode == 0, run.stderr
        assert_installed(project)
