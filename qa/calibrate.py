"""Calibrating in the deployed mode: ask held-out questions through the whole assistant, then fit.

`qa.calibration` holds what a calibration is and how one is fitted and scored (no model, no
assistant); this module runs the assistant to observe how it behaves on gold questions (the
user's own articles, SQuAD articles written out as plain-text files and indexed in a private
temporary folder) and hands the observations to it. `qa calibrate` and `qa train-reader` call here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qa.calibration import (
    CALIBRATION_FILE,
    DEFAULT_EXPECT_UNANSWERABLE,
    RIGHT,
    Calibration,
    Observation,
    Report,
    calibrate,
    grounded,
    model_label,
    provenance,
    reader_fingerprint,
)
from qa.errors import InputError, ModelError
from qa.metrics import score_one

if TYPE_CHECKING:
    from qa.files import OutputFile
    from qa.settings import Settings


def observe(assistant: Any, gold: Sequence[Any], domain: str, progress: bool = False) -> list[Observation]:
    """Ask every gold question through the assistant (retrieval, reading, decoding as users run it)."""
    results = assistant.ask_many([g.question for g in gold], top_k=1, progress=progress)
    out = []
    for g, r in zip(gold, results, strict=True):
        best = r.answer or r.closest
        f1 = score_one(g.answers, best.text)[1] if best is not None and g.answerable else 0.0
        features = r.features if best is not None else None
        on_topic = grounded(g.question, [p.chunk.text for p in r.passages])
        out.append(Observation(domain, g.question, g.answerable, features, f1, on_topic))
    return out


def squad_gold(path: str | Path, titles: Sequence[str] | None, folder: Path) -> list[Any]:
    """SQuAD articles written to `folder` as plain-text articles, and their questions as gold items."""
    from qa.squad import load_squad

    return squad_examples_gold(load_squad(path, titles), folder)


def squad_examples_gold(examples: Sequence[Any], folder: Path) -> list[Any]:
    from qa.assistant import check_question
    from qa.evaluate import GoldItem
    from qa.squad import write_articles

    items = []
    for n, (qid, question, answers) in enumerate(write_articles(examples, folder), 1):
        try:
            items.append(GoldItem(qid, check_question(question), answers, n))
        except InputError:
            continue  # a question the assistant would refuse (empty, over-long) is not asked
    return items


def calibrate_assistant(
    assistant: Any,
    gold: dict[str, Sequence[Any]],
    squad: tuple[str, Sequence[str] | None] | None = None,
    mode: str = "auto",
    progress: bool = True,
    command: str = "",
    log: Any = None,
    expect_unanswerable: float | None = None,
) -> Report:
    """Observe the assistant on each gold set (its own articles) and, with `squad`, on SQuAD
    articles indexed in a private temporary folder, then fit and measure (see `calibrate`; the
    cut is chosen for `expect_unanswerable`, None: the mix asked)."""
    import tempfile

    from qa.assistant import Assistant

    try:
        current = assistant.calibration
    except ModelError as exc:  # a damaged calibration is what a new run replaces; compare with the reader's own
        if log:
            log(f"Note: {exc}; comparing with the reader's own calibration instead.")
        current = Calibration.from_reader_settings(assistant.reader.settings)
        assistant.__dict__["calibration"] = current
    observations: list[Observation] = []
    data: dict[str, Any] = {}
    for name, items in gold.items():
        if log:
            log(f"Asking the {len(items)} questions of {name} over the articles in {assistant.seeds}.")
        observations += observe(assistant, items, name, progress)
        data[name] = {"articles": folder_name(assistant.seeds), **_counts(items)}
    if squad is not None:
        path, titles = squad
        with tempfile.TemporaryDirectory(prefix="qa-calibrate-") as tmp:
            items = squad_gold(path, titles, Path(tmp) / "articles")
            name = f"squad:{Path(path).name}"
            if log:
                log(f"Asking the {len(items)} questions of {name} over its {len(titles or [])} article(s).")
            other = Assistant(
                settings=assistant.settings.with_(seeds=Path(tmp) / "articles", index_dir=Path(tmp) / "index"),
                reader=assistant.reader,
                embedder=assistant.embedder,
                log=lambda msg: None,
            )
            other.__dict__["calibration"] = current  # the same rule decides there; features do not depend on it
            observations += observe(other, items, name, progress)
            data[name] = {"file": Path(path).name, "articles": list(titles or []), **_counts(items)}
    info = provenance(
        right=RIGHT,
        mode=f"the whole assistant: {assistant.retrieval} retrieval, {assistant.passages} passage(s) read",
        data=data,
        command=command,
    )
    name = assistant.reader.model_name
    reader = {"name": model_label(name), "fingerprint": reader_fingerprint(name)}
    return calibrate(current, observations, mode, info, reader, expect_unanswerable)


def folder_name(folder: Path | None) -> str:
    """An articles folder as a calibration records it: its name, not where it was on the machine."""
    return Path(folder).resolve().name if folder is not None else ""


def calibrate_to_file(
    settings: Settings,
    gold: dict[str, Sequence[Any]],
    squad: tuple[str, Sequence[str] | None] | None,
    mode: str,
    out: OutputFile,
    command: str = "",
    log: Callable[[str], None] | None = None,
    show: Callable[[str], None] = print,
    expect_unanswerable: float | None = None,
) -> str:
    """`qa calibrate`: observe and fit (`calibrate_assistant`), `show` the report, and save the
    calibration to `out` (checked before the work; left as it was on any failure). Returns the
    line that says where it went and what uses it."""
    from qa.assistant import Assistant
    from qa.settings import ENV

    try:
        # The expected share picks this fit's cut; the calibration asked with may have no curve to read it from.
        assistant = Assistant(settings=settings.with_(expect_unanswerable=None), log=log)
        report = calibrate_assistant(
            assistant, gold, squad, mode, command=command, log=log, expect_unanswerable=expect_unanswerable
        )
        show(format_report(report, assistant.calibration))
        report.calibration.save(out)
    finally:
        if not out.closed:
            out.discard()
    if out.target == (settings.index_dir / CALIBRATION_FILE).resolve():
        return f"Wrote the calibration to {out.shown}; ask, batch, eval and serve over this index use it from now on."
    env = ENV["calibration"]
    return f"Wrote the calibration to {out.shown}; use it with --calibration {out.shown} (or {env})."


def format_report(report: Report, current: Calibration) -> str:
    """The figures before and after (per domain, and across domains), then the calibration chosen."""
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
    asked = c.fitted.get("unanswerable_asked")
    mix = "" if asked is None else f"{100 * asked:.0f}% of the questions asked were unanswerable; "
    if report.reweighted:
        r = report.reweighted
        lines.append(
            f"reweighted to {100 * r['share']:.0f}% unanswerable: F1 {100 * r['before']:.1f} before, "
            f"{100 * r['after']:.1f} after (cross-validated)"
        )
        chosen = f"chosen for {100 * r['share']:.0f}% unanswerable questions ({mix.rstrip('; ')})"
    else:
        chosen = f"chosen for the mix asked ({mix.rstrip('; ')}; --expect-unanswerable SHARE picks another)"
    lines.append(f"min confidence {c.min_confidence:.3f}, {chosen} ({'; '.join(c.features)})")
    curve = ", ".join(f"{100 * s:.0f}%: {cut:.3f}" for s, cut in c.cuts if round(100 * s) % 10 == 0)
    lines.append(f"  the F1-best min confidence by share of unanswerable questions: {curve}")
    return "\n".join(lines)


def _counts(items: Sequence[Any]) -> dict[str, int]:
    answerable = sum(g.answerable for g in items)
    return {"questions": len(items), "answerable": answerable, "unanswerable": len(items) - answerable}


def calibrate_trained_reader(reader_dir: str | Path, examples: Sequence[Any], progress: bool = True) -> Report:
    """What `qa train-reader` does at the end: the saved reader's calibration, fitted on its
    validation questions asked through the assistant over their articles (written to a private
    temporary folder and indexed there), saved as calibration.json beside the weights."""
    import tempfile

    from qa.assistant import Assistant
    from qa.files import OutputFile
    from qa.reader import ReaderSettings

    reader_dir = Path(reader_dir)
    out = OutputFile(reader_dir / CALIBRATION_FILE, "--output-dir")
    try:
        own = Calibration.from_reader_settings(ReaderSettings.load(reader_dir))
        with tempfile.TemporaryDirectory(prefix="qa-calibrate-") as tmp:
            items = squad_examples_gold(examples, Path(tmp) / "articles")
            assistant = Assistant(Path(tmp) / "articles", Path(tmp) / "index", reader_model=str(reader_dir))
            assistant.__dict__["calibration"] = own  # not a calibration.json left by an earlier run
            observations = observe(assistant, items, "validation", progress)
            titles = sorted({ex.title for ex in examples})
            info = provenance(
                right=RIGHT,
                mode=f"the whole assistant: {assistant.retrieval} retrieval, {assistant.passages} passage(s) read",
                data={"validation": {"articles": titles, **_counts(items)}},
                command="qa train-reader (at the end)",
            )
            reader = {"name": model_label(str(reader_dir)), "fingerprint": reader_fingerprint(str(reader_dir))}
        report = calibrate(own, observations, "full", info, reader, DEFAULT_EXPECT_UNANSWERABLE)
        report.calibration.save(out)
        return report
    finally:
        if not out.closed:
            out.discard()
