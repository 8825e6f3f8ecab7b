"""The `qa` command line: a thin layer over the Python API.

Library code raises QAError subclasses; `main` turns them into one line on stderr and exit
status 1, so a user mistake never shows a traceback. Data goes to stdout, progress and logs
to stderr. Every option that names a folder or model also reads an environment variable.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from qa.errors import QAError


def _err(msg: str) -> None:
    click.echo(msg, err=True)


def seeds_option(f: Callable) -> Callable:
    return click.option(
        "--seeds",
        default=None,
        type=click.Path(file_okay=False),
        help="Folder of .txt/.md articles [env QA_SEEDS; default seeds/ here, else the project's].",
    )(f)


def index_option(f: Callable) -> Callable:
    return click.option(
        "--index-dir",
        default=None,
        type=click.Path(file_okay=False),
        help="Where the index lives [env QA_INDEX_DIR; default index/ beside the seeds folder used].",
    )(f)


def embed_option(f: Callable) -> Callable:
    return click.option(
        "--embed-model",
        default=None,
        help="Sentence-transformers model, path or hub id [env QA_EMBED_MODEL; "
        "default sentence-transformers/all-MiniLM-L6-v2, packaged].",
    )(f)


def reader_option(f: Callable) -> Callable:
    return click.option(
        "--reader-model",
        default=None,
        help="Extractive QA model, path or hub id [env QA_READER_MODEL; default the shipped reader].",
    )(f)


def assistant_options(f: Callable) -> Callable:
    f = click.option(
        "--min-confidence",
        default=None,
        metavar="P",
        help="Answer only when the probability that the answer is right (SQuAD F1 >= 0.5) is at least P, "
        "0..1 [env QA_MIN_CONFIDENCE; default chosen by the calibration].",
    )(f)
    f = click.option(
        "--calibration",
        default=None,
        type=click.Path(dir_okay=False),
        help="Calibration file from qa calibrate [env QA_CALIBRATION; default calibration.json beside the "
        "index, else the reader's].",
    )(f)
    f = click.option(
        "--passages",
        default=None,
        type=click.IntRange(min=1),
        help="Chunks read per question [env QA_PASSAGES; default 3].",
    )(f)
    f = click.option(
        "--retrieval",
        default=None,
        type=click.Choice(["dense", "bm25", "hybrid"]),
        help="How chunks are found [env QA_RETRIEVAL; default hybrid].",
    )(f)
    return seeds_option(index_option(embed_option(reader_option(f))))


def article_option(f: Callable) -> Callable:
    return click.option(
        "--article",
        default=None,
        metavar="FILE",
        help="Answer over this one article instead (a UTF-8 text file up to 1 MB, or - for standard input), "
        "indexed in memory: the seeds and index folders are neither read nor written.",
    )(f)


def read_article_option(article: str | None, opts: dict[str, Any]) -> Any:
    """The --article file, read and checked before any model loads (None without --article)."""
    if article is None:
        return None
    given = [flag for flag, key in (("--seeds", "seeds"), ("--index-dir", "index_dir")) if opts.get(key)]
    if given:
        raise click.ClickException(f"--article answers over that one file; drop {' and '.join(given)}")
    from qa.documents import read_article

    return read_article(article)


def articles_option(f: Callable) -> Callable:
    return click.option(
        "--articles",
        default=None,
        help="Only these article titles, comma-separated (e.g. the reader's validation articles).",
    )(f)


def split_titles(articles: str | None) -> list[str] | None:
    return [t.strip() for t in articles.split(",") if t.strip()] if articles else None


SETTING_FLAGS = (
    "seeds",
    "index_dir",
    "embed_model",
    "reader_model",
    "retrieval",
    "passages",
    "calibration",
    "min_confidence",
)


def resolve_settings(opts: dict[str, Any]) -> Any:
    """The one place flags meet the environment: flags > QA_* variables > defaults."""
    from qa.settings import Settings

    return Settings.resolve(**{k: opts.pop(k) for k in SETTING_FLAGS if k in opts})


def make_assistant(opts: dict[str, Any], article: Any = None) -> Any:
    """The assistant over the articles folder, or over the one --article (a checked Document), in memory."""
    from qa.assistant import Assistant

    settings = resolve_settings(opts)
    if article is not None:
        return Assistant.from_text(article.text, article.doc_id, settings=settings, log=_err)
    return Assistant(settings=settings, log=_err)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl+C raises KeyboardInterrupt, so one handler keeps the work of both."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While the block runs, SIGTERM (kill, systemd, a container stopping) stops it as Ctrl+C does.

    Python's default for SIGTERM is to die at once, losing what a command could still save. Only
    the first SIGTERM interrupts: a second one must not break the saving the first one started.
    """

    def stop(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interrupted_status(exc: KeyboardInterrupt) -> int:
    """The shell's exit status for a command stopped by a signal: 128 + its number."""
    return 128 + (signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)


class QAGroup(click.Group):
    """Turns the library's QAError into click's one-line "Error: ..." with exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except QAError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=QAGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="article-qa")
def cli() -> None:
    """Ask questions about plain-text articles and get exact, cited answer spans."""


@cli.command("index")
@click.argument("folder", required=False, type=click.Path(file_okay=False))
@index_option
@embed_option
@click.option("--force", is_flag=True, help="Rebuild even when the index is up to date.")
def index_cmd(folder: str | None, index_dir: str, embed_model: str | None, force: bool) -> None:
    """Chunk and embed the articles in FOLDER (default: seeds/ or $QA_SEEDS) into the index.

    Example: qa index seeds/ --index-dir index/
    """
    from qa.assistant import Assistant

    settings = resolve_settings({"seeds": folder, "index_dir": index_dir, "embed_model": embed_model})
    assistant = Assistant(settings=settings, log=_err)
    index_dir = str(settings.index_dir)
    index, reason = assistant.build_index(force=force, progress=True)
    m = index.manifest
    if reason is None:
        click.echo(f"Index in {index_dir} is up to date: {len(m.documents)} article(s), {m.chunks} chunks.")
    else:
        click.echo(
            f"Indexed {len(m.documents)} article(s) into {index_dir}: {m.chunks} chunks "
            f"({m.embed_model}, {m.dimension} dimensions); rebuilt because {reason}."
        )


@cli.command("ask")
@click.argument("question")
@click.option("--top-k", default=1, show_default=True, type=click.IntRange(min=1), help="Answers to show.")
@click.option("--doc", "doc_id", default=None, help="Only this article (its file name in the seeds folder).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@article_option
@assistant_options
def ask_cmd(question: str, top_k: int, doc_id: str | None, as_json: bool, article: str | None, **opts: Any) -> None:
    """Answer QUESTION from the articles, with the exact span and its citation.

    Example: qa ask "Who devised the process to evaluate strike requests?"

    Your own article: qa ask "Who designed the reading room?" --article notes.txt
    """
    from qa.assistant import check_question

    check_question(question)  # before loading anything
    document = read_article_option(article, opts)
    result = make_assistant(opts, document).ask(question, top_k=top_k, doc_id=doc_id)
    if as_json:
        click.echo(json.dumps(result.to_dict(), ensure_ascii=False))
        return
    click.echo(format_result(result))


def format_result(result: Any) -> str:
    lines = []
    if not result.answers:
        lines.append("The article does not say (no answer is confident enough).")
        if result.passages:
            p = result.passages[0].chunk
            lines.append(f"Closest passage: {p.doc_id}, chunk {p.chunk_id}, characters {p.start}-{p.end}:")
            snippet = " ".join(p.text[:300].split())  # one indented line, whatever the article's line breaks
            lines.append(f"  {snippet}{'…' if len(p.text) > 300 else ''}")
        return "\n".join(lines)
    for n, a in enumerate(result.answers, 1):
        prefix = "Answer" if len(result.answers) == 1 else f"Answer {n}"
        lines.append(f"{prefix}: {a.text}")
        lines.append(f"  confidence {a.score:.2f} · {a.doc_id}, chunk {a.chunk_id}, characters {a.start}-{a.end}")
        lines.append(f"  “{a.sentence}”")
    return "\n".join(lines)


@cli.command("batch")
@click.argument("input_path", metavar="INPUT")
@click.option("--out", "-o", "out_path", default=None, help="Write here instead of stdout.")
@click.option(
    "--format",
    "out_format",
    default=None,
    type=click.Choice(["jsonl", "csv"]),
    help="Output format [default: from --out's suffix, else jsonl].",
)
@click.option(
    "--input-format",
    default=None,
    type=click.Choice(["jsonl", "csv", "txt"]),
    help="Input format [default: from INPUT's suffix; stdin: jsonl if it starts with '{', else txt].",
)
@click.option("--top-k", default=1, show_default=True, type=click.IntRange(min=1), help="Answers per question.")
@click.option("--doc", "doc_id", default=None, help="Only this article.")
@article_option
@assistant_options
def batch_cmd(
    input_path: str,
    out_path: str | None,
    out_format: str | None,
    input_format: str | None,
    top_k: int,
    doc_id: str | None,
    article: str | None,
    **opts: Any,
) -> None:
    """Answer a file of questions (.jsonl, .csv, .txt, or - for stdin), one record each, in order.

    Example: qa batch questions.txt --out answers.csv
    """
    from qa.batch import RecordWriter, iter_records, read_questions
    from qa.files import OutputFile

    if input_path == "-" and article == "-":
        raise click.ClickException(
            "the questions (INPUT -) and the article (--article -) cannot both come from standard input; "
            "give one of them as a file"
        )
    # Everything that can be checked is checked before a model loads: the input, the article, the output path.
    items = read_questions(input_path, input_format)
    document = read_article_option(article, opts)
    if out_format is None:
        out_format = "csv" if out_path and out_path.lower().endswith(".csv") else "jsonl"
    inputs = [input_path] if article is None else [input_path, article]
    out = OutputFile(out_path, inputs=inputs) if out_path is not None else None
    writer = RecordWriter(out.stream if out else sys.stdout, out_format)
    where = "standard output" if out_path is None else out_path
    counts = {"answered": 0, "abstained": 0, "errors": 0}
    records: Iterator[dict[str, Any]] | None = None
    # The handler covers the except clause too, so that saving the records is not cut short.
    with sigterm_as_interrupt():
        try:
            records = iter_records(make_assistant(opts, document), items, top_k=top_k, progress=True, doc_id=doc_id)
            for record in records:
                writer.write(record)
                kind = "errors" if record["error"] else "answered" if record["answer"] is not None else "abstained"
                counts[kind] += 1
                if out is None and writer.count % 16 == 0:
                    sys.stdout.flush()
            if out is not None:
                out.commit()
        except KeyboardInterrupt as exc:  # Ctrl+C, or SIGTERM (Terminated)
            if records is not None:
                records.close()  # ends the progress bar's line, so the line below stands on its own
            # Keep what was answered: the records so far go where they were asked to go, in order.
            if out is not None and writer.count:
                out.commit()
            elif out is not None:
                where = f"nothing; {out_path} is unchanged"
            _err(f"Interrupted: kept {writer.count} of {len(items)} records (in input order) in {where}.")
            raise SystemExit(interrupted_status(exc)) from None
        except OSError as exc:
            if out is None:
                raise
            out.discard()
            raise click.ClickException(
                f"cannot write {out_path} ({exc.strerror}); choose another path for --out"
            ) from exc
        finally:
            if out is not None and not out.closed:
                out.discard()  # a failure before the end: the target keeps what it held
    summary = f"Wrote {writer.count} records to {where} ({counts['answered']} answered, {counts['abstained']} abstained"
    if not counts["errors"]:
        _err(f"{summary}, 0 errors).")
        return
    # Every record is written, in order, yet a record that could not be answered fails the run
    # (exit status 1), so a script or CI job notices it without parsing the output.
    errors = counts["errors"]
    _err(f"{summary}); {errors} record{'s' if errors != 1 else ''} had an error: see the 'error' field.")
    raise SystemExit(1)


@cli.command("eval")
@click.argument("gold_path", metavar="GOLD.jsonl")
@click.option("--report", "report_path", default=None, help="Write one JSONL record a question.")
@click.option("--compare", is_flag=True, help="Run dense, bm25 and hybrid retrieval; one table row each.")
@click.option("--top-k", default=1, show_default=True, type=click.IntRange(min=1), help="Answers per question.")
@assistant_options
def eval_cmd(gold_path: str, report_path: str | None, compare: bool, top_k: int, **opts: Any) -> None:
    """Score answers against GOLD.jsonl: EM/F1, abstention, citations, retrieval recall, latency.

    Each line of GOLD.jsonl is {"id", "question", "answers": [acceptable answers]}; an empty
    list means the articles do not answer it.

    Example: qa eval eval/gold.jsonl --compare --report misses.jsonl
    """
    from qa.assistant import DEFAULT_RETRIEVAL
    from qa.evaluate import confidence_line, describe, format_table, load_gold, run_compare, summarize, write_report
    from qa.files import OutputFile
    from qa.retrieval import METHODS

    gold = load_gold(gold_path)  # before loading any model, so a bad file fails fast
    report = OutputFile(report_path, "--report", inputs=[gold_path]) if report_path is not None else None
    try:
        assistant = make_assistant(opts)
        methods = list(METHODS) if compare else [assistant.retrieval]
        runs = run_compare(assistant, gold, methods, top_k=top_k, progress=True, log=_err if compare else None)
        summaries = [(m, summarize(records, assistant.passages)) for m, records in runs]
        if report is not None:
            write_report(report, [{"retrieval": m, **r.to_report()} for m, records in runs for r in records])
            _err(f"Wrote {sum(len(r) for _, r in runs)} records to {report_path}.")
    finally:
        if report is not None and not report.closed:
            report.discard()
    click.echo(describe(summaries[0][1]))
    click.echo(format_table(summaries, mark=DEFAULT_RETRIEVAL if compare else None))
    default = next(s for m, s in summaries if m == assistant.retrieval)
    click.echo(confidence_line(default, assistant.min_confidence))
    note = "; * marks the default retrieval" if compare else ""
    n = assistant.passages
    click.echo(f"reader {assistant.reader.model_name}, {n} passage{'s' if n != 1 else ''} read a question{note}")
    for m, s in summaries:
        if s.citations is not None and s.citations < 1.0:
            _err(f"Warning: {m}: some cited spans do not match the document text; see --report (citations_exact).")


@cli.command("calibrate")
@click.argument("gold_paths", nargs=-1, metavar="GOLD.jsonl...")
@click.option(
    "--out",
    "-o",
    "out_path",
    default=None,
    help="Where to write the calibration [default: calibration.json in the index folder, which ask, batch, "
    "eval and serve then use].",
)
@click.option("--squad", default=None, help="Also ask the questions of these SQuAD v2.0 articles (see --articles).")
@articles_option
@click.option(
    "--fit",
    "mode",
    type=click.Choice(["auto", "full", "recalibrate"]),
    default="auto",
    show_default=True,
    help="full: a new calibrator over all features; recalibrate: two numbers over the current one "
    "(auto: full from 300 questions up).",
)
@assistant_options
def calibrate_cmd(
    gold_paths: tuple[str, ...], out_path: str | None, squad: str | None, articles: str | None, mode: str, **opts: Any
) -> None:
    """Fit when to answer and how sure to be on your own questions, asked as users ask them.

    GOLD.jsonl is the qa eval format ({"id", "question", "answers"}, [] when the articles do not
    answer it): at least 20 questions, some of them unanswerable. Prints F1, abstention precision
    and recall and the calibration error before and after (after: cross-validated, each question
    judged by a fit that never saw it), then writes the calibration.

    Example: qa calibrate my-questions.jsonl
    """
    from qa.calibrate import calibrate_assistant
    from qa.calibration import CALIBRATION_FILE, check_gold_counts
    from qa.evaluate import load_gold
    from qa.files import OutputFile

    if not gold_paths and squad is None:
        raise click.UsageError("give a GOLD.jsonl file of your questions (or --squad FILE --articles ...)")
    gold = {Path(p).stem: load_gold(p) for p in gold_paths}  # every check before any model loads
    squad_titles = split_titles(articles)
    if squad is None:
        check_gold_counts([g for items in gold.values() for g in items])
    settings = resolve_settings(opts)
    out = OutputFile(out_path or settings.index_dir / CALIBRATION_FILE, "--out", inputs=[*gold_paths, squad or ""])
    try:
        from qa.assistant import Assistant

        assistant = Assistant(settings=settings, log=_err)
        report = calibrate_assistant(
            assistant,
            gold,
            (squad, squad_titles) if squad else None,
            mode,
            command=" ".join(["qa", *sys.argv[1:]]),
            log=_err,
        )
        click.echo(format_calibration_report(report, assistant.calibration))
        report.calibration.save(out)
    finally:
        if not out.closed:
            out.discard()
    if out.target == (settings.index_dir / CALIBRATION_FILE).resolve():
        _err(f"Wrote the calibration to {out.shown}; ask, batch, eval and serve over this index use it from now on.")
    else:
        _err(f"Wrote the calibration to {out.shown}; use it with --calibration {out.shown} (or QA_CALIBRATION).")


def format_calibration_report(report: Any, current: Any) -> str:
    c = report.calibration
    lines = [
        f"before ({current.source or 'current'}): {report.before.line()}",
        f"after  ({report.mode} fit, 5-fold cross-validated): {report.after.line()}",
    ]
    for domain, (before, after) in report.by_domain.items() if len(report.by_domain) > 1 else ():
        lines.append(f"  {domain}: before {before.line()}")
        lines.append(f"  {' ' * len(domain)}  after  {after.line()}")
    for domain, scores in report.transfer.items():
        lines.append(f"  fitted without {domain}, tested on it: {scores.line()}")
    lines.append(f"min confidence {c.min_confidence:.3f} ({'; '.join(c.features)})")
    return "\n".join(lines)


@cli.command("serve")
@click.option(
    "--host",
    envvar="QA_HOST",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on [env QA_HOST]; 0.0.0.0 opens the page to other machines.",
)
@click.option(
    "--port",
    envvar="QA_PORT",
    default=7860,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="Port to listen on [env QA_PORT].",
)
@assistant_options
def serve_cmd(host: str, port: int, **opts: Any) -> None:
    """Serve the web page: ask questions, read cited answers and batch files in a browser.

    Models load once, at start. Example: qa serve, then open http://127.0.0.1:7860
    """
    try:
        from qa.web import serve  # Gradio is slow to import: only this command pays for it
    except ImportError as exc:
        if not (exc.name or "").startswith("gradio"):
            raise
        raise click.ClickException(f"qa serve needs Gradio ({exc}); install it with: pip install gradio") from exc
    with sigterm_as_interrupt():  # a stop by kill, systemd or a container stops the server as Ctrl+C does
        serve(make_assistant(opts), host, port)


@cli.command("squad-predict")
@click.argument("input_path", metavar="INPUT.json")
@click.option("--out", "-o", "out_path", required=True, help="Predictions JSON.")
@reader_option
@click.option("--threshold", default=None, type=float, help="Null threshold [default: the one stored with the model].")
@articles_option
def squad_predict_cmd(
    input_path: str, out_path: str, reader_model: str | None, threshold: float | None, articles: str | None
) -> None:
    """Answer every question of a SQuAD v2.0 file from its own paragraph (reader only).

    Writes {question_id: answer, or "" for no answer}.
    Example: qa squad-predict dev.json --out predictions.json
    """
    import time

    from qa.files import OutputFile
    from qa.reader import Reader
    from qa.squad import apply_threshold, load_squad, predict_spans, write_predictions

    examples = load_squad(input_path, titles=split_titles(articles))
    # A bad --out (the input itself, read-only, no such folder) is refused before the reader loads.
    out = OutputFile(out_path, inputs=[input_path])
    try:
        settings = resolve_settings({"reader_model": reader_model})
        reader = Reader(settings.reader_model, dtype=settings.reader_dtype)
        reader.warm_up()
        started = time.perf_counter()
        spans = predict_spans(reader, examples)
        seconds = time.perf_counter() - started
        t = reader.settings.null_threshold if threshold is None else threshold
        write_predictions(out, apply_threshold(spans, t))
    finally:
        if not out.closed:
            out.discard()
    _err(
        f"Wrote {len(examples)} predictions to {out_path} (null threshold {t:.3f}; "
        f"{len(examples) / max(seconds, 1e-9):.1f} questions/s)."
    )


@cli.command("squad-eval")
@click.argument("input_path", metavar="INPUT.json")
@click.argument("predictions", metavar="PREDICTIONS.json")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@articles_option
def squad_eval_cmd(input_path: str, predictions: str, as_json: bool, articles: str | None) -> None:
    """EM and F1 of PREDICTIONS against a SQuAD v2.0 file, as the official script computes them.

    Example: qa squad-eval dev.json predictions.json
    """
    from qa.metrics import evaluate_predictions
    from qa.squad import load_squad, read_predictions

    examples = load_squad(input_path, titles=split_titles(articles))
    scores = evaluate_predictions(examples, read_predictions(predictions))
    if as_json:
        click.echo(json.dumps(scores, indent=2))
        return
    click.echo(f"{'':8} {'count':>6} {'EM':>7} {'F1':>7}")
    for name, prefix in (("overall", ""), ("HasAns", "HasAns_"), ("NoAns", "NoAns_")):
        if scores.get(f"{prefix}total"):
            click.echo(
                f"{name:8} {int(scores[prefix + 'total']):>6} {scores[prefix + 'exact']:>7.2f} "
                f"{scores[prefix + 'f1']:>7.2f}"
            )


@cli.command("train-reader")
@click.option(
    "--data",
    multiple=True,
    help="SQuAD v2.0-format training JSON; repeat for several files. "
    "Default: squad-train-442.json and squad-train-38.json in ../shared/data/squad/.",
)
@click.option(
    "--output-dir",
    "-o",
    default=None,
    type=click.Path(file_okay=False),
    help="Where checkpoints and the best model go.",
)
@click.option(
    "--base-model",
    default=None,
    help="Start from: an encoder (path or hub id; default all-MiniLM-L6-v2), a trained reader folder, or 'shipped'.",
)
@click.option("--epochs", default=2.0, show_default=True, type=click.FloatRange(min=0, min_open=True))
@click.option("--learning-rate", "--lr", default=1e-4, show_default=True, type=click.FloatRange(min=0, min_open=True))
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(min=1))
@click.option("--max-length", default=384, show_default=True, type=click.IntRange(min=32))
@click.option("--stride", default=128, show_default=True, type=click.IntRange(min=0))
@click.option(
    "--warmup", default=0.06, show_default=True, type=click.FloatRange(0, 1), help="Share of steps warming up."
)
@click.option(
    "--negatives",
    default=0.25,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Share of answerable questions also paired with another paragraph of their article, labelled no-answer.",
)
@click.option(
    "--time-budget",
    default=None,
    type=click.FloatRange(min=0, min_open=True),
    help="Minutes for the whole run: the learning-rate schedule is planned to end (validated) within it.",
)
@click.option("--checkpoint-minutes", default=10.0, show_default=True, type=click.FloatRange(min=0, min_open=True))
@click.option(
    "--resume",
    default=None,
    type=click.Path(file_okay=False),
    help="Continue the interrupted run in this output folder from its last checkpoint (its own settings).",
)
@click.option(
    "--attention",
    type=click.Choice(["eager", "sdpa"]),
    default="eager",
    show_default=True,
    help="Attention kernel while training (eager is faster on CPU with bf16).",
)
@click.option(
    "--attention-dropout",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Dropout on attention probabilities (0 is a third faster on CPU).",
)
@click.option("--freeze-word-embeddings/--train-word-embeddings", default=True, show_default=True)
@click.option("--seed", default=42, show_default=True, type=int)
@click.option("--val-articles", default=None, help="Comma-separated validation article titles (held out).")
@click.option("--max-steps", default=None, type=click.IntRange(min=1), help="Stop after this many steps.")
@click.option("--max-train-questions", default=None, type=click.IntRange(min=1), help="Train on a random slice.")
@click.option("--max-val-questions", default=None, type=click.IntRange(min=1), help="Validate on a random slice.")
@click.option("--bf16/--no-bf16", default=None, help="bf16 autocast (default: when the hardware has it).")
def train_reader_cmd(**opts: Any) -> None:
    """Fine-tune an extractive QA reader on SQuAD v2.0 data; keeps the best validation checkpoint.

    Example: qa train-reader -o runs/reader --base-model shipped --time-budget 100
    """
    from qa.train import DEFAULT_DATA, VALIDATION_ARTICLES, TrainConfig, train_reader

    resume = opts.pop("resume")
    if resume is None and opts["output_dir"] is None:
        raise click.UsageError("pass --output-dir DIR for a new run, or --resume DIR to continue one")
    val = opts.pop("val_articles")
    data = opts.pop("data") or DEFAULT_DATA
    cfg = TrainConfig(
        data=tuple(str(d) for d in data),
        output_dir=str(opts.pop("output_dir") or resume),
        val_articles=tuple(v.strip() for v in str(val).split(",") if v.strip()) if val else VALIDATION_ARTICLES,
        eager_attention=opts.pop("attention") == "eager",
        **opts,
    )
    if cfg.stride >= cfg.max_length // 2:
        raise click.BadParameter(
            f"must be less than half of --max-length ({cfg.max_length}), got {cfg.stride}", param_hint="--stride"
        )
    try:
        with sigterm_as_interrupt():  # a polite kill saves a checkpoint too
            best = train_reader(cfg, resume=resume)
    except KeyboardInterrupt as exc:
        raise SystemExit(interrupted_status(exc)) from None
    m = best["metrics"]
    click.echo(
        f"best at step {best['step']} (epoch {best['epoch']}): EM {m['exact']:.2f} F1 {m['f1']:.2f}; "
        f"saved to {Path(cfg.output_dir)}"
    )


def process_policy(env: dict[str, str] | os._Environ[str] | None = None) -> None:
    """How this process uses the CPU, set before torch loads (OpenMP reads it once, at start).

    OpenMP's threads spin-wait for each other by default; when another process holds a core
    (a server shares its machine), every parallel region waits for the thread that was
    preempted, and a question took ~20x longer. Passive waiting gives the core back instead;
    `benchmarks/load.py` measures it. QA_THREADS sets the number of threads (OMP_NUM_THREADS);
    a policy the user set themselves is kept.
    """
    env = os.environ if env is None else env
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    threads = env.get("QA_THREADS", "").strip()
    if threads:
        if not threads.isdigit() or int(threads) < 1:
            raise click.ClickException(f"QA_THREADS must be a whole number of at least 1, got {threads!r}")
        env["OMP_NUM_THREADS"] = threads


def main() -> None:
    code = 0
    try:
        process_policy()
        cli.main(prog_name="qa", standalone_mode=True)
    except click.ClickException as exc:  # a bad QA_THREADS, before any command runs
        exc.show()
        code = exc.exit_code
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BrokenPipeError:  # e.g. `qa batch ... | head`
        code = 0
    # Tearing down torch, transformers and friends takes over a second and does nothing useful
    # for a finished command (files are closed by then), so leave at once after flushing.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BrokenPipeError, ValueError):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
