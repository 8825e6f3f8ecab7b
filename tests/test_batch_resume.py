"""An interrupted `qa batch` never costs the old --out file, and `--resume` asks only the rest.

Through the real `qa` process, stopped by a signal as a user or a service manager stops it (tiny
reader, real embedder: these are about records and files, not answers), and `run_batch` in
process for the cases a signal cannot aim at (a stop in the middle of a resumed run, the checks).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import as_a_user_starts_it

from qa.assistant import QUESTION_BATCH
from qa.batch import BatchItem, Earlier, load_earlier, read_questions, record_key, run_batch
from qa.errors import InputError
from qa.files import OutputFile
from qa.types import RECORD_FIELDS, Answer, Result

ROOT = Path(__file__).resolve().parent.parent
ARTICLE_NAME = "pentagon-ukraine-long-range-strikes.txt"
QUESTIONS = ["Who devised the process?", "When did Trump meet Putin?", "Where is Elmendorf?"]
MANY = 6 * QUESTION_BATCH  # enough batches for a stop to land in the middle


@pytest.fixture(scope="module")
def place(tmp_path_factory: pytest.TempPathFactory, tiny_reader: Path) -> dict[str, str]:
    """Private articles and a ready index, and a questions file of MANY questions."""
    seeds = tmp_path_factory.mktemp("resume-seeds")
    shutil.copy(ROOT / "seeds" / ARTICLE_NAME, seeds / ARTICLE_NAME)
    index = tmp_path_factory.mktemp("resume-index")
    env = {"QA_SEEDS": str(seeds), "QA_INDEX_DIR": str(index), "QA_READER_MODEL": str(tiny_reader)}
    done = qa(env, "index")
    assert done.returncode == 0, done.stderr
    return env


def qa(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "HF_HUB_OFFLINE": "1", **env}
    cmd = [sys.executable, "-m", "qa.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=full, cwd=cwd, timeout=600, check=False)


def questions_file(folder: Path, fmt: str) -> Path:
    questions = [f"{QUESTIONS[i % 3]} ({i})" for i in range(MANY)]
    if fmt == "csv":  # ids of the user's own, not positions
        path = folder / "q.csv"
        path.write_text("id,question\n" + "".join(f"q-{i},{q}\n" for i, q in enumerate(questions)), encoding="utf-8")
    else:
        path = folder / "q.txt"
        path.write_text("".join(f"{q}\n" for q in questions), encoding="utf-8")
    return path


def stop_midway(place: dict[str, str], folder: Path, args: list[str], signum: int) -> subprocess.CompletedProcess[str]:
    """`qa batch ARGS` in `folder`, stopped by `signum` once some records sit in its temporary file."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "qa.cli", "batch", *args],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **place},
        cwd=folder,
        preexec_fn=as_a_user_starts_it,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        temporary = [p for p in folder.iterdir() if p.name.startswith(".") and p.stat().st_size > 0]
        if temporary:
            break
        time.sleep(0.05)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", err)


def one_summary(err: str, start: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(("Interrupted", "Wrote", "Resuming"))]
    said = [line for line in lines if line.startswith(start)]
    assert len(said) == 1, err
    return said[0]


def test_an_interrupted_batch_keeps_the_old_out_whole_and_resume_finishes_it(
    place: dict[str, str], tmp_path: Path
) -> None:
    source = questions_file(tmp_path, "txt")
    old = tmp_path / "answers.jsonl"
    old.write_bytes(b'{"an earlier run": "the user\'s, kept whole"}\n')
    stopped = stop_midway(place, tmp_path, [source.name, "--out", "answers.jsonl"], signal.SIGINT)
    assert stopped.returncode == 130, stopped.stderr
    line = one_summary(stopped.stderr, "Interrupted")
    partial = tmp_path / "answers.jsonl.partial"
    kept = partial.read_text(encoding="utf-8").splitlines()
    assert 0 < len(kept) < MANY
    assert line == (
        f"Interrupted: kept {len(kept)} of {MANY} records (in input order) in answers.jsonl.partial "
        "(answers.jsonl is unchanged); run the same command with --resume to answer the rest."
    )
    assert old.read_bytes() == b'{"an earlier run": "the user\'s, kept whole"}\n'
    assert [json.loads(r)["id"] for r in kept] == list(range(1, len(kept) + 1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["answers.jsonl", "answers.jsonl.partial", "q.txt"]

    resumed = qa(place, "batch", source.name, "--out", "answers.jsonl", "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    asked = MANY - len(kept) // QUESTION_BATCH * QUESTION_BATCH  # the batch a stop cut is asked whole
    assert one_summary(resumed.stderr, "Resuming") == (
        f"Resuming from answers.jsonl.partial: {len(kept)} of {MANY} records kept; asking {asked} question(s)."
    )
    whole = qa(place, "batch", source.name, "--out", "whole.jsonl", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr
    assert old.read_bytes() == (tmp_path / "whole.jsonl").read_bytes()  # byte for byte, in input order
    assert sorted(p.name for p in tmp_path.iterdir()) == ["answers.jsonl", "q.txt", "whole.jsonl"]


def test_a_batch_stopped_before_its_out_existed_writes_there_and_resumes_from_it(
    place: dict[str, str], tmp_path: Path
) -> None:
    source = questions_file(tmp_path, "csv")
    stopped = stop_midway(place, tmp_path, [source.name, "--out", "answers.csv"], signal.SIGTERM)
    assert stopped.returncode == 143, stopped.stderr
    line = one_summary(stopped.stderr, "Interrupted")
    kept = list(csv.DictReader(io.StringIO((tmp_path / "answers.csv").read_text(encoding="utf-8"), newline="")))
    assert 0 < len(kept) < MANY and [r["id"] for r in kept] == [f"q-{i}" for i in range(len(kept))]
    assert line.endswith("in answers.csv; run the same command with --resume to answer the rest."), line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["answers.csv", "q.csv"]

    resumed = qa(place, "batch", source.name, "--out", "answers.csv", "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert one_summary(resumed.stderr, "Resuming").startswith(f"Resuming from answers.csv: {len(kept)} of {MANY}")
    assert one_summary(resumed.stderr, "Wrote").startswith(f"Wrote {MANY} records to answers.csv")
    whole = qa(place, "batch", source.name, "--out", "whole.csv", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr
    assert (tmp_path / "answers.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()
    again = qa(place, "batch", source.name, "--out", "answers.csv", "--resume", cwd=tmp_path)
    assert again.returncode == 0 and "questions:" not in again.stderr, again.stderr  # nothing left: no model loads
    assert (
        one_summary(again.stderr, "Resuming")
        == f"Resuming from answers.csv: {MANY} of {MANY} records kept; asking 0 question(s)."
    )
    assert (tmp_path / "answers.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()


def test_resume_from_the_records_of_other_questions_is_one_line_before_any_work(
    place: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "q.txt").write_text("".join(f"{q}\n" for q in QUESTIONS), encoding="utf-8")
    out = tmp_path / "answers.jsonl"
    other = {name: None for name in RECORD_FIELDS} | {"id": 2, "question": "Who else?"}
    out.write_text(json.dumps(other) + "\n", encoding="utf-8")
    before = out.read_bytes()
    done = qa(place, "batch", "q.txt", "--out", "answers.jsonl", "--resume", cwd=tmp_path)
    err = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(err) == 1, done.stderr
    assert err[0] == (
        "Error: answers.jsonl answers 'Who else?' for id 2, but q.txt asks 'When did Trump meet Putin?'; "
        "resume with the questions of that run, or run without --resume"
    )
    assert out.read_bytes() == before
    no_out = qa(place, "batch", "q.txt", "--resume", cwd=tmp_path)
    assert no_out.returncode == 1 and no_out.stderr.strip() == (
        "Error: --resume continues the file of --out; give the --out of the interrupted run"
    )


# --- in process: a stop inside a resumed run, and the checks ---------------------------------------


class Echo:
    """Answers each question with its first word (read as a whole), counting what it is asked."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.asked: list[str] = []
        self.stop_after = stop_after

    def iter_answers(self, questions: list[str], **options: Any) -> Iterator[Result]:
        for q in questions:
            if self.stop_after is not None and len(self.asked) == self.stop_after:
                raise KeyboardInterrupt
            self.asked.append(q)
            word = q.split()[0]
            yield Result(q, [Answer(word, 0, len(word), 0.5, "a.txt", 0, q, 0, len(q))])


def items_of(n: int) -> list[BatchItem]:
    # Values the CSV writer must quote, to check that records read back are written as they were.
    return [BatchItem(i, f'Q{i}, "quoted"\nand more') for i in range(1, n + 1)]


def run_to(path: Path, items: list[BatchItem], assistant: Echo, fmt: str, earlier: Earlier | None = None) -> Any:
    return run_batch(lambda: assistant, items, OutputFile(path), fmt, progress=False, earlier=earlier)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_stop_inside_a_resumed_run_keeps_the_earlier_records_too(tmp_path: Path, fmt: str) -> None:
    items = items_of(3 * QUESTION_BATCH)
    whole = tmp_path / f"whole.{fmt}"
    run_to(whole, items, Echo(), fmt)
    out = tmp_path / f"answers.{fmt}"
    # An earlier run's records of the first and the last batch, as a stop and an edit could leave them.
    if fmt == "csv":  # its rows hold quoted newlines: cut it by row
        rows = list(csv.reader(io.StringIO(whole.read_text(encoding="utf-8"), newline="")))
        buf = io.StringIO(newline="")
        csv.writer(buf, lineterminator="\n").writerows(rows[: 1 + QUESTION_BATCH] + rows[1 + 2 * QUESTION_BATCH :])
        out.write_text(buf.getvalue(), encoding="utf-8", newline="")
    else:
        lines = whole.read_text(encoding="utf-8").splitlines(keepends=True)
        out.write_text("".join(lines[:QUESTION_BATCH] + lines[2 * QUESTION_BATCH :]), encoding="utf-8")
    stopping = Echo(stop_after=QUESTION_BATCH // 2)  # a stop inside the middle batch, the one to ask
    earlier = load_earlier(OutputFile(out), fmt, items, "q")
    run = run_to(out, items, stopping, fmt, earlier)
    assert run.interrupted is not None and run.written == 2 * QUESTION_BATCH + QUESTION_BATCH // 2
    assert stopping.asked == [it.question for it in items[QUESTION_BATCH : 2 * QUESTION_BATCH]][: QUESTION_BATCH // 2]
    partial = tmp_path / f"answers.{fmt}.partial"
    finishing = Echo()
    run = run_to(out, items, finishing, fmt, load_earlier(OutputFile(out), fmt, items, "q"))
    assert run.interrupted is None and run.written == len(items) and not partial.exists()
    assert len(finishing.asked) == QUESTION_BATCH  # the batch the stop cut, whole: the same batches as `whole`
    assert out.read_bytes() == whole.read_bytes()


def test_an_earlier_file_that_is_not_a_batch_output_or_repeats_ids_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "answers.jsonl"
    out.write_text('{"id": 1, "answer": "x"}\n', encoding="utf-8")
    items = items_of(3)
    with pytest.raises(InputError, match=r"line 1 of .*answers.jsonl is not a qa batch record"):
        load_earlier(OutputFile(out), "jsonl", items, "q")
    with pytest.raises(InputError, match=r"does not have qa batch's CSV columns"):
        load_earlier(OutputFile(out), "csv", items, "q")
    with pytest.raises(InputError, match="q gives the id 1 to more than one question"):
        load_earlier(OutputFile(out), "jsonl", [*items, BatchItem(1, "again?")], "q")
    out.unlink()
    assert load_earlier(OutputFile(out), "jsonl", items, "q") == Earlier(None)
    assert record_key(7, "jsonl") != record_key("7", "jsonl") and record_key(7, "csv") == record_key("7", "csv")
    assert [it.id for it in read_questions(str(_txt(tmp_path)))] == [1, 2]


def _txt(folder: Path) -> Path:
    path = folder / "q.txt"
    path.write_text("one?\ntwo?\n", encoding="utf-8")
    return path
