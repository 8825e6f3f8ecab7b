"""The `qa` command line: a thin layer over the Python API.

Library code raises QAError subclasses; `main` turns them into one line on stderr and exit
status 1, so a user mistake never shows a traceback. Data goes to stdout, progress and logs
to stderr. Every option that names a folder or model also reads an environment variable; the
defaults and variable names come from `qa.settings` (and `qa.training.config` for training).
Each command parses its input, calls the library, and prints; only `main` touches the process
itself (its environment and arguments).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import click

from qa.cli_options import (
    TRAIN_DEFAULTS,
    article_option,
    articles_option,
    assistant_options,
    backend_option,
    batch_format_options,
    calibrate_options,
    index_options,
    ray_options,
    reader_option,
    refuse_settings_beside_resume,
    serve_options,
    train_options,
)
from qa.errors import QAError
from qa.interrupts import interrupted_status, sigterm_as_interrupt
from qa.settings import ENV, Settings
from qa.training.config import TrainConfig
from qa.version import DISTRIBUTION


def _err(msg: str) -> None:
    click.echo(msg, err=True)


def _argv() -> list[str]:
    """The arguments `qa` was started with (`main` passes them in; none when `cli` is invoked in-process)."""
    obj = click.get_current_context().find_root().obj
    return list(obj.get("argv", ())) if isinstance(obj, dict) else []


def read_article_option(article: str | None, opts: dict[str, Any]) -> Any:
    """The --article file, read and checked before any model loads (None without --article)."""
    if article is None:
        return None
    given = [flag for flag, key in (("--seeds", "seeds"), ("--index-dir", "index_dir")) if opts.get(key)]
    if given:
        raise click.ClickException(f"--article answers over that one file; drop {' and '.join(given)}")
    from qa.documents import read_article

    return read_article(article)


def split_titles(articles: str | None) -> list[str] | None:
    return [t.strip() for t in articles.split(",") if t.strip()] if articles else None


def resolve_settings(opts: dict[str, Any]) -> Settings:
    """The one place flags meet the environment: flags > QA_* variables > defaults."""
    return Settings.resolve(**{k: opts.pop(k) for k in ENV if k in opts})


def make_assistant(opts: dict[str, Any], article: Any = None) -> Any:
    """The assistant over the articles folder, or the one --article (a checked Document) in memory; --ray: on Ray."""
    from qa.assistant import Assistant

    ray_address, ray_timeout = opts.pop("ray_address", None), opts.pop("ray_timeout", None)
    settings = resolve_settings(opts)
    if ray_address is not None:
        from qa.distributed import RayAssistant

        return RayAssistant(ray_address, settings, article, timeout_s=ray_timeout, log=_err)
    if article is not None:
        return Assistant.from_document(article, settings=settings, log=_err)
    return Assistant(settings=settings, log=_err)


class QAGroup(click.Group):
    """Turns the library's QAError into click's one-line "Error: ..." with exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except QAError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=QAGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name=DISTRIBUTION)
def cli() -> None:
    """Ask questions about articles (text, saved web pages, PDFs) and get exact, cited answer spans."""


@cli.command("index")
@click.argument("folder", required=False, type=click.Path(file_okay=False))
@index_options
def index_cmd(folder: str | None, force: bool, **opts: Any) -> None:
    """Chunk and embed the articles in FOLDER (default: seeds/ or $QA_SEEDS) into the index.

    Example: qa index seeds/ --index-dir index/  (to embed on a Ray cluster, add --ray auto or --ray HOST:PORT)
    """
    assistant = make_assistant({"seeds": folder, **opts})
    index, reason = assistant.build_index(force=force, progress=True)
    m, where = index.manifest, assistant.settings.index_dir
    if reason is None:
        click.echo(f"Index in {where} is up to date: {len(m.documents)} article(s), {m.chunks} chunks.")
    else:
        click.echo(
            f"Indexed {len(m.documents)} article(s) into {where}: {m.chunks} chunks "
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
    from qa.display import format_result

    check_question(question)  # before loading anything
    document = read_article_option(article, opts)
    result = make_assistant(opts, document).ask(question, top_k=top_k, doc_id=doc_id)
    click.echo(json.dumps(result.to_dict(), ensure_ascii=False) if as_json else format_result(result))


@cli.command("batch")
@click.argument("input_path", metavar="INPUT")
@click.option("--out", "-o", "out_path", default=None, help="Write here instead of stdout.")
@batch_format_options
@click.option("--top-k", default=1, show_default=True, type=click.IntRange(min=1), help="Answers per question.")
@click.option("--doc", "doc_id", default=None, help="Only this article.")
@article_option
@assistant_options
@ray_options
def batch_cmd(input_path: str, out_path: str | None, out_format: str | None, **opts: Any) -> None:
    """Answer a file of questions (.jsonl, .csv, .txt, or - for stdin), one record each, in order.

    Example: qa batch questions.txt --out answers.csv  (on a Ray cluster: add --ray auto or --ray HOST:PORT)
    """
    from qa.batch import batch_output, check_batch_sources, load_earlier, read_questions, run_batch

    article, top_k, doc_id, resume = (opts.pop(k) for k in ("article", "top_k", "doc_id", "resume"))
    check_batch_sources(input_path, article, out_path, resume)
    items = read_questions(input_path, opts.pop("input_format"))  # each check below comes before a model loads
    document = read_article_option(article, opts)
    out, fmt = batch_output(out_path, out_format, inputs=[input_path, article or "-"])
    earlier = load_earlier(out, fmt, items, input_path) if resume and out is not None else None
    make = functools.partial(make_assistant, opts, document)
    run = run_batch(make, items, out, fmt, top_k=top_k, doc_id=doc_id, earlier=earlier, log=_err)
    _err(run.summary())
    if run.exit_status:
        raise SystemExit(run.exit_status)


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
    from qa.evaluate import load_gold, run_eval
    from qa.files import OutputFile

    gold = load_gold(gold_path)  # before loading any model, so a bad file fails fast
    report = OutputFile(report_path, "--report", inputs=[gold_path]) if report_path is not None else None
    run = run_eval(lambda: make_assistant(opts), gold, report, compare=compare, top_k=top_k, log=_err)
    click.echo(run.text())
    for warning in run.warnings():
        _err(warning)


@cli.command("calibrate")
@click.argument("gold_paths", nargs=-1, metavar="GOLD.jsonl...")
@calibrate_options
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
    from qa.calibrate import calibrate_to_file
    from qa.calibration import CALIBRATION_FILE, check_gold_counts
    from qa.evaluate import load_gold
    from qa.files import OutputFile

    if not gold_paths and squad is None:
        raise click.UsageError("give a GOLD.jsonl file of your questions (or --squad FILE --articles ...)")
    gold = {Path(p).stem: load_gold(p) for p in gold_paths}  # every check before any model loads
    if squad is None:
        check_gold_counts([g for items in gold.values() for g in items])
    settings = resolve_settings(opts)
    out = OutputFile(out_path or settings.index_dir / CALIBRATION_FILE, "--out", inputs=[*gold_paths, squad or ""])
    squad_articles = (squad, split_titles(articles)) if squad else None
    command = " ".join(["qa", *_argv()])
    share = settings.expect_unanswerable
    _err(calibrate_to_file(settings, gold, squad_articles, mode, out, command, _err, click.echo, share))


@cli.command("serve")
@serve_options
@assistant_options
def serve_cmd(host: str, port: int, **opts: Any) -> None:
    """Serve the web page: ask questions, read cited answers and batch files in a browser.

    Models load once, at start. Example: qa serve, then open http://127.0.0.1:7860
    """
    from qa.handlers import check_port

    check_port(host, port)  # a port in use is said at once, before Gradio and the models load
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
@backend_option
@click.option("--threshold", default=None, type=float, help="Null threshold [default: the one stored with the model].")
@articles_option
def squad_predict_cmd(input_path: str, out_path: str, threshold: float | None, articles: str | None, **kw: Any) -> None:
    """Answer every question of a SQuAD v2.0 file from its own paragraph (reader only).

    Writes {question_id: answer, or "" for no answer}.
    Example: qa squad-predict dev.json --out predictions.json
    """
    from qa.files import OutputFile
    from qa.reader import Reader
    from qa.squad import load_squad, predict_to_file

    examples = load_squad(input_path, titles=split_titles(articles))
    # A bad --out (the input itself, read-only, no such folder) is refused before the reader loads.
    out = OutputFile(out_path, inputs=[input_path])

    def make_reader() -> Reader:
        return Reader.from_settings(resolve_settings(kw))

    t, rate = predict_to_file(make_reader, examples, out, threshold)
    _err(f"Wrote {len(examples)} predictions to {out_path} (null threshold {t:.3f}; {rate:.1f} questions/s).")


@cli.command("squad-eval")
@click.argument("input_path", metavar="INPUT.json")
@click.argument("predictions", metavar="PREDICTIONS.json")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@articles_option
def squad_eval_cmd(input_path: str, predictions: str, as_json: bool, articles: str | None) -> None:
    """EM and F1 of PREDICTIONS against a SQuAD v2.0 file, as the official script computes them.

    Example: qa squad-eval dev.json predictions.json
    """
    from qa.squad import evaluate_predictions, format_scores, load_squad, read_predictions

    examples = load_squad(input_path, titles=split_titles(articles))
    scores = evaluate_predictions(examples, read_predictions(predictions))
    click.echo(json.dumps(scores, indent=2) if as_json else format_scores(scores))


@cli.command("train-reader")
@train_options
def train_reader_cmd(**opts: Any) -> None:
    """Fine-tune an extractive QA reader on SQuAD v2.0 data; keeps the best validation checkpoint.

    Example: qa train-reader -o runs/reader --base-model shipped --time-budget 100
    """
    from qa.training.trainer import train_reader

    resume, stop_after = opts.pop("resume"), opts.pop("stop_after")
    if resume is None and opts["output_dir"] is None:
        raise click.UsageError("pass --output-dir DIR for a new run, or --resume DIR to continue one")
    if resume is not None:
        refuse_settings_beside_resume(opts)
    val = opts.pop("val_articles")
    cfg = TrainConfig(
        data=tuple(str(d) for d in opts.pop("data") or TRAIN_DEFAULTS.data),
        output_dir=str(opts.pop("output_dir") or resume),
        val_articles=tuple(split_titles(val) or ()) if val else TRAIN_DEFAULTS.val_articles,
        eager_attention=opts.pop("attention") == "eager",
        command=shlex.join(["qa", *_argv()]),
        **opts,
    )
    if cfg.stride >= cfg.max_length // 2:
        raise click.BadParameter(
            f"must be less than half of --max-length ({cfg.max_length}), got {cfg.stride}", param_hint="--stride"
        )
    try:
        with sigterm_as_interrupt():  # a polite kill saves a checkpoint too
            best = train_reader(cfg, resume=resume, stop_after=stop_after)
    except KeyboardInterrupt as exc:
        raise SystemExit(interrupted_status(exc)) from None
    m = best["metrics"]
    click.echo(
        f"best at step {best['step']} (epoch {best['epoch']}): EM {m['exact']:.2f} F1 {m['f1']:.2f}; "
        f"saved to {Path(cfg.output_dir)}"
    )


def process_policy(env: dict[str, str] | os._Environ[str] | None = None) -> None:
    """How this process uses the CPU, set before torch loads (OpenMP reads it once, at start).

    OpenMP's threads spin-wait by default; when another process holds a core, every parallel
    region waits for the preempted thread (a question took ~20x longer). Passive waiting gives the
    core back (`benchmarks/load.py`). QA_THREADS sets the threads (OMP_NUM_THREADS, read by ONNX
    Runtime's sessions too); a policy the user set is kept. The Rust tokenizers' own thread pool
    would compete with the model's threads (and warns after a fork).
    """
    env = os.environ if env is None else env
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    threads = env.get("QA_THREADS", "").strip()
    if threads:
        if not threads.isdigit() or int(threads) < 1:
            raise click.ClickException(f"QA_THREADS must be a whole number of at least 1, got {threads!r}")
        env["OMP_NUM_THREADS"] = threads


def main() -> None:
    code = 0
    try:
        process_policy()
        cli.main(prog_name="qa", standalone_mode=True, obj={"argv": sys.argv[1:]})
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
