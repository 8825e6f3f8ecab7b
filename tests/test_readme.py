"""The README's examples run as printed: a user copies them verbatim, so they are tested verbatim."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def python_block(section: str) -> str:
    """The first ```python block under the README heading `## {section}`."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    body = readme.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    m = re.search(r"^```python\n(.*?)^```$", body, re.DOTALL | re.MULTILINE)
    assert m is not None, f"no python block in the README's {section} section"
    return m.group(1)


@pytest.mark.slow
def test_the_python_api_example_runs_verbatim(tmp_path: Path) -> None:
    # The folder the README tells the reader to run it from: seeds/ and index/, here copies of the
    # repo's, so that the example can never rewrite the checkout's own index.
    for name in ("seeds", "index"):
        shutil.copytree(ROOT / name, tmp_path / name)
    script = tmp_path / "example.py"
    script.write_text(python_block("Python API"), encoding="utf-8")
    # The example resolves settings from the environment: keep the caller's QA_* out of it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("QA_")}
    env |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stdout.splitlines()
    answered = [line for line in lines if " -> " in line and not line.endswith("-> the article does not say")]
    assert answered, done.stdout  # the batch loop printed at least one answer
    assert lines[-1] != "the article does not say", done.stdout  # so did the shared assistant


@pytest.mark.slow
def test_the_own_article_example_runs_verbatim(tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(python_block("Your own article"), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("QA_")}
    env |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Maria Okafor "), done.stdout
    assert list(tmp_path.iterdir()) == [script]  # indexed in memory: nothing written where it runs
