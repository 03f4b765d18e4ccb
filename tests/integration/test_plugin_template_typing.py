"""The plugin template type-checks with mypy --strict from a copy outside this repository.

So a plugin author sees dmoa_p2p's types (its py.typed) through an ordinary install, and
the negative control shows they are real types, not Any.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

TEMPLATE = Path(__file__).resolve().parents[2] / "examples" / "dmoa-plugin-template"
BUILD_LEFTOVERS = shutil.ignore_patterns("*.egg-info", "__pycache__", ".*_cache")


def mypy(cwd: Path, cache: Path, *targets: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "mypy", "--strict", "--no-incremental"]
    return subprocess.run(
        [*command, "--cache-dir", str(cache), *targets],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_a_copy_of_the_template_type_checks_strictly(tmp_path: Path) -> None:
    copy = tmp_path / "my-plugin"
    shutil.copytree(TEMPLATE, copy, ignore=BUILD_LEFTOVERS)
    checked = mypy(copy, tmp_path / "cache", "dmoa_plugin_template", "tests")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Success: no issues found" in checked.stdout

    (copy / "misuse.py").write_text(
        "from dmoa_p2p.moa import QueryRequest\n\nQueryRequest(prompt=1)\n"
    )
    misuse = mypy(copy, tmp_path / "cache", "misuse.py")
    assert misuse.returncode == 1, misuse.stdout + misuse.stderr
    assert 'Argument "prompt" to "QueryRequest" has incompatible type "int"' in misuse.stdout
