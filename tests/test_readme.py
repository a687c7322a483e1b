"""Every code block of README.md runs, as written or in a marked shorter form, so the README
cannot drift from the code.

Blocks run in README order, in one temporary folder (a later line may use an earlier
line's run folder), with this interpreter's ``bin`` first on ``PATH`` (so ``kernelattn``,
``python`` and ``torchrun`` are the ones under test) and ``benchmarks/`` linked in:

- ```` ```python ```` blocks are executed in a fresh namespace, in this process;
- ```` ```bash ```` blocks run with ``bash -euo pipefail`` (comments are bash comments);
- ```` ```text ```` blocks are display only (file trees, output) and are not run;
- any other fence (no language, ``sh``, ``console``, ...) fails, naming its line.

HTML comments directly above a block (invisible on GitHub) change how it runs:

- ``<!-- readme-test: skip (reason) -->``: not run; reported as a skipped test with the
  reason (use it for blocks that need a GPU, a download, or many minutes);
- ``<!-- readme-test: replace "OLD" "NEW" -->``: run with OLD replaced by NEW, e.g. a
  step count shortened for CI; OLD must occur in the block (several lines may follow
  each other). The block still runs its own commands, in order.

A marker whose directive is unknown, or a ``replace`` whose OLD is missing, fails.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RUN = {"python", "bash"}
DISPLAY = {"text"}
MARKER = re.compile(r"^<!--\s*readme-test:\s*(.*?)\s*-->$")
FENCE = re.compile(r"^```(\S*)\s*$")
TIMEOUT_S = 300


@dataclass
class Block:
    line: int  #: 1-based line of the opening fence
    lang: str
    code: str
    skip: str | None = None
    replace: list[tuple[str, str]] = field(default_factory=list)
    problem: str | None = None  #: a malformed marker, reported when the block's test runs

    @property
    def id(self) -> str:
        return f"L{self.line}-{self.lang or 'nolang'}"

    def runnable_code(self) -> str:
        code = self.code
        for old, new in self.replace:
            if old not in code:
                pytest.fail(f"README.md:{self.line}: readme-test replace {old!r} does not occur in the block; "
                            f"update the marker with the block")
            code = code.replace(old, new)
        return code


def parse_readme(text: str) -> list[Block]:
    """The fenced blocks of a Markdown text, each with the readme-test markers right above it."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1).lower()
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        block = Block(start + 1, lang, "\n".join(lines[start + 1:j]) + "\n")
        k = start - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        while k >= 0 and (mk := MARKER.match(lines[k].strip())):  # markers, nearest first
            _apply_marker(block, mk.group(1), k + 1)
            k -= 1
        blocks.append(block)
        i = j + 1
    return blocks


def _apply_marker(block: Block, directive: str, line: int) -> None:
    if directive.startswith("skip"):
        reason = directive[4:].strip().strip("()").strip()
        if not reason:
            block.problem = f"README.md:{line}: readme-test skip needs a reason: <!-- readme-test: skip (why) -->"
        block.skip = reason
    elif directive.startswith("replace"):
        args = shlex.split(directive[7:])
        if len(args) != 2:
            block.problem = f"README.md:{line}: readme-test replace takes two quoted strings, got {directive!r}"
        else:
            block.replace.insert(0, (args[0], args[1]))
    else:
        block.problem = f"README.md:{line}: unknown readme-test directive {directive!r} (known: skip, replace)"


BLOCKS = parse_readme(README.read_text())
_DOCS_BEFORE = {p: p.read_bytes() for p in sorted((ROOT / "docs").rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("readme")
    (d / "benchmarks").symlink_to(ROOT / "benchmarks")
    (d / "examples").symlink_to(ROOT / "examples")
    return d


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "MASTER_", "LOCAL_"))}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["MPLBACKEND"] = "Agg"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def test_readme_has_blocks_and_every_one_is_accounted_for():
    counts = {"run": 0, "skip": 0, "display": 0}
    for b in BLOCKS:
        assert b.lang in RUN | DISPLAY, (
            f"README.md:{b.line}: a ```{b.lang} block is neither run nor display-only; label it ```python, "
            f"```bash or ```text, or mark it <!-- readme-test: skip (reason) -->")
        counts["display" if b.lang in DISPLAY else "skip" if b.skip is not None else "run"] += 1
    assert counts["run"] >= 8, counts
    print(f"README.md: {len(BLOCKS)} blocks: {counts}")


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_readme_block(block: Block, workdir, monkeypatch):
    if block.problem:
        pytest.fail(block.problem)
    if block.lang in DISPLAY:
        pytest.skip("display-only ```text block")
    if block.lang not in RUN:
        pytest.fail(f"README.md:{block.line}: a ```{block.lang} block: label it ```python, ```bash or ```text, "
                    f"or mark it <!-- readme-test: skip (reason) -->")
    if block.skip is not None:
        pytest.skip(f"README.md:{block.line}: {block.skip}")
    code = block.runnable_code()
    if block.lang == "python":
        monkeypatch.chdir(workdir)
        exec(compile(code, f"README.md:{block.line}", "exec"), {"__name__": "__readme__"})
        return
    res = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=workdir, env=_env(), capture_output=True,
                         text=True, timeout=TIMEOUT_S)
    assert res.returncode == 0, (f"README.md:{block.line}: exit {res.returncode}\n--- ran:\n{code}\n--- stdout:\n"
                                 f"{res.stdout[-3000:]}\n--- stderr:\n{res.stderr[-3000:]}")


def test_readme_commands_leave_the_committed_docs_alone():
    """Runs after the blocks: no documented command (benchmarks included) rewrites docs/ unless asked."""
    after = {p: p.read_bytes() for p in sorted((ROOT / "docs").rglob("*")) if p.is_file()}
    changed = [str(p.relative_to(ROOT)) for p in after.keys() | _DOCS_BEFORE.keys()
               if after.get(p) != _DOCS_BEFORE.get(p)]
    assert not changed, f"README commands changed {changed}"


def test_parser_reads_markers_and_rejects_unknown_ones():
    text = ("<!-- readme-test: skip (needs a GPU) -->\n```bash\nnvidia-smi\n```\n\n"
            "<!-- readme-test: replace \"steps=500\" \"steps=2\" -->\n<!-- readme-test: replace \"a\" \"b\" -->\n"
            "```python\nx = 'steps=500'\n```\n<!-- readme-test: frobnicate -->\n```\nplain\n```\n")
    gpu, short, plain = parse_readme(text)
    assert gpu.skip == "needs a GPU" and gpu.lang == "bash" and gpu.line == 2
    assert short.replace == [("steps=500", "steps=2"), ("a", "b")] and short.skip is None
    assert "unknown readme-test directive" in plain.problem and plain.lang == ""
