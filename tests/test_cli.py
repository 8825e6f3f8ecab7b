"""The command line as a user meets it: formats, ordering, error records, one-line errors."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from qa.cli import cli


@pytest.fixture(scope="module")
def env(seeds_copy: Path, tiny_reader: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    index = tmp_path_factory.mktemp("cli_index")
    return {"QA_SEEDS": str(seeds_copy), "QA_INDEX_DIR": str(index), "QA_READER_MODEL": str(tiny_reader)}


def run(env: dict[str, str], *args: str, stdin: str | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, list(args), env=env, input=stdin, catch_exceptions=False)


def test_index_then_up_to_date(env: dict[str, str]) -> None:
    first = run(env, "index", "--force")
    assert first.exit_code == 0, first.output
    assert "Indexed 1 article(s)" in first.stdout
    again = run(env, "index")
    assert again.exit_code == 0 and "up to date" in again.stdout


def test_ask_json_is_one_object_with_exact_citation(env: dict[str, str], seeds_copy: Path) -> None:
    result = run(env, "ask", "Who devised the process?", "--json", "--top-k", "2")
    assert result.exit_code == 0, result.output
    obj = json.loads(result.stdout)
    text = (seeds_copy / "pentagon-ukraine-long-range-strikes.txt").read_text(encoding="utf-8")
    assert obj["question"] == "Who devised the process?"
    assert 1 <= len(obj["answers"]) <= 2
    for a in obj["answers"]:
        assert text[a["start"] : a["end"]] == a["text"]
        assert set(a) >= {"text", "start", "end", "score", "doc_id", "chunk_id", "sentence"}


def test_ask_readable_output(env: dict[str, str]) -> None:
    result = run(env, "ask", "Who devised the process?")
    assert result.exit_code == 0
    assert result.stdout.startswith("Answer: ")
    assert "chunk" in result.stdout and "characters" in result.stdout


def test_batch_formats_keep_input_order_and_ids(env: dict[str, str], tmp_path: Path) -> None:
    questions = ["Who devised the process?", "When did Trump meet Putin?", "Where is Elmendorf?"]
    (tmp_path / "q.jsonl").write_text(
        "\n".join(
            [
                json.dumps({"id": "a", "question": questions[0], "extra": 1}),
                json.dumps({"question": questions[1]}),
                "{broken json",
                json.dumps({"id": 9, "question": "   "}),
                json.dumps({"id": "z", "question": questions[2]}),
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    out = tmp_path / "answers.jsonl"
    result = run(env, "batch", str(tmp_path / "q.jsonl"), "--out", str(out))
    assert result.exit_code == 1, result.output  # every record written; the bad ones fail the run
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in records] == ["a", 2, 3, 9, "z"]
    assert [r["question"] for r in records][:2] == questions[:2]
    assert records[2]["error"] and "not valid JSON" in records[2]["error"]
    assert records[3]["error"] and "empty" in records[3]["error"]
    assert records[0]["error"] is None and records[4]["error"] is None
    for r in records:
        assert list(r) == [
            "id",
            "question",
            "answer",
            "start",
            "end",
            "score",
            "doc_id",
            "chunk_id",
            "sentence",
            "guess",
            "guess_start",
            "guess_end",
            "guess_score",
            "guess_doc_id",
            "error",
        ]

    (tmp_path / "q.csv").write_text("id,question\nx1,Who devised the process?\nx2,\n", encoding="utf-8")
    result = run(env, "batch", str(tmp_path / "q.csv"), "--format", "csv")
    assert result.exit_code == 1  # x2 has no question
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["id"] for r in rows] == ["x1", "x2"] and rows[1]["error"]

    result = run(env, "batch", "-", stdin="Who devised the process?\n\nWhen did Trump meet Putin?\n")
    assert result.exit_code == 0
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["id"] for r in records] == [1, 2]


def test_batch_bad_files(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "q.pdf").write_bytes(b"%PDF")
    result = run(env, "batch", str(tmp_path / "q.pdf"))
    assert result.exit_code == 1 and "cannot tell the format" in result.stderr
    (tmp_path / "nohead.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    result = run(env, "batch", str(tmp_path / "nohead.csv"))
    assert result.exit_code == 1 and "'question' column" in result.stderr
    result = run(env, "batch", str(tmp_path / "missing.txt"))
    assert result.exit_code == 1 and "does not exist" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ask", "   "], "question is empty"),
        (["ask", "x" * 600], "keep it to 500 at most"),
        (["ask", "Why?", "--seeds", "/nonexistent/seeds"], "does not exist"),
        (["ask", "Why?", "--reader-model", "/nonexistent/model"], "reader model not found"),
        (["ask", "Why?", "--embed-model", "./no/such/embedder"], "embedding model not found"),
    ],
)
def test_errors_are_one_line_with_exit_1(env: dict[str, str], args: list[str], message: str) -> None:
    result = run(env, *args)
    assert result.exit_code == 1
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_corrupt_index_is_reported_not_answered(env: dict[str, str], tmp_path: Path) -> None:
    index = tmp_path / "index"
    assert run(env | {"QA_INDEX_DIR": str(index)}, "index").exit_code == 0
    manifest = json.loads((index / "manifest.json").read_text())
    (index / manifest["generation"] / "chunks.jsonl").write_text("garbage\n")
    result = run(env | {"QA_INDEX_DIR": str(index)}, "ask", "Who devised the process?")
    assert result.exit_code == 1
    assert "corrupt" in result.stderr and "qa index --force" in result.stderr


def test_real_process_error_has_no_traceback(env: dict[str, str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "qa.cli", "ask", ""],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, **env},
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == "Error: the question is empty; type a question about the article"


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    for name in ("index", "ask", "batch", "train-reader", "squad-predict", "squad-eval"):
        assert name in result.stdout


def test_the_process_waits_passively_unless_told_otherwise() -> None:
    from qa.cli import process_policy

    env: dict[str, str] = {}
    process_policy(env)
    assert env == {"OMP_WAIT_POLICY": "PASSIVE", "TOKENIZERS_PARALLELISM": "false"}  # see benchmarks/load.py
    env = {"OMP_WAIT_POLICY": "ACTIVE", "QA_THREADS": "1", "TOKENIZERS_PARALLELISM": "true"}
    process_policy(env)
    assert env == {
        "OMP_WAIT_POLICY": "ACTIVE",
        "QA_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "true",
    }


def test_a_bad_thread_count_is_one_line() -> None:
    import os
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "qa.cli", "ask", "Who?"],
        capture_output=True,
        text=True,
        env={**os.environ, "QA_THREADS": "many"},
        timeout=120,
    )
    assert (
        done.returncode == 1
        and done.stderr.strip() == "Error: QA_THREADS must be a whole number of at least 1, got 'many'"
    )


def test_serve_on_a_port_in_use_says_so_before_anything_loads(tmp_path: Path) -> None:
    """Before Gradio and the models load (a minute on a small machine), not after; a reader that
    does not exist would fail at that load, so the port is what is said."""
    import os
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "QA_READER_MODEL": str(tmp_path / "no-reader")}
        cmd = [sys.executable, "-m", "qa.cli", "serve", "--port", str(port)]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 1 and done.stderr.splitlines() == [
        f"Error: cannot serve on 127.0.0.1:{port}: the port is taken or the address is not this machine's; "
        "pass a free --port (or set QA_PORT) or another --host"
    ]
    assert "gradio" not in done.stderr.lower()
