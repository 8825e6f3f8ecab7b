"""Bad input and faults, met the way users meet them: the real `qa` process and the real server.

Every case must end in one clear line (or correct output), exit status 1 for a user mistake,
never a traceback, never lost work, and nothing touched outside the path the user named. The
reader is the tiny random model (fast; these tests are about plumbing, not answers) and the
embedder is the real packaged one.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import as_a_user_starts_it, free_port, start_server

ROOT = Path(__file__).resolve().parent.parent
ARTICLE_NAME = "pentagon-ukraine-long-range-strikes.txt"
QUESTIONS = ["Who devised the process?", "When did Trump meet Putin?", "Where is Elmendorf?"]


@pytest.fixture(scope="module")
def place(tmp_path_factory: pytest.TempPathFactory, tiny_reader: Path) -> dict[str, str]:
    """Private articles and a ready index, so no case rebuilds anything by accident."""
    seeds = tmp_path_factory.mktemp("bad-seeds")
    shutil.copy(ROOT / "seeds" / ARTICLE_NAME, seeds / ARTICLE_NAME)
    index = tmp_path_factory.mktemp("bad-index")
    env = {"QA_SEEDS": str(seeds), "QA_INDEX_DIR": str(index), "QA_READER_MODEL": str(tiny_reader)}
    done = qa(env, "index")
    assert done.returncode == 0, done.stderr
    return env


def qa(
    env: dict[str, str], *args: str | bytes, stdin: bytes | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    full = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **env}
    return subprocess.run(
        [sys.executable, "-m", "qa.cli", *args],
        input=stdin,
        capture_output=True,
        env=full,
        cwd=cwd,
        timeout=300,
    )


def one_line_error(done: subprocess.CompletedProcess[bytes], *needles: str) -> str:
    err = done.stderr.decode("utf-8", "replace")
    assert done.returncode == 1, (done.returncode, err)
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("Error: "), err
    for needle in needles:
        assert needle in lines[0], err
    return lines[0]


def records(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.split("\n") if line]


def write_questions(path: Path, questions: list[str] = QUESTIONS) -> Path:
    path.write_text("\n".join(questions) + "\n", encoding="utf-8")
    return path


# --- the output path ---------------------------------------------------------------------------


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_device_as_output_is_refused_and_left_a_device(place: dict[str, str], tmp_path: Path) -> None:
    before = os.stat("/dev/full")
    done = qa(place, "batch", str(write_questions(tmp_path / "q.txt")), "--out", "/dev/full")
    one_line_error(done, "/dev/full", "character device", "--out")
    after = os.stat("/dev/full")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev


def test_a_symlink_output_is_written_through(place: dict[str, str], tmp_path: Path) -> None:
    target = tmp_path / "real" / "answers.jsonl"
    target.parent.mkdir()
    target.write_text("old\n", encoding="utf-8")
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    done = qa(place, "batch", str(write_questions(tmp_path / "q.txt")), "--out", str(link))
    assert done.returncode == 0, done.stderr
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert [r["question"] for r in records(target.read_text(encoding="utf-8"))] == QUESTIONS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.jsonl", "q.txt", "real"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["answers.jsonl"]


@pytest.mark.parametrize(
    ("out", "needles"),
    [
        ("missing-folder/answers.jsonl", ("does not exist", "--out")),
        ("/sys/answers.jsonl", ("cannot write in /sys", "--out")),  # read-only even for root
        (".", ("is a folder", "--out")),
        ("answers.xlsx", ("cannot tell which format", ".jsonl or .csv", "--format")),  # not JSON lines in disguise
    ],
)
def test_a_bad_output_path_fails_before_any_work(
    place: dict[str, str], tmp_path: Path, out: str, needles: tuple[str, ...]
) -> None:
    questions = write_questions(tmp_path / "q.txt")
    done = qa(place, "batch", str(questions), "--out", out, cwd=tmp_path)
    one_line_error(done, *needles)
    assert b"questions:" not in done.stderr  # no progress bar: nothing was answered and thrown away
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.txt"]


def test_a_report_path_is_checked_before_evaluating(place: dict[str, str], tmp_path: Path) -> None:
    gold = tmp_path / "gold.jsonl"
    gold.write_text(json.dumps({"id": "1", "question": QUESTIONS[0], "answers": ["Colby"]}) + "\n")
    done = qa(place, "eval", str(gold), "--report", str(tmp_path / "nope" / "r.jsonl"))
    one_line_error(done, "does not exist", "--report")


# --- text that is not text -----------------------------------------------------------------------


def test_a_lone_surrogate_in_jsonl_is_one_error_record(place: dict[str, str], tmp_path: Path) -> None:
    lines = [
        json.dumps({"id": "a", "question": QUESTIONS[0]}),
        '{"id": "b", "question": "Who \\ud800 is it?"}',
        json.dumps({"id": "c", "question": QUESTIONS[1]}),
    ]
    (tmp_path / "q.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    done = qa(place, "batch", str(tmp_path / "q.jsonl"), "--out", str(out))
    assert done.returncode == 1, done.stderr  # a record had an error; all were written
    got = records(out.read_text(encoding="utf-8"))
    assert [r["id"] for r in got] == ["a", "b", "c"]
    assert got[0]["answer"] is not None and got[2]["answer"] is not None
    assert got[1]["answer"] is None and "not UTF-8" in got[1]["error"]


def test_non_utf8_bytes_in_an_argument_are_one_line(place: dict[str, str]) -> None:
    done = qa(place, "ask", b"Who \xff\xfe devised it?")
    one_line_error(done, "not UTF-8")


def test_non_utf8_bytes_on_stdin_cost_only_their_line(place: dict[str, str]) -> None:
    stdin = QUESTIONS[0].encode() + b"\nWho \xff devised it?\n" + QUESTIONS[1].encode() + b"\n"
    done = qa(place, "batch", "-", stdin=stdin)
    assert done.returncode == 1, done.stderr  # a record had an error; all were written
    got = records(done.stdout.decode("utf-8"))
    assert [r["id"] for r in got] == [1, 2, 3]
    assert got[1]["error"] and "not UTF-8" in got[1]["error"] and got[1]["question"] == "Who \ufffd devised it?"
    assert got[0]["answer"] is not None and got[2]["answer"] is not None


def test_line_separators_inside_jsonl_do_not_split_records_and_output_reads_back(
    place: dict[str, str], tmp_path: Path
) -> None:
    odd = ["Who devised\u2028the process?", "When did\u2029Trump meet Putin?", "Where is\x85Elmendorf?"]
    (tmp_path / "q.jsonl").write_text(
        "\n".join(json.dumps({"id": i, "question": q}, ensure_ascii=False) for i, q in enumerate(odd)) + "\n",
        encoding="utf-8",
    )
    out = tmp_path / "out.jsonl"
    assert qa(place, "batch", str(tmp_path / "q.jsonl"), "--out", str(out)).returncode == 0
    got = records(out.read_text(encoding="utf-8"))
    assert [r["question"] for r in got] == odd and not any(r["error"] for r in got)
    again = tmp_path / "again.jsonl"
    done = qa(place, "batch", str(out), "--out", str(again))  # its own output is valid input
    assert done.returncode == 0, done.stderr
    assert [r["question"] for r in records(again.read_text(encoding="utf-8"))] == odd


# --- questions files -----------------------------------------------------------------------------


def test_an_empty_questions_file_says_so(place: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "q.txt").write_text("\n  \n", encoding="utf-8")
    one_line_error(qa(place, "batch", str(tmp_path / "q.txt")), "holds no questions")


def test_csv_header_is_matched_loosely(place: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "q.csv").write_text("ID, Question \nx," + QUESTIONS[0] + "\n", encoding="utf-8")
    done = qa(place, "batch", str(tmp_path / "q.csv"), "--format", "csv")
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout.decode("utf-8"))))
    assert rows[0]["id"] == "x" and rows[0]["question"] == QUESTIONS[0] and not rows[0]["error"]


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["ask", "   "], ("question is empty",)),
        (["ask", "x" * 5000], ("keep it to 500 at most",)),
        (["ask", "Why?", "--reader-model", "tests/no-such-reader"], ("reader model not found",)),
        (["batch", "no-such-file.txt"], ("does not exist",)),
        (["batch", "tests"], ("is a folder",)),
    ],
)
def test_user_mistakes_are_one_line(place: dict[str, str], args: list[str], needles: tuple[str, ...]) -> None:
    started = time.monotonic()
    one_line_error(qa(place, *args, cwd=ROOT), *needles)
    assert time.monotonic() - started < 60  # a missing local model is not looked up on a hub


# --- articles and the index ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        (b"", ("is empty",)),
        (b"Caf\xe9 society.\n", ("not UTF-8", "it looks like Latin-1", "iconv -f LATIN1 -t UTF-8")),
    ],
)
def test_bad_articles_are_one_line(tmp_path: Path, tiny_reader: Path, content: bytes, needles: tuple[str, ...]) -> None:
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    (seeds / "a.txt").write_bytes(content)
    env = {"QA_SEEDS": str(seeds), "QA_INDEX_DIR": str(tmp_path / "index"), "QA_READER_MODEL": str(tiny_reader)}
    one_line_error(qa(env, "ask", "Why?"), *needles)
    assert not (tmp_path / "index").exists()


@pytest.mark.parametrize(
    "change",
    [
        {"documents": None},
        {"chunks": "many"},
        {"generation": "../../etc"},
    ],
)
def test_a_manifest_with_wrong_types_is_reported(place: dict[str, str], tmp_path: Path, change: dict[str, Any]) -> None:
    index = tmp_path / "index"
    shutil.copytree(place["QA_INDEX_DIR"], index)
    manifest = json.loads((index / "manifest.json").read_text())
    (index / "manifest.json").write_text(json.dumps(manifest | change))
    one_line_error(qa(place | {"QA_INDEX_DIR": str(index)}, "ask", "Why?"), "corrupt", "qa index --force")


def test_a_full_disk_while_indexing_leaves_the_old_index_and_no_staging(
    place: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import faiss

    from qa.assistant import Assistant
    from qa.errors import IndexStoreError

    index = tmp_path / "index"
    shutil.copytree(place["QA_INDEX_DIR"], index)
    before = sorted(p.name for p in index.iterdir())

    def full(*args: object) -> None:
        raise RuntimeError("Error in faiss::FileIOWriter: ret == (n) failed: write error: No space left on device")

    monkeypatch.setattr(faiss, "write_index", full)
    assistant = Assistant(place["QA_SEEDS"], index, log=lambda msg: None)
    with pytest.raises(IndexStoreError, match="No space left on device") as err:
        assistant.build_index(force=True, progress=False)
    assert "previous index is unchanged" in str(err.value) and "\n" not in str(err.value)
    assert sorted(p.name for p in index.iterdir()) == before
    monkeypatch.undo()
    assert Assistant(place["QA_SEEDS"], index, log=lambda msg: None).index_status() is None


def test_qa_works_from_another_folder(tmp_path: Path) -> None:
    """Without --seeds, outside the checkout: the project's own seeds/ and index/ are used."""
    done = qa({}, "ask", "Who devised the process?", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    text = (ROOT / "seeds" / ARTICLE_NAME).read_text(encoding="utf-8")
    assert all(text[a["start"] : a["end"]] == a["text"] for a in result["answers"])
    assert list(tmp_path.iterdir()) == []


# --- interrupting a long batch -------------------------------------------------------------------


def test_ctrl_c_in_a_long_batch_keeps_what_was_answered(place: dict[str, str], tmp_path: Path) -> None:
    stop_a_long_batch(place, tmp_path, signal.SIGINT, expect_status=130)


# --- the server ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_reader: Path) -> Any:
    """A real `qa serve` over a private, editable copy of the article (tiny reader)."""
    seeds = tmp_path_factory.mktemp("served-seeds")
    shutil.copy(ROOT / "seeds" / ARTICLE_NAME, seeds / ARTICLE_NAME)
    index = tmp_path_factory.mktemp("served-index")
    args = ["--seeds", str(seeds), "--index-dir", str(index), "--reader-model", str(tiny_reader)]
    log = tmp_path_factory.mktemp("served-log") / "serve.log"
    with start_server(args, free_port(), log) as url:
        from gradio_client import Client

        yield Client(url, verbose=False), seeds / ARTICLE_NAME, url


def call_over_http(url: str, api: str, data: list[Any]) -> tuple[int, str]:
    """Gradio's HTTP API as any client speaks it (json.dumps escapes a lone surrogate as \\ud800):
    the status and body of the call, or of its event stream when the call was queued."""
    import urllib.error
    import urllib.request

    body = json.dumps({"data": data}).encode("ascii")
    request = urllib.request.Request(
        f"{url}gradio_api/call/{api}", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            event_id = json.load(response)["event_id"]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8")
    with urllib.request.urlopen(f"{url}gradio_api/call/{api}/{event_id}", timeout=120) as response:
        return response.status, response.read().decode("utf-8")


def test_the_server_refuses_a_lone_surrogate_with_a_message(server: Any) -> None:
    from gradio_client.exceptions import AppError

    client, _, url = server
    # Refused before it is queued (qa.limits.ApiBounds), with the line the handler would give.
    status, body = call_over_http(url, "ask", ["Who \ud800 devised it?", 1, None])
    assert status == 400 and "not UTF-8" in json.loads(body)["error"], body
    with pytest.raises(AppError, match="question is empty"):
        client.predict("  ", 1, None, api_name="/ask")
    ok = client.predict(QUESTIONS[0], 1, None, api_name="/ask")  # and it keeps working
    assert ok["error"] is None


def test_the_server_never_cites_a_stale_article(server: Any) -> None:
    client, article, _ = server
    first = client.predict(QUESTIONS[0], 3, None, api_name="/ask")
    assert first["answers"]
    new_text = "BREAKING: an update was added at the top.\n\n" + article.read_text(encoding="utf-8")
    article.write_text(new_text, encoding="utf-8")
    second = client.predict(QUESTIONS[0], 3, None, api_name="/ask")
    assert second["answers"]
    for a in second["answers"]:
        assert new_text[a["start"] : a["end"]] == a["text"]
    for p in second["passages"]:
        assert new_text[p["start"] : p["end"]] == p["text"]


# --- outputs that must not be replaced, stops by signal, leftovers --------------------------------

LONG_BATCH = 3000


def files_in(folder: Path) -> dict[str, bytes]:
    """Every entry of the folder (hidden ones too) with its content, to show nothing was touched."""
    entries = {}
    for p in folder.iterdir():
        entries[p.name] = os.readlink(p).encode() if p.is_symlink() else b"" if p.is_dir() else p.read_bytes()
    return entries


@pytest.mark.parametrize("spelling", ["q.jsonl", "./q.jsonl", "sub/../q.jsonl", "link.jsonl", "hard.jsonl"])
def test_out_that_is_the_input_file_is_refused_before_any_work(
    place: dict[str, str], tmp_path: Path, spelling: str
) -> None:
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps({"question": q}) + "\n" for q in QUESTIONS), encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.jsonl").symlink_to("q.jsonl")
    os.link(questions, tmp_path / "hard.jsonl")
    before = files_in(tmp_path)
    done = qa(place, "batch", "q.jsonl", "--out", spelling, cwd=tmp_path)
    one_line_error(done, f"--out {spelling} is the input file q.jsonl (the same file)", "choose another path for --out")
    assert b"questions:" not in done.stderr  # refused before a model loaded
    assert files_in(tmp_path) == before


@pytest.mark.parametrize(("command", "flag"), [("eval", "--report"), ("squad-predict", "--out")])
def test_eval_and_squad_predict_refuse_to_replace_their_input(
    place: dict[str, str], tmp_path: Path, command: str, flag: str
) -> None:
    if command == "eval":
        given = tmp_path / "gold.jsonl"
        given.write_text(json.dumps({"id": "1", "question": QUESTIONS[0], "answers": ["Colby"]}) + "\n")
    else:
        given = tmp_path / "dev.json"
        shutil.copy(ROOT / "tests" / "data" / "squad_tiny.json", given)
    before = files_in(tmp_path)
    done = qa(place, command, given.name, flag, f"./{given.name}", cwd=tmp_path)
    one_line_error(done, f"{flag} ./{given.name} is the input file {given.name} (the same file)", flag)
    assert files_in(tmp_path) == before


@pytest.mark.parametrize(("command", "flag"), [("batch", "--out"), ("eval", "--report")])
def test_a_read_only_output_is_refused_before_any_work(
    place: dict[str, str], tmp_path: Path, command: str, flag: str
) -> None:
    if command == "batch":
        given = write_questions(tmp_path / "q.txt")
    else:
        given = tmp_path / "gold.jsonl"
        given.write_text(json.dumps({"id": "1", "question": QUESTIONS[0], "answers": ["Colby"]}) + "\n")
    out = tmp_path / "kept.jsonl"
    out.write_text("precious\n", encoding="utf-8")
    out.chmod(0o444)  # the tests run as root, who could write it: the mode bits decide, as for `cp`
    before = files_in(tmp_path)
    done = qa(place, command, str(given), flag, str(out))
    one_line_error(done, f"{flag} {out} is read-only", f"chmod u+w {out}", f"choose another path for {flag}")
    assert b"questions:" not in done.stderr
    assert files_in(tmp_path) == before and stat.S_IMODE(out.stat().st_mode) == 0o444


def test_a_batch_with_error_records_writes_them_all_and_exits_1(place: dict[str, str], tmp_path: Path) -> None:
    lines = [
        json.dumps({"id": "a", "question": QUESTIONS[0]}),
        "{broken",
        json.dumps({"id": "c", "question": QUESTIONS[1]}),
    ]
    (tmp_path / "q.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    done = qa(place, "batch", str(tmp_path / "q.jsonl"), "--out", str(out))
    err = done.stderr.decode()
    assert done.returncode == 1 and "Traceback" not in err, err
    got = records(out.read_text(encoding="utf-8"))
    assert [r["id"] for r in got] == ["a", 2, "c"]
    assert [bool(r["error"]) for r in got] == [False, True, False]
    summary = err.strip().splitlines()[-1]
    assert summary.startswith(f"Wrote 3 records to {out} ("), err
    assert summary.endswith("1 record had an error: see the 'error' field."), err


def test_the_progress_bar_ends_at_n_of_n(place: dict[str, str], tmp_path: Path) -> None:
    done = qa(place, "batch", str(write_questions(tmp_path / "q.txt")), "--out", str(tmp_path / "a.jsonl"))
    err = done.stderr.decode()
    assert done.returncode == 0, err
    bars = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("questions:")]
    assert bars and "3/3" in bars[-1], err


def start_a_long_batch(place: dict[str, str], tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """`qa batch` of many questions to --out answers.jsonl, once some records sit in its temporary file."""
    questions = write_questions(tmp_path / "q.txt", [f"{QUESTIONS[i % 3]} ({i})" for i in range(LONG_BATCH)])
    out = tmp_path / "answers.jsonl"
    full = {**os.environ, "HF_HUB_OFFLINE": "1", **place}
    proc = subprocess.Popen(
        [sys.executable, "-m", "qa.cli", "batch", str(questions), "--out", str(out)],
        stderr=subprocess.PIPE,
        env=full,
        preexec_fn=as_a_user_starts_it,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        partial = [p for p in tmp_path.iterdir() if p.name.endswith(".partial") and p.stat().st_size > 0]
        if partial or proc.poll() is not None:
            break
        time.sleep(0.2)
    return proc, out


def stop_a_long_batch(place: dict[str, str], tmp_path: Path, signum: int, expect_status: int) -> None:
    """Stop a long batch with `signum`: what was answered is kept, in order, with one line and no leftovers."""
    proc, out = start_a_long_batch(place, tmp_path)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    text = err.decode()
    assert proc.returncode == expect_status, text
    assert "Traceback" not in text
    said = [line for line in text.splitlines() if "Interrupted" in line]
    assert len(said) == 1 and said[0].startswith("Interrupted: kept "), text
    got = records(out.read_text(encoding="utf-8"))
    assert 0 < len(got) < LONG_BATCH
    assert [r["id"] for r in got] == list(range(1, len(got) + 1))  # in input order, none skipped
    assert sorted(p.name for p in tmp_path.iterdir()) == ["answers.jsonl", "q.txt"]


def test_sigterm_in_a_long_batch_keeps_what_was_answered(place: dict[str, str], tmp_path: Path) -> None:
    stop_a_long_batch(place, tmp_path, signal.SIGTERM, expect_status=143)


def test_a_killed_batch_leaves_no_stale_partial_after_the_next_run(place: dict[str, str], tmp_path: Path) -> None:
    proc, out = start_a_long_batch(place, tmp_path)
    proc.kill()  # SIGKILL: nothing runs, the temporary file stays
    proc.communicate(timeout=60)
    stale = [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    assert [name.split(".")[3] for name in stale] == [str(proc.pid)]  # .answers.jsonl.<pid>.<random>.partial
    live = tmp_path / f".answers.jsonl.{os.getpid()}.writing.partial"  # a running process's: must stay
    live.write_text("in progress\n", encoding="utf-8")
    done = qa(place, "batch", str(write_questions(tmp_path / "q3.txt")), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert [r["question"] for r in records(out.read_text(encoding="utf-8"))] == QUESTIONS
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "answers.jsonl", "q.txt", "q3.txt"])


def serving_pid(port: int) -> int:
    """The pid of the `qa serve --port PORT` that start_server launched (it yields only the URL)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            args = cmdline.read_bytes().split(b"\0")
            if b"serve" in args and str(port).encode() in args:
                return int(cmdline.parent.name)
    raise AssertionError(f"no qa serve process on port {port}")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stopped_server_leaves_no_downloads_folder(
    tmp_path: Path, tiny_reader: Path, monkeypatch: pytest.MonkeyPatch, signum: int
) -> None:
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(private_tmp))  # start_server hands our environment to the server
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    shutil.copy(ROOT / "seeds" / ARTICLE_NAME, seeds / ARTICLE_NAME)
    args = ["--seeds", str(seeds), "--index-dir", str(tmp_path / "index"), "--reader-model", str(tiny_reader)]
    port = free_port()
    log = tmp_path / "serve.log"
    with start_server(args, port, log):
        assert list(private_tmp.glob("qa-serve-*")), "the server made no downloads folder where the test looks"
        os.kill(serving_pid(port), signum)
        deadline = time.monotonic() + 60
        while list(private_tmp.glob("qa-serve-*")) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [p.name for p in private_tmp.glob("qa-serve-*")]
    assert left == [], log.read_text(encoding="utf-8")
    assert "Traceback" not in log.read_text(encoding="utf-8")


def test_an_article_of_only_stop_words_is_indexed_and_asked(place: dict[str, str], tmp_path: Path) -> None:
    """BM25 has no word to index in it (bm25s failed with a traceback); it must still be indexed
    and asked like any article, with nothing printed but the result."""
    seeds, index = tmp_path / "seeds", tmp_path / "index"
    seeds.mkdir()
    (seeds / "a.txt").write_text("It was the.\n", encoding="utf-8")
    env = {**place, "QA_SEEDS": str(seeds), "QA_INDEX_DIR": str(index)}
    built = qa(env, "index")
    err = built.stderr.decode("utf-8", "replace")
    assert built.returncode == 0 and "Traceback" not in err and "Warning" not in err, err
    asked = qa(env, "ask", "Who was it?", "--json")
    assert asked.returncode == 0, asked.stderr.decode("utf-8", "replace")
    answer = json.loads(asked.stdout)
    assert answer["question"] == "Who was it?"


def test_the_question_limit_is_inclusive_and_its_message_says_so() -> None:
    from qa.assistant import MAX_QUESTION_CHARS, check_question
    from qa.errors import InputError

    assert check_question("x" * MAX_QUESTION_CHARS) == "x" * MAX_QUESTION_CHARS
    with pytest.raises(InputError, match=f"{MAX_QUESTION_CHARS + 1} characters long; keep it to 500 at most"):
        check_question("x" * (MAX_QUESTION_CHARS + 1))
