"""Every ```bash and ```python block of README.md runs as written, in README order, in one scratch folder.

The convention (README *Contributing*):
- ```bash and ```python blocks are commands to paste: they run here, one after another in a scratch folder
  (so a later block may use what an earlier one wrote), with `Resources/` of this checkout reachable as
  `Resources/`, `kneeoa` on PATH, one CPU thread. Keep them small (tiny phantoms, 1 epoch).
- ```text (or a bare ```) blocks are layouts, outputs and synopses with placeholders: not run.
- `<!-- readme-test: skip (reason) -->` on the line before a block: not run; only for blocks that need a GPU,
  3D Slicer, the network or many minutes (the demo, the whole suite). The reason is required.
Blocks are found whatever section they sit in, so blocks added later are covered without editing this file.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
RUN_LANGS = {"bash": "bash", "sh": "bash", "shell": "bash", "python": "python", "py": "python"}
SKIP_RE = re.compile(r"<!--\s*readme-test:\s*skip\s*\((?P<reason>[^)]+)\)\s*-->")
FENCE_RE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w+-]*)\s*$")
TIMEOUT_S = 600


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence
    lang: str  # "bash" or "python"
    code: str
    skip: str | None  # the skip reason, or None

    @property
    def id(self) -> str:
        return f"README.md:{self.line}:{self.lang}"


def readme_blocks(text: str) -> list[Block]:
    """The runnable-language blocks of a Markdown text, with their skip marks."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        match = FENCE_RE.match(lines[i])
        if not match:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith("```"):
            j += 1
        lang = RUN_LANGS.get(match["lang"].lower())
        if lang is not None:
            before = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
            skip = SKIP_RE.search(before)
            indent = len(match["indent"])
            code = "\n".join(line[indent:] for line in lines[i + 1:j])
            blocks.append(Block(i + 1, lang, code, skip["reason"].strip() if skip else None))
        i = j + 1
    return blocks


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))


def test_the_parser_sees_blocks_and_skip_marks():
    sample = ("text\n```bash\necho hi\n```\n<!-- readme-test: skip (needs 3D Slicer) -->\n```python\nimport slicer\n```\n"
              "```text\nnot code\n```\n")
    found = readme_blocks(sample)
    assert [(b.lang, b.code, b.skip) for b in found] == [("bash", "echo hi", None),
                                                          ("python", "import slicer", "needs 3D Slicer")]
    assert BLOCKS, "README.md has no bash/python blocks?"


def test_skips_are_rare_and_say_why():
    skipped = [b for b in BLOCKS if b.skip]
    assert all(len(b.skip) >= 8 for b in skipped)
    assert len(skipped) <= len(BLOCKS) // 2 + 1, "most README blocks must run; skip only GPU/Slicer/long ones"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> dict:
    """One scratch folder for all blocks, a `kneeoa` on PATH, the checkout's Resources reachable."""
    root = tmp_path_factory.mktemp("readme")
    (root / "Resources").symlink_to(REPO / "Resources", target_is_directory=True)
    bin_dir = root / ".bin"
    bin_dir.mkdir()
    shim = bin_dir / "kneeoa"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m kneeoa "$@"\n')
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}"
                                  f"{os.environ.get('PATH', '')}",
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
           "OMP_NUM_THREADS": "1", "KNEEOA_THREADS": "1", "KNEEOA_PROGRESS": "none", "MPLBACKEND": "Agg"}
    return {"root": root, "env": env, "failed": []}


def _run(block: Block, sandbox: dict) -> subprocess.CompletedProcess:
    if block.lang == "bash":
        argv = ["bash", "-e", "-o", "pipefail", "-c", block.code]
    else:
        argv = [sys.executable, "-c", block.code]
    return subprocess.run(argv, cwd=sandbox["root"], env=sandbox["env"], capture_output=True, text=True,
                          timeout=TIMEOUT_S)


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_readme_block_runs_as_written(block: Block, sandbox: dict):
    if block.skip:
        pytest.skip(f"marked in README: {block.skip}")
    if sandbox["failed"]:
        pytest.skip(f"an earlier block failed ({sandbox['failed'][0]}); later blocks may need its output")
    proc = _run(block, sandbox)
    if proc.returncode != 0:
        sandbox["failed"].append(block.id)
    assert proc.returncode == 0, (f"{block.id} exited {proc.returncode}\n--- block\n{block.code}\n--- stdout\n"
                                  f"{proc.stdout[-2000:]}\n--- stderr\n{proc.stderr[-3000:]}")
