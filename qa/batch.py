"""Batch files: questions in (.jsonl, .csv, .txt or stdin), cited answers out (.jsonl or .csv).

A bad record does not stop the batch: it is kept in its place with an `error` field, so
output record N always answers input record N.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from qa.documents import read_text_file
from qa.errors import InputError
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
        lines = [line.strip() for line in text.splitlines()]
        return [BatchItem(i, q) for i, q in enumerate((q for q in lines if q), 1)]
    if fmt == "csv":
        return _parse_csv(text)
    if fmt == "jsonl":
        return _parse_jsonl(text)
    raise InputError(f"input format must be one of {', '.join(FORMATS)}, got {fmt!r}")


def _parse_jsonl(text: str) -> list[BatchItem]:
    items = []
    position = 0
    for line_no, line in enumerate(text.splitlines(), 1):
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
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or "question" not in [f.strip() for f in reader.fieldnames]:
        raise InputError(
            "the CSV has no 'question' column; add a header row with a 'question' column (and optional 'id')"
        )
    reader.fieldnames = [f.strip() for f in reader.fieldnames]
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
        import sys

        text = (stdin or sys.stdin).read()
        if fmt is None:
            first = next((line for line in text.splitlines() if line.strip()), "")
            fmt = "jsonl" if first.lstrip().startswith("{") else "txt"
        return parse_questions(text, detect_format("-", fmt))
    path = Path(source)
    fmt = detect_format(source, fmt)
    text = read_text_file(path, "questions file", "check the path")
    return parse_questions(text, fmt)


def answer_items(
    assistant: Any, items: list[BatchItem], top_k: int = 1, progress: bool = False, doc_id: str | None = None
) -> list[dict[str, Any]]:
    """Answer every readable item (one batched call); unreadable ones keep their place with an error."""
    readable = [it for it in items if it.error is None]
    results = iter(assistant.ask_many([it.question for it in readable], top_k=top_k, progress=progress, doc_id=doc_id))
    records = []
    for it in items:
        if it.error is not None:
            records.append(Result(question=it.question, error=it.error).to_record(it.id))
        else:
            records.append(next(results).to_record(it.id))
    return records


def write_records(records: Iterable[dict[str, Any]], out: IO[str], fmt: str) -> None:
    if fmt == "jsonl":
        for r in records:
            out.write(json.dumps(r, ensure_ascii=False) + "\n")
    elif fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=list(RECORD_FIELDS), lineterminator="\n")
        writer.writeheader()
        for r in records:
            writer.writerow({k: "" if r.get(k) is None else r[k] for k in RECORD_FIELDS})
    else:
        raise InputError(f"output format must be one of {', '.join(OUTPUT_FORMATS)}, got {fmt!r}")
