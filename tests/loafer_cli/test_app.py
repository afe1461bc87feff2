"""The ``loafer`` console script is installed and answers."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


def test_the_console_script_is_installed_and_shows_its_help() -> None:
    script = shutil.which("loafer", path=str(Path(sys.executable).parent))
    assert script is not None, "pip install -e . installs the loafer command"
    done = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Usage: loafer" in done.stdout
