"""Batch files: questions in (.jsonl, .csv, .txt or stdin), cited answers out (.jsonl or .csv).

A bad record does not stop the batch: it is kept in its place with an `error` field, so
output record N always answers input record N. `run_batch` is `qa batch`'s whole run: the
records written as they are answered, counted, and kept on Ctrl+C or SIGTERM.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from qa.errors import InputError
from qa.files import OutputFile, printable, read_input, read_stdin, split_lines
from qa.interrupts import interrupted_status, sigterm_as_interrupt
from qa.types import RECORD_FIELDS, Result

FORMATS = ("jsonl", "csv", "txt")
OUTPUT_FORMATS = ("jsonl", "csv")


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
) -> Iterator[dict[str, Any]]:
    """One record per item, in input order, as soon as its batch is answered (so an interrupted
    run keeps what is done); unreadable items keep their place with an error."""
    readable = [it for it in items if it.error is None]
    results = assistant.iter_answers(
        [it.question for it in readable],
        top_k=top_k,
        progress=progress,
        doc_id=doc_id,
        total=len(items),
        min_confidence=min_confidence,
    )
    for it in items:
        if it.error is not None:
            yield Result(question=printable(it.question), error=it.error).to_record(it.id)
        else:
            yield next(results).to_record(it.id)
    # Let the answers' generator run to its end now, so its progress bar closes (at N/N) before
    # the caller's summary, not whenever the generator happens to be collected.
    next(results, None)


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


def output_format(out_path: str | None, explicit: str | None = None) -> str:
    """`--format`, else from `--out`'s suffix: csv for .csv, else jsonl."""
    if explicit is not None:
        return explicit
    return "csv" if out_path and out_path.lower().endswith(".csv") else "jsonl"


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

    def count(self, record: dict[str, Any]) -> None:
        if record["error"]:
            self.errors += 1
        elif record["answer"] is not None:
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
            return f"Interrupted: kept {self.written} of {self.total} records (in input order) in {self.where}."
        text = f"Wrote {self.written} records to {self.where} ({self.answered} answered, {self.abstained} abstained"
        if not self.errors:
            return f"{text}, 0 errors)."
        plural = "s" if self.errors != 1 else ""
        return f"{text}); {self.errors} record{plural} had an error: see the 'error' field."


def run_batch(
    make_assistant: Callable[[], Any],
    items: list[BatchItem],
    out: OutputFile | None,
    fmt: str,
    top_k: int = 1,
    doc_id: str | None = None,
    progress: bool = True,
) -> BatchRun:
    """Answer every item and write its record as soon as it is answered, in input order, to `out`
    (an `OutputFile` checked before the work, committed at the end) or to standard output.

    Ctrl+C or SIGTERM stops the run and keeps what was answered: the records so far go where they
    were asked to go (an output with none is left as it was), and the run says it was interrupted.
    A failure leaves `out`'s target as it was. The assistant is made inside, so that a failure to
    make it leaves `out` untouched too, and closed at the end when it has a `close` (one answering
    on a Ray cluster leaves it).
    """
    writer = RecordWriter(out.stream if out is not None else sys.stdout, fmt)
    run = BatchRun(total=len(items), where="standard output" if out is None else out.shown)
    records: Iterator[dict[str, Any]] | None = None
    assistant: Any = None
    # The handler covers the except clause too, so that saving the records is not cut short.
    with sigterm_as_interrupt():
        try:
            assistant = make_assistant()
            records = iter_records(assistant, items, top_k=top_k, progress=progress, doc_id=doc_id)
            for record in records:
                writer.write(record)
                run.count(record)
                if out is None and writer.count % 16 == 0:
                    writer.out.flush()
            if out is not None:
                out.commit()
        except KeyboardInterrupt as exc:
            if records is not None:
                records.close()  # ends the progress bar's line, so the summary stands on its own
            if out is not None and writer.count:
                out.commit()
            elif out is not None:
                run.where = f"nothing; {out.shown} is unchanged"
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
