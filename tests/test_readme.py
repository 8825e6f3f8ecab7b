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


# --- the console examples: every `$ command` runs verbatim and prints what the page shows ----------

CONSOLE_PAGES = ("README.md", "docs/articles.md", "docs/own-article.md")
CONFIDENCE = re.compile(r"confidence (\d\.\d\d)")


def console_examples(page: str) -> list[tuple[str, list[str]]]:
    """(command, the lines printed after it) for every `$ ` line of the page's ```console blocks."""
    text = (ROOT / page).read_text(encoding="utf-8")
    out: list[tuple[str, list[str]]] = []
    for block in re.findall(r"^```console\n(.*?)^```$", text, re.DOTALL | re.MULTILINE):
        for line in block.splitlines():
            if line.startswith("$ "):
                out.append((line[2:], []))
            elif out and line.strip():
                out[-1][1].append(line)
    return out


def same_line(shown: str, printed: str) -> bool:
    """Equal, with a confidence allowed to differ in its last digit or two (another CPU's rounding)."""
    a, b = CONFIDENCE.search(shown), CONFIDENCE.search(printed)
    if a is None or b is None:
        return shown == printed
    return CONFIDENCE.sub("", shown) == CONFIDENCE.sub("", printed) and abs(float(a[1]) - float(b[1])) <= 0.03


PROGRESS = re.compile(r"^\w+: +\d+%\|")  # tqdm's bars on stderr, which the pages do not show


def run_console(page: str, where: Path) -> list[tuple[str, subprocess.CompletedProcess[str], list[str]]]:
    """Run the page's console examples in order, as a reader copies them, in `where` (a folder holding
    the checkout's seeds/, index/ and docs/): (command, what it returned, the lines it printed)."""
    for name in ("seeds", "index", "docs"):
        shutil.copytree(ROOT / name, where / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("QA_")}
    env |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": f"{Path(sys.executable).parent}:{env['PATH']}"}
    env["PYTHONUNBUFFERED"] = "1"  # stdout and stderr interleaved as a terminal shows them
    out = []
    for command, _ in console_examples(page):
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=where,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=600,
        )
        printed = [line.rstrip() for line in re.split(r"[\r\n]", done.stdout) if line.strip()]
        out.append((command, done, [line for line in printed if not PROGRESS.match(line)]))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("page", CONSOLE_PAGES)
def test_the_console_examples_run_verbatim_and_print_what_is_shown(page: str, tmp_path: Path) -> None:
    """As a reader copies them, in order. After a change of reader: python tests/test_readme.py --update."""
    examples = console_examples(page)
    assert examples, f"no console examples in {page}"
    for (command, shown), (_, done, printed) in zip(examples, run_console(page, tmp_path), strict=True):
        assert "Traceback" not in done.stdout, (command, done.stdout)
        want_error = any(line.startswith("Error: ") for line in shown)
        assert (done.returncode != 0) == want_error, (command, done.returncode, done.stdout)
        at = 0
        for line in shown:  # each shown line is printed, in order (progress bars aside)
            found = next((i for i in range(at, len(printed)) if same_line(line, printed[i])), None)
            assert found is not None, f"{page}: `{command}` did not print\n{line}\nit printed:\n" + "\n".join(printed)
            at = found + 1


def update(page: str) -> None:
    """Rewrite the page's console examples with what their commands print now (a new reader, say)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        runs = iter(run_console(page, Path(tmp)))
    text = (ROOT / page).read_text(encoding="utf-8")

    def redo(block: re.Match[str]) -> str:
        out: list[str] = []
        old_output = False  # the lines after a command, up to a blank line, are what it printed before
        for line in block.group(1).splitlines():
            if line.startswith("$ "):
                _, _, printed = next(runs)
                out += [line, *printed]
                old_output = True
            elif not line.strip():
                out.append(line)
                old_output = False
            elif not old_output:
                out.append(line)
        return "```console\n" + "\n".join(out) + "\n```"

    (ROOT / page).write_text(
        re.sub(r"^```console\n(.*?)^```$", redo, text, flags=re.DOTALL | re.MULTILINE), encoding="utf-8"
    )


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        sys.exit("usage: python tests/test_readme.py --update  (reruns the console examples and rewrites their output)")
    for page in CONSOLE_PAGES:
        update(page)
        print(f"updated {page}")
