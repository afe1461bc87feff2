"""loafer_core.testing: what users import to test their own handlers."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_the_handler_testing_helpers_import_without_pytest() -> None:
    code = textwrap.dedent(
        """
        import sys
        class Block:
            def find_spec(self, fullname, path=None, target=None):
                if fullname.split(".")[0] in ("pytest", "_pytest"):
                    raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
                return None
        sys.meta_path.insert(0, Block())
        from loafer_core.testing import Report, run_until_idle
        print("ok")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert out.strip() == "ok"
