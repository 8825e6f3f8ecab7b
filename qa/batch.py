"""Batch files: questions in (.jsonl, .csv, .txt or stdin), cited answers out (.jsonl or .csv).

A bad record does not stop the batch: it is kept in its place with an `error` field, so
output record N always answers input record N. `run_batch` is `qa batch`'s whole run: the
records written as they are answered, counted, and kept on Ctrl+C or SIGTERM (beside `--out`, in
NAME.partial, when `--out` held a file: that file stays whole). `--resume` (`load_earlier`) keeps
the records of such a run and asks only the rest; see docs/batch.md.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from qa.errors import InputError
from qa.files import OutputFile, printable, read_input, read_stdin, split_lines
from qa.interrupts import interrupted_status, sigterm_as_interrupt
from qa.language import english_note
from qa.types import RECORD_FIELDS, Result

FORMATS = ("jsonl", "csv", "txt")
OUTPUT_FORMATS = ("jsonl", "csv")
PARTIAL_SUFFIX = ".partial"  # answers.jsonl -> answers.jsonl.partial


@dataclass(frozen=True)
class BatchItem:
    id: Any
    question: str
    error: str | None = None  # set when the record itself could not be read


def detect_format(name: str, explicit: str | None = None) -> str:
    if explicit:
        if explicit not in FORMATS:
            raise InputError(f"input format must be one of {', '.join(FORMATS)}, got {explicit!r}")
        return explicit
    suffix = Path(name).suffix.lower().lstrip(".")
    if suffix == "json":
        suffix = "jsonl"
    if suffix not in FORMATS:
        raise InputError(
            f"cannot tell the format of {name!r}; use a .jsonl, .csv or .txt file (or pass --input-format)"
        )
    return suffix


def parse_questions(text: str, fmt: str) -> list[BatchItem]:
    if fmt == "txt":
        lines = [line.strip() for line in split_lines(text)]
        return [BatchItem(i, q) for i, q in enumerate((q for q in lines if q), 1)]
    if fmt == "csv":
        return _parse_csv(text)
    if fmt == "jsonl":
        return _parse_jsonl(text)
    raise InputError(f"input format must be one of {', '.join(FORMATS)}, got {fmt!r}")


def _parse_jsonl(text: str) -> list[BatchItem]:
    items = []
    position = 0
    for line_no, line in enumerate(split_lines(text), 1):
        if not line.strip():
            continue
        position += 1
        try:
            record = json.loads(line)
        except ValueError as exc:
            items.append(BatchItem(position, "", f"line {line_no} is not valid JSON ({exc.msg})"))
            continue
        if not isinstance(record, dict):
            items.append(BatchItem(position, "", f"line {line_no} is not a JSON object"))
            continue
        rid = record.get("id", position)
        q = record.get("question")
        if not isinstance(q, str):
            items.append(BatchItem(rid, "", f"line {line_no} has no 'question' string"))
            continue
        items.append(BatchItem(rid, q))
    return items


def _parse_csv(text: str) -> list[BatchItem]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    # Spreadsheets write "Question" or " question ": match the header loosely.
    names = [f.strip().lower() for f in reader.fieldnames or []]
    if "question" not in names:
        raise InputError(
            "the CSV has no 'question' column; add a header row with a 'question' column (and optional 'id')"
        )
    reader.fieldnames = names
    items = []
    for position, row in enumerate(reader, 1):
        rid = row.get("id") or position
        q = row.get("question")
        if q is None or None in row:
            items.append(BatchItem(rid, q or "", f"row {position} does not have the header's columns"))
            continue
        items.append(BatchItem(rid, q))
    return items


def check_batch_sources(source: str, article: str | None, out: str | None, resume: bool) -> None:
    """Refuse the combinations of `qa batch` arguments that cannot work, before anything is read."""
    if source == "-" and article == "-":
        raise InputError(
            "the questions (INPUT -) and the article (--article -) cannot both come from standard input; "
            "give one of them as a file"
        )
    if resume and out is None:
        raise InputError("--resume continues the file of --out; give the --out of the interrupted run")


def read_questions(source: str, fmt: str | None = None, stdin: IO[str] | None = None) -> list[BatchItem]:
    """Read a questions file, or standard input when source is '-' (format from --input-format, else txt/jsonl)."""
    if source == "-":
        text = read_stdin(stdin)
        if fmt is None:
            first = next((line for line in split_lines(text) if line.strip()), "")
            fmt = "jsonl" if first.lstrip().startswith("{") else "txt"
        items = parse_questions(text, detect_format("-", fmt))
        where = "standard input"
    else:
        text = read_input(source, "questions file", "check the path")  # a missing file is the first thing to say
        items = parse_questions(text, detect_format(source, fmt))
        where = source
    if not items:
        raise InputError(f"{where} holds no questions; put one question a line (or a 'question' field/column)")
    return items


def iter_records(
    assistant: Any,
    items: list[BatchItem],
    top_k: int = 1,
    progress: bool = False,
    doc_id: str | None = None,
    min_confidence: float | None = None,
    done: Sequence[dict[str, Any] | None] | None = None,
) -> Iterator[dict[str, Any]]:
    """One record per item, in input order, as soon as its batch is answered (so an interrupted
    run keeps what is done); unreadable items keep their place with an error. `done` holds an
    earlier run's record for each item (None where it has none): those are kept, not asked again."""
    done = [None] * len(items) if done is None else done
    asked = items_to_ask(items, done)
    results = assistant.iter_answers(
        [items[i].question for i in asked],
        top_k=top_k,
        progress=progress,
        doc_id=doc_id,
        total=len(items),
        min_confidence=min_confidence,
    )
    asked_set = set(asked)
    for i, it in enumerate(items):
        fresh = next(results).to_record(it.id) if i in asked_set else None
        if done[i] is not None:
            yield done[i]
        elif it.error is not None:
            yield Result(question=printable(it.question), error=it.error).to_record(it.id)
        else:
            yield fresh
    # Let the answers' generator run to its end now, so its progress bar closes (at N/N) before
    # the caller's summary, not whenever the generator happens to be collected.
    next(results, None)


def items_to_ask(items: list[BatchItem], done: Sequence[dict[str, Any] | None]) -> list[int]:
    """The items to ask (their indices, in order): the unanswered ones, with the rest of their batch.

    A run asks its readable questions in batches of QUESTION_BATCH, and an answer's last digits
    depend on the batch it was read in (its windows are padded to the batch's longest). So that a
    resumed run writes the very bytes an uninterrupted one would, a batch holding an unanswered
    question is asked whole (its answered questions keep their earlier records). A run stops between
    batches, so this is the unanswered questions alone, but for a batch cut while being written.
    """
    from qa.assistant import QUESTION_BATCH  # here: the assistant's imports are heavy

    readable = [i for i, it in enumerate(items) if it.error is None]
    batches = [readable[b : b + QUESTION_BATCH] for b in range(0, len(readable), QUESTION_BATCH)]
    return [i for batch in batches if any(done[j] is None for j in batch) for i in batch]


def answer_items(assistant: Any, items: list[BatchItem], **options: Any) -> list[dict[str, Any]]:
    """Every record of `iter_records` (same options) in a list."""
    return list(iter_records(assistant, items, **options))


class RecordWriter:
    """Writes batch records one at a time as JSON lines or CSV (header first)."""

    def __init__(self, out: IO[str], fmt: str) -> None:
        if fmt not in OUTPUT_FORMATS:
            raise InputError(f"output format must be one of {', '.join(OUTPUT_FORMATS)}, got {fmt!r}")
        self.out = out
        self.fmt = fmt
        self.count = 0
        self._csv = csv.DictWriter(out, fieldnames=list(RECORD_FIELDS), lineterminator="\n") if fmt == "csv" else None
        if self._csv is not None:
            self._csv.writeheader()

    def write(self, record: dict[str, Any]) -> None:
        if self._csv is not None:
            self._csv.writerow({k: "" if record.get(k) is None else record[k] for k in RECORD_FIELDS})
        else:
            self.out.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.count += 1


def write_records(records: Iterable[dict[str, Any]], out: IO[str], fmt: str) -> int:
    writer = RecordWriter(out, fmt)
    for r in records:
        writer.write(r)
    return writer.count


def batch_output(out_path: str | None, out_format: str | None, inputs: list[str]) -> tuple[OutputFile | None, str]:
    """`--out` checked (a folder, a device, an input file itself, an unwritable place) and its format,
    before any work; None writes JSON lines to stdout. A refused format leaves no partial file."""
    out = OutputFile(out_path, inputs=inputs) if out_path is not None else None
    try:
        return out, output_format(out_path, out_format)
    except InputError:
        if out is not None:
            out.discard()
        raise


OUT_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}


def output_format(out_path: str | None, explicit: str | None = None) -> str:
    """`--format`, else from `--out`'s suffix; JSON lines to stdout. A name of another kind is refused:
    `answers.xlsx` written as JSON lines would look like success and open as garbage."""
    if explicit is not None:
        return explicit
    if out_path is None:
        return "jsonl"
    fmt = OUT_SUFFIXES.get(Path(out_path).suffix.lower())
    if fmt is None:
        raise InputError(
            f"cannot tell which format to write {out_path!r} in; name it .jsonl or .csv, or pass --format jsonl|csv"
        )
    return fmt


@dataclass
class BatchRun:
    """What a batch run did: how many records it wrote where, of what kind, and how it ended."""

    total: int  # records asked for (the input's)
    where: str
    written: int = 0
    answered: int = 0
    abstained: int = 0
    errors: int = 0
    interrupted: KeyboardInterrupt | None = None  # Ctrl+C, or SIGTERM (`qa.interrupts.Terminated`)
    resumable: bool = False  # an interrupted run whose records `--resume` can continue from
    not_english: int = 0  # questions that do not look like English (`qa.language`)

    def count(self, record: dict[str, Any]) -> None:
        if record["error"]:
            self.errors += 1
        elif record["answer"] not in (None, ""):  # "": an abstention read back from a CSV
            self.answered += 1
        else:
            self.abstained += 1

    @property
    def exit_status(self) -> int:
        """130/143 when stopped by Ctrl+C/SIGTERM; 1 when a record had an error, so a script or CI
        job notices it without parsing the output (every record is still written, in order); else 0."""
        if self.interrupted is not None:
            return interrupted_status(self.interrupted)
        return 1 if self.errors else 0

    def summary(self) -> str:
        if self.interrupted is not None:
            text = f"Interrupted: kept {self.written} of {self.total} records (in input order) in {self.where}"
            return f"{text}; run the same command with --resume to answer the rest." if self.resumable else f"{text}."
        text = f"Wrote {self.written} records to {self.where} ({self.answered} answered, {self.abstained} abstained"
        plural = "s" if self.errors != 1 else ""
        text = (
            f"{text}, 0 errors)."
            if not self.errors
            else f"{text}); {self.errors} record{plural} had an error: see the 'error' field."
        )
        if self.not_english:
            they = "1 question does" if self.not_english == 1 else f"{self.not_english} questions do"
            text += f" {they} not look like English: the reader reads English."
        return text


def partial_path(out: OutputFile) -> tuple[Path, str]:
    """Where an interrupted run keeps its records when `--out` held a file, and that path as shown:
    NAME.partial beside the file (beside a symlink's target, where the run's temporary file is)."""
    path = out.target.with_name(out.target.name + PARTIAL_SUFFIX)
    return path, (os.fspath(path) if out.path.is_symlink() else out.shown + PARTIAL_SUFFIX)


@dataclass(frozen=True)
class Earlier:
    """The records an earlier run of the same batch wrote, which `--resume` keeps: by `record_key`."""

    where: str | None  # the file they came from; None when there was none
    records: dict[str, dict[str, Any]] = field(default_factory=dict)

    def done(self, items: list[BatchItem], fmt: str) -> list[dict[str, Any] | None]:
        return [self.records.get(record_key(it.id, fmt)) for it in items]

    def plan(self, done: Sequence[dict[str, Any] | None], asked: int, out: str) -> str:
        if self.where is None:
            return f"Resuming: no earlier records in {out} or beside it; asking all {asked} question(s)."
        kept = sum(d is not None for d in done)
        return f"Resuming from {self.where}: {kept} of {len(done)} records kept; asking {asked} question(s)."


def record_key(record_id: Any, fmt: str) -> str:
    """An id as the output writes it, so an input's id and a record's id read back compare equal."""
    if fmt == "csv":
        return "" if record_id is None else str(record_id)
    return json.dumps(record_id, ensure_ascii=False)


def load_earlier(out: OutputFile, fmt: str, items: list[BatchItem], source: str) -> Earlier:
    """`--resume`: the records of an interrupted run, from NAME.partial beside `--out`, else from
    `--out` itself (a run that had no file to keep stops there); checked against the questions
    (`source`) before any model loads, so a resume from the wrong file is one line, not a mixed output."""
    partial, partial_shown = partial_path(out)
    path, where = (partial, partial_shown) if partial.is_file() else (out.target, out.shown)
    if not path.is_file():
        return Earlier(None)
    keys = [record_key(it.id, fmt) for it in items]
    if len(set(keys)) < len(keys):
        twice = next(k for k in keys if keys.count(k) > 1)
        raise InputError(
            f"{source} gives the id {twice} to more than one question; --resume matches answers by id: "
            "give each question its own id, or run without --resume"
        )
    asked = dict(zip(keys, items, strict=True))
    records: dict[str, dict[str, Any]] = {}
    for record in read_records(read_input(path, "the earlier records", "run without --resume"), fmt, where):
        key = record_key(record["id"], fmt)
        item = asked.get(key)
        if item is None:
            raise InputError(
                f"{where} holds an answer for id {key}, which {source} does not ask; resume with the "
                "questions of that run, or run without --resume"
            )
        if str(record["question"]).strip() != printable(item.question).strip():
            raise InputError(
                f"{where} answers {record['question']!r} for id {key}, but {source} asks {item.question!r}; "
                "resume with the questions of that run, or run without --resume"
            )
        records.setdefault(key, record)
    return Earlier(where, records)


def read_records(text: str, fmt: str, where: str) -> list[dict[str, Any]]:
    """`qa batch`'s own output read back: records with its columns, in its order, else one InputError."""
    fix = "resume from a file qa batch wrote (same --format), or run without --resume"
    if fmt == "csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if reader.fieldnames != list(RECORD_FIELDS):
            raise InputError(f"{where} does not have qa batch's CSV columns ({','.join(RECORD_FIELDS)}); {fix}")
        rows = list(reader)
        bad = next((n for n, row in enumerate(rows, 1) if None in row or None in row.values()), None)
        if bad is not None:
            raise InputError(f"row {bad} of {where} does not have the header's columns; {fix}")
        return rows
    records = []
    for line_no, line in enumerate(split_lines(text), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict) or list(record) != list(RECORD_FIELDS):
            raise InputError(f"line {line_no} of {where} is not a qa batch record (JSON with its fields); {fix}")
        records.append(record)
    return records


def run_batch(
    make_assistant: Callable[[], Any],
    items: list[BatchItem],
    out: OutputFile | None,
    fmt: str,
    top_k: int = 1,
    doc_id: str | None = None,
    progress: bool = True,
    earlier: Earlier | None = None,
    log: Callable[[str], None] | None = None,
) -> BatchRun:
    """Answer every item and write its record as soon as it is answered, in input order, to `out`
    (an `OutputFile` checked before the work, committed at the end) or to standard output.

    Ctrl+C or SIGTERM stops the run and keeps what was answered: when `out` held a file, that file
    stays as it was and the records go beside it (`partial_path`); else they go to `out` (an output
    with none is left as it was). `earlier` (`--resume`) holds an interrupted run's records: they
    are kept in their places, and only the rest is asked. A failure leaves `out`'s target as it was.
    The assistant is made inside, and only when there is something to ask, so that a failure to
    make it leaves `out` untouched too; it is closed at the end when it has a `close` (one answering
    on a Ray cluster leaves it).
    """
    writer = RecordWriter(out.stream if out is not None else sys.stdout, fmt)
    run = BatchRun(total=len(items), where="standard output" if out is None else out.shown)
    run.not_english = sum(it.error is None and english_note(it.question) is not None for it in items)
    done = earlier.done(items, fmt) if earlier is not None else [None] * len(items)
    if earlier is not None and log is not None:
        log(earlier.plan(done, len(items_to_ask(items, done)), out.shown if out is not None else "--out"))
    records: Iterator[dict[str, Any]] | None = None
    assistant: Any = None
    # The handler covers the except clause too, so that saving the records is not cut short.
    with sigterm_as_interrupt():
        try:
            assistant = make_assistant() if items_to_ask(items, done) else _NothingToAsk()
            records = iter_records(assistant, items, top_k=top_k, progress=progress, doc_id=doc_id, done=done)
            for record in records:
                writer.write(record)
                run.count(record)
                if out is None and writer.count % 16 == 0:
                    writer.out.flush()
            if out is not None:
                _commit(out)
        except KeyboardInterrupt as exc:
            if records is not None:
                records.close()  # ends the progress bar's line, so the summary stands on its own
            _keep_interrupted(run, writer, out, done)
            run.interrupted = exc
        except OSError as exc:
            if out is None:
                raise
            out.discard()
            raise InputError(f"cannot write {out.shown} ({exc.strerror}); choose another path for --out") from exc
        finally:
            run.written = writer.count
            if out is not None and not out.closed:
                out.discard()  # a failure before the end: the target keeps what it held
            if hasattr(assistant, "close"):
                assistant.close()  # one answering on a Ray cluster (`qa.distributed`) leaves it
    return run


class _NothingToAsk:
    """The assistant of a resumed run whose every question was answered: no model is loaded."""

    def iter_answers(self, questions: Sequence[str], **options: Any) -> Iterator[Any]:
        return iter(())


def _commit(out: OutputFile) -> None:
    """The whole output in place; an interrupted run's records beside it are then out of date."""
    out.commit()
    with contextlib.suppress(FileNotFoundError):
        partial_path(out)[0].unlink()


def _keep_interrupted(
    run: BatchRun, writer: RecordWriter, out: OutputFile | None, done: Sequence[dict[str, Any] | None]
) -> None:
    """Save an interrupted run's records: those answered, and an earlier run's past the point reached."""
    if out is None:
        return
    try:
        for record in done[writer.count :]:
            if record is not None:
                writer.write(record)  # in input order still: the unanswered ones are left out
    except OSError as exc:
        out.discard()
        raise InputError(f"cannot write {out.shown} ({exc.strerror}); choose another path for --out") from exc
    if not writer.count:
        run.where = f"nothing; {out.shown} is unchanged"
    elif out.existed:  # the file the user had stays whole: the records go beside it
        path, shown = partial_path(out)
        out.commit(to=path)
        run.where, run.resumable = f"{shown} ({out.shown} is unchanged)", True
    else:
        _commit(out)
        run.resumable = True
