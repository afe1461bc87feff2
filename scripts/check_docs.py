"""Checks the docs: links resolve, and every ```python block is either run or type-checked.

    python scripts/check_docs.py            # parse every block, check relative links (fast)
    python scripts/check_docs.py --blocks   # also run the `run` blocks and type-check the rest

Each python block of README.md and docs/ is one of two kinds, marked by the line before it:

- ``<!-- docs: run -->``: executed as a script (a fresh interpreter, cwd a temporary
  directory, 60 s at most); it must exit 0. For examples on the embedded broker.
- ``<!-- docs: excerpt PATH -->``: an excerpt of a file of the repository (``PATH`` from
  the root) that is itself type-checked and tested, such as the example plugin the
  provider guide walks through: each line of the block must be found in that file, in
  order (``...`` lines stand for what is left out; a trailing ``# comment`` may differ).
- anything else: type-checked with mypy (``--check-untyped-defs``, each block a module of
  its own), so an example naming a function, argument or attribute that does not exist
  fails. Blocks that need a broker are of this kind.

A type-checked block must therefore be complete: its imports, and stand-ins for what it
refers to.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"(?:^(<!-- docs: (\w+)(?: ([^ ]+))? -->)\n)?^```python\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
KINDS = ("run", "excerpt")


@dataclass(frozen=True)
class Block:
    path: Path
    number: int
    line: int
    kind: str  # "run", "excerpt" or "types"
    code: str
    source: str | None = None  # what an excerpt is taken from

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line} (python block {self.number})"


def doc_files() -> list[Path]:
    """README.md and every page under docs/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def blocks(path: Path) -> tuple[list[Block], list[str]]:
    """The python blocks of ``path``, and problems with their markers."""
    text = path.read_text(encoding="utf-8")
    found, problems = [], []
    for number, match in enumerate(BLOCK.finditer(text), 1):
        marker, kind, source, code = match.groups()
        line = text.count("\n", 0, match.start(4))
        block = Block(path, number, line, kind or "types", code, source)
        if marker and kind not in KINDS:
            problems.append(f"{block.where}: unknown marker {marker!r} (known: {KINDS})")
        elif kind == "excerpt" and not (source and (ROOT / source).is_file()):
            problems.append(f"{block.where}: excerpt of {source!r}: no such file")
        found.append(block)
    return found, problems


def check_static() -> list[str]:
    """Every block parses; every relative link resolves."""
    failures = []
    for path in doc_files():
        text = path.read_text(encoding="utf-8")
        found, problems = blocks(path)
        failures += problems
        for block in found:
            try:
                ast.parse(block.code)
            except SyntaxError as exc:
                if block.kind != "excerpt":  # an excerpt may start inside a class
                    failures.append(f"{block.where}: {exc}")
            if block.kind == "excerpt" and block.source and (ROOT / block.source).is_file():
                failures += check_excerpt(block)
        for target in LINK.findall(text):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (path.parent / target).exists():
                failures.append(f"{path.relative_to(ROOT)}: broken link {target}")
    return failures


def _code(line: str) -> str:
    """A line without its indentation and trailing comment."""
    return re.sub(r"\s+#.*$", "", line.strip()) if not line.strip().startswith("#") else ""


def check_excerpt(block: Block) -> list[str]:
    """Each line of ``block`` is in its source file, in order."""
    assert block.source is not None
    source = [_code(line) for line in (ROOT / block.source).read_text().splitlines()]
    at = 0
    for number, line in enumerate(block.code.splitlines(), 1):
        wanted = _code(line)
        if not wanted or wanted.startswith("..."):
            continue
        try:
            at = source.index(wanted, at) + 1
        except ValueError:
            return [f"{block.where}, line {number}: not in {block.source} (in order): {line!r}"]
    return []


def check_blocks() -> list[str]:
    """Run the ``run`` blocks; type-check the others with mypy."""
    every = [b for path in doc_files() for b in blocks(path)[0]]
    failures = []
    with tempfile.TemporaryDirectory(prefix="loafer-docs-") as tmp:
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        for block in (b for b in every if b.kind == "run"):
            script = Path(tmp) / f"run_{block.number}.py"
            script.write_text(block.code, encoding="utf-8")
            try:
                done = subprocess.run(
                    [sys.executable, str(script)],
                    cwd=tmp,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
            except subprocess.TimeoutExpired:
                failures.append(f"{block.where}: still running after 60 s")
                continue
            if done.returncode != 0:
                failures.append(f"{block.where}: exit {done.returncode}\n{done.stderr[-2000:]}")
        typed = [b for b in every if b.kind == "types"]
        names = {}
        for i, block in enumerate(typed):
            module = Path(tmp) / "types" / f"doc_block_{i}.py"
            module.parent.mkdir(exist_ok=True)
            module.write_text(block.code, encoding="utf-8")
            names[module.name] = block
        if typed:
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "mypy",
                    "--config-file",
                    str(ROOT / "scripts" / "mypy-docs.ini"),
                    "--cache-dir",
                    str(Path(tmp) / "cache"),
                    str(Path(tmp) / "types"),
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=600,
            )
            if done.returncode != 0:
                for line in done.stdout.splitlines():
                    name, _, rest = line.partition(":")
                    block = names.get(Path(name).name)
                    if block is None:
                        if "error" in line:
                            failures.append(line)
                        continue
                    number, _, message = rest.partition(":")
                    failures.append(f"{block.where}, line {number}: {message.strip()}")
                if not failures:
                    failures.append(done.stdout + done.stderr)
    return failures


def main(argv: list[str]) -> int:
    failures = check_static()
    if "--blocks" in argv and not failures:
        failures += check_blocks()
    for failure in failures:
        print(failure)
    print(f"checked {len(doc_files())} files: {len(failures)} problems")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
