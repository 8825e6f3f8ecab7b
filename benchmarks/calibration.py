"""Calibration in the deployed mode, measured: which features travel across domains, and how well.

Asks held-out questions through the whole assistant (retrieval, 3 passages, decoding) once and
keeps what it saw (`--observations FILE`, reused on the next run), then compares calibrators:
the reader's own gap threshold, Platt scaling of the gap refitted here, and logistic
regressions over feature sets, each fitted on the mix of domains and scored

- within each domain (5-fold cross-validated, so no question is scored by a fit that saw it),
- leave-one-domain-out (fitted without the domain, tested on it),
- on the held-out test set (`--test`, e.g. eval/gold.jsonl: never used for fitting).

    python benchmarks/calibration.py --observations runs/calibration-observations.json

Domains: the news article's calibration questions (eval/calibration.jsonl over seeds/) and the
reader's four validation articles of the shared SQuAD data (never trained on), as plain-text
articles in a private folder. Writes the reliability diagram and risk-coverage curve with
`--plots DIR` (needs matplotlib).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qa.calibrate import observe, squad_gold  # noqa: E402
from qa.calibration import (  # noqa: E402
    FEATURES,
    Calibration,
    Observation,
    fit,
    recalibrate,
    score,
    score_cross_validated,
)

VALIDATION = ["Economic_inequality", "Rhine", "Harvard_University", "Kenya"]
SQUAD = ROOT.parent / "shared" / "data" / "squad" / "squad-train-38.json"

FEATURE_SETS = {
    "gap": ("gap",),
    "gap+null": ("gap", "null"),
    "logits": ("gap", "logit", "null", "margin"),
    "logits+lengths": ("gap", "logit", "null", "margin", "answer_chars", "question_words"),
    "logits+rank": ("gap", "logit", "null", "margin", "rank"),
    "all": FEATURES,
    "all-but-wh": tuple(f for f in FEATURES if not f.startswith("wh_")),
}


def observe_all(path: Path, test: Path | None) -> dict[str, list[Observation]]:
    import tempfile

    from qa.assistant import Assistant
    from qa.calibration import reader_fingerprint
    from qa.evaluate import load_gold
    from qa.loading import resolve_reader_model

    news = Assistant(ROOT / "seeds", ROOT / "index", log=lambda m: None)
    reader = reader_fingerprint(resolve_reader_model(news.settings.reader_model))
    if path.is_file():
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.pop("reader", None) == reader:  # observations of another reader are asked again
            return {k: [Observation(**o) for o in v] for k, v in raw.items()}
    out = {"news": observe(news, load_gold(ROOT / "eval" / "calibration.jsonl"), "news", progress=True)}
    if test is not None:
        out["test"] = observe(news, load_gold(test), "news", progress=True)
    with tempfile.TemporaryDirectory() as tmp:
        items = squad_gold(SQUAD, VALIDATION, Path(tmp) / "articles")
        wiki = Assistant(Path(tmp) / "articles", Path(tmp) / "index", reader=news.reader, embedder=news.embedder)
        out["squad"] = observe(wiki, items, "squad", progress=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    saved = {"reader": reader, **{k: [asdict(o) for o in v] for k, v in out.items()}}
    path.write_text(json.dumps(saved), encoding="utf-8")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--observations", type=Path, default=ROOT / "runs" / "calibration-observations.json")
    parser.add_argument("--test", type=Path, default=ROOT / "eval" / "gold.jsonl")
    parser.add_argument("--plots", type=Path, default=None)
    args = parser.parse_args()
    obs = observe_all(args.observations, args.test)
    fitting = obs["news"] + obs["squad"]
    from qa.reader import ReaderSettings

    shipped = Calibration.from_reader_settings(ReaderSettings.load(ROOT / "qa" / "models" / "reader"))
    rows = [("reader's own (qa_reader.json)", lambda o: shipped)]
    for name, feats in FEATURE_SETS.items():
        rows.append((name, lambda o, feats=feats: fit(o, feats)))
    print(f"{len(obs['news'])} news + {len(obs['squad'])} SQuAD questions to fit; {len(obs.get('test', []))} to test")
    header = f"{'calibrator':32} {'news CV':>28} {'squad CV':>28} {'news LODO':>16} {'squad LODO':>16} {'test':>28}"
    print(header)
    for name, fitter in rows:
        cells = []
        for d in ("news", "squad"):
            s = score_cross_validated(obs[d], fitter) if name != rows[0][0] else score(shipped, obs[d])
            cells.append(f"F1 {100 * s.f1:5.1f} ECE {s.ece or 0:.3f} R {100 * (s.abstain_recall or 0):3.0f}")
        for d, other in (("news", "squad"), ("squad", "news")):
            s = score(fitter(obs[other]), obs[d])
            cells.append(f"F1 {100 * s.f1:5.1f} E {s.ece or 0:.2f}")
        s = score(fitter(fitting), obs["test"]) if "test" in obs else None
        cells.append(f"F1 {100 * s.f1:5.1f} ECE {s.ece or 0:.3f} R {100 * (s.abstain_recall or 0):3.0f}" if s else "")
        print(f"{name:32} " + " ".join(f"{c:>28}" if i in (0, 1, 4) else f"{c:>16}" for i, c in enumerate(cells)))
    # What ships: the reader's calibration fitted on SQuAD alone, and two numbers refitted over it
    # on the news questions beside the bundled article's index (qa calibrate eval/calibration.jsonl).
    base = fit(obs["squad"], FEATURES)
    news_cv = score_cross_validated(obs["news"], lambda o: recalibrate(base, o, {}))
    test = score(recalibrate(base, obs["news"], {}), obs["test"]) if "test" in obs else None
    print(
        f"shipped: SQuAD fit, SQuAD CV: {score_cross_validated(obs['squad'], lambda o: fit(o, FEATURES)).line()}\n"
        f"  + news refit, news CV: {news_cv.line()}\n  + news refit, test: {test.line() if test else 'n/a'}"
    )
    prior_shift(obs["squad"], Calibration.load(ROOT / "qa" / "models" / "reader" / "calibration.json"))
    if args.plots is not None:
        plot(obs, shipped, args.plots)


def prior_shift(squad: list[Observation], calibration: Calibration) -> None:
    """The F1-best min confidence as the share of unanswerable questions changes: the validation
    questions reweighted so that unanswerable ones are that share (SQuAD 2.0's is 38%)."""
    from qa.calibration import best_min_confidence

    probs = [None if o.features is None else calibration.probability(o.features) for o in squad]
    unanswerable = sum(not o.answerable for o in squad)
    answerable = len(squad) - unanswerable

    def weighted_f1(cut: float, w_un: float) -> float:
        total = weight = 0.0
        for p, o in zip(probs, squad, strict=True):
            answered = p is not None and p >= cut
            f1 = (o.f1 if answered else 0.0) if o.answerable else float(not answered)
            w = 1.0 if o.answerable else w_un
            total, weight = total + w * f1, weight + w
        return 100 * total / weight

    print(
        f"\nshare of unanswerable questions vs the min confidence (SQuAD validation, deployed mode; shipped cut "
        f"{calibration.min_confidence:.3f}, fitted where {100 * unanswerable / len(squad):.0f}% are unanswerable)"
    )
    print(f"{'unanswerable':>12} {'F1 at shipped cut':>18} {'best cut':>9} {'F1 there':>9} {'F1 answering all':>17}")
    for share in (0.38, 0.2, 0.1, 0.033, 0.0):
        w_un = share * answerable / ((1 - share) * unanswerable)
        best = best_min_confidence(probs, squad, [1.0 if o.answerable else w_un for o in squad])
        print(
            f"{100 * share:>11.1f}% {weighted_f1(calibration.min_confidence, w_un):>18.1f} {best:>9.3f} "
            f"{weighted_f1(best, w_un):>9.1f} {weighted_f1(0.0, w_un):>17.1f}"
        )


def plot(obs: dict[str, list[Observation]], shipped: Calibration, folder: Path) -> None:
    """Reliability diagram and risk-coverage curve of the shipped fit (all features) on the SQuAD
    validation questions, cross-validated, beside the reader's own calibration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qa.calibration import cross_validated

    squad = obs["squad"]
    cv, _ = cross_validated(squad, lambda o: fit(o, FEATURES))
    own = [None if o.features is None else shipped.probability(o.features) for o in squad]
    folder.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect")
    for name, probs in (("calibrated (cross-validated)", cv), ("reader's own (qa_reader.json)", own)):
        xs, ys, ns = [], [], []
        for b in range(10):
            inside = [
                (p, o.right)
                for p, o in zip(probs, squad, strict=True)
                if p is not None and b / 10 <= p < (b + 1) / 10 + (b == 9)
            ]
            if inside:
                xs.append(sum(p for p, _ in inside) / len(inside))
                ys.append(sum(r for _, r in inside) / len(inside))
                ns.append(len(inside))
        ax.plot(xs, ys, "o-", label=name)
    ax.set_xlabel("confidence (mean in bin)")
    ax.set_ylabel("share right (F1 >= 0.5)")
    ax.set_title("Reliability, 1,507 SQuAD validation questions\nasked through the assistant")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(folder / "reliability.png", dpi=110)
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, probs in (("calibrated (cross-validated)", cv), ("reader's own (qa_reader.json)", own)):
        ranked = sorted(((p, o.right) for p, o in zip(probs, squad, strict=True) if p is not None), reverse=True)
        hits, cov, acc = 0, [], []
        for n, (_, r) in enumerate(ranked, 1):
            hits += r
            cov.append(n / len(squad))
            acc.append(hits / n)
        ax.plot(cov, acc, label=name)
    ax.set_xlabel("coverage (share of questions answered)")
    ax.set_ylabel("accuracy of the answered")
    ax.set_title("Risk-coverage, SQuAD validation, deployed mode")
    ax.set_ylim(0, 1)
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(folder / "risk_coverage.png", dpi=110)
    print(f"wrote {folder / 'reliability.png'} and {folder / 'risk_coverage.png'}")


if __name__ == "__main__":
    main()
