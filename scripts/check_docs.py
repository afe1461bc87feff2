"""Checks the docs: every ```python block parses and every relative link resolves."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"```python\n(.*?)```", re.S)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def main() -> int:
    failures = []
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    for path in files:
        text = path.read_text(encoding="utf-8")
        for i, block in enumerate(BLOCK.findall(text), 1):
            try:
                ast.parse(block)
            except SyntaxError as exc:
                failures.append(f"{path.relative_to(ROOT)}: python block {i}: {exc}")
        for target in LINK.findall(text):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (path.parent / target).exists():
                failures.append(f"{path.relative_to(ROOT)}: broken link {target}")
    for failure in failures:
        print(failure)
    print(f"checked {len(files)} files: {len(failures)} problems")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
