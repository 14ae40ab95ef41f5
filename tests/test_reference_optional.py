"""Without the reference data the suite skips what needs it with one reason; CI mode fails instead.
Runs pytest on test_checkpoint_layouts.py (it reads the released layouts from the reference) in a child
process pointed at a folder that does not exist."""
import os
import subprocess

from server_util import REPO, venv_python

MISSING = "/nonexistent/videocrafter-reference"


def run_pytest(tmp_path, **env):
    smoke = tmp_path / "smoke"
    smoke.mkdir(exist_ok=True)
    (smoke / ".complete").touch()  # this test file needs no smoke checkpoints: skip generating them
    base = {k: v for k, v in os.environ.items() if k != "VIDEOCRAFTER_REQUIRE_REFERENCE"}  # CI sets it for the outer run
    env = dict(base, VIDEOCRAFTER_REFERENCE=MISSING, VIDEOCRAFTER_SMOKE_DIR=str(smoke), **env)
    return subprocess.run([venv_python(), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "test_checkpoint_layouts.py"],
                          cwd=os.path.join(REPO, "tests"), env=env, capture_output=True, text=True, timeout=300)


def test_reference_tests_skip_with_one_reason(tmp_path):
    result = run_pytest(tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "passed" not in result.stdout.splitlines()[-1] and "skipped" in result.stdout.splitlines()[-1], result.stdout
    assert f"reference data not found at {MISSING}" in result.stdout, result.stdout


def test_ci_mode_fails_without_the_reference(tmp_path):
    result = run_pytest(tmp_path, VIDEOCRAFTER_REQUIRE_REFERENCE="1")
    assert result.returncode != 0
    assert f"reference data not found at {MISSING}" in result.stdout + result.stderr, result.stdout + result.stderr
