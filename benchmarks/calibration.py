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
    DEFAULT_EXPECT_UNANSWERABLE,
    FEATURES,
    Calibration,
    Observation,
    cross_validated,
    fit,
    recalibrate,
    score,
    score_cross_validated,
    score_probabilities,
    share_weights,
    weighted_f1,
    with_cut,
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


# Each domain: (gold file, folder of its articles), asked over a private copy of the folder, so
# that no checked-in index is read or written. "news" and SQuAD's "squad" fit; the others test.
NEWS_FOLDER = ROOT / "eval" / "news"
DOMAINS = {
    "news": (ROOT / "eval" / "calibration.jsonl", ROOT / "seeds"),
    "test": (ROOT / "eval" / "gold.jsonl", ROOT / "seeds"),
    "newsfolder": (NEWS_FOLDER / "questions.jsonl", NEWS_FOLDER / "articles"),
}
FIT_DOMAINS = ("news", "squad")


def observe_all(path: Path, domains: list[str], reader_model: str | None = None) -> dict[str, list[Observation]]:
    """The observations of `domains`, asked through the whole assistant (fresh index, the reader's
    features recorded, so that any calibration and cut can be scored offline), kept in `path`:
    a domain already there for the same reader is not asked again."""
    import shutil
    import tempfile

    from qa.assistant import Assistant
    from qa.calibration import reader_fingerprint
    from qa.evaluate import load_gold
    from qa.loading import resolve_reader_model
    from qa.settings import Settings

    settings = Settings.resolve(env={}, seeds=ROOT / "seeds", reader_model=reader_model)
    reader = reader_fingerprint(resolve_reader_model(settings.reader_model))
    saved: dict = {}
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("reader") != reader:  # observations of another reader are asked again
            saved = {}
    out = {k: [Observation(**o) for o in v] for k, v in saved.items() if k != "reader" and k in domains}
    todo = [d for d in domains if d not in out]
    if todo:
        with tempfile.TemporaryDirectory(prefix="qa-calibration-bench-") as tmp:
            shared = None
            for domain in todo:
                folder = Path(tmp) / domain / "articles"
                if domain == "squad":
                    items = squad_gold(SQUAD, VALIDATION, folder)
                else:
                    gold, articles = DOMAINS[domain]
                    shutil.copytree(articles, folder)
                    items = load_gold(gold)
                assistant = Assistant(
                    settings=settings.with_(seeds=folder, index_dir=Path(tmp) / domain / "index"),
                    reader=shared.reader if shared else None,
                    embedder=shared.embedder if shared else None,
                    log=lambda m: None,
                )
                # The reader's calibration decides nothing recorded here (features and F1 only).
                assistant.__dict__["calibration"] = Calibration.from_reader_settings(assistant.reader.settings)
                shared = shared or assistant
                print(f"asking {len(items)} questions of {domain}", file=sys.stderr)
                out[domain] = observe(assistant, items, domain, progress=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        keep = {k: v for k, v in saved.items() if k != "reader"}
        keep.update({k: [asdict(o) for o in v] for k, v in out.items()})
        tmp_path = path.with_suffix(".tmp")
        tmp_path.write_text(json.dumps({"reader": reader, **keep}), encoding="utf-8")
        tmp_path.replace(path)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--observations", type=Path, default=ROOT / "runs" / "calibration-observations.json")
    parser.add_argument("--plots", type=Path, default=None)
    parser.add_argument("--observe-only", action="store_true", help="Ask the questions, keep them, stop.")
    parser.add_argument(
        "--baseline", type=Path, default=None, help="A calibration to compare with (e.g. the one shipped before)."
    )
    parser.add_argument("--reader-model", default=None, help="The reader to observe [default: the shipped one].")
    parser.add_argument("--share", type=float, default=DEFAULT_EXPECT_UNANSWERABLE, help="Unanswerable share.")
    args = parser.parse_args()
    domains = ["news", "squad", "test"] + (["newsfolder"] if DOMAINS["newsfolder"][0].is_file() else [])
    obs = observe_all(args.observations, domains, args.reader_model)
    if args.observe_only:
        return
    fitting = obs["news"] + obs["squad"]
    from qa.loading import resolve_reader_model
    from qa.reader import ReaderSettings
    from qa.settings import Settings

    reader_dir = Path(resolve_reader_model(Settings.resolve(env={}, reader_model=args.reader_model).reader_model))
    shipped = Calibration.from_reader_settings(ReaderSettings.load(reader_dir))
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
    if (reader_dir / "calibration.json").is_file():
        prior_shift(obs["squad"], Calibration.load(reader_dir / "calibration.json"))
    for_the_mix(obs, args.share, Calibration.load(args.baseline) if args.baseline else None)
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

    share = calibration.fitted.get("expect_unanswerable")
    chosen = (
        f"chosen for {100 * share:.0f}% unanswerable" if share is not None else "chosen for the mix it was fitted on"
    )
    print(
        f"\nshare of unanswerable questions vs the min confidence (SQuAD validation, "
        f"{100 * unanswerable / len(squad):.0f}% unanswerable, deployed mode; "
        f"shipped cut {calibration.min_confidence:.3f}, {chosen})"
    )
    print(f"{'unanswerable':>12} {'F1 at shipped cut':>18} {'best cut':>9} {'F1 there':>9} {'F1 answering all':>17}")
    for share in (0.38, 0.2, 0.1, 0.033, 0.0):
        w_un = share * answerable / ((1 - share) * unanswerable)
        best = best_min_confidence(probs, squad, [1.0 if o.answerable else w_un for o in squad])
        print(
            f"{100 * share:>11.1f}% {weighted_f1(calibration.min_confidence, w_un):>18.1f} {best:>9.3f} "
            f"{weighted_f1(best, w_un):>9.1f} {weighted_f1(0.0, w_un):>17.1f}"
        )


def mix_line(probs: list, observations: list[Observation], cuts: float | list[float], share: float) -> str:
    """F1 reweighted to `share` unanswerable, then what was answered and abstained on, F1 and ECE as asked."""
    s = score_probabilities(probs, observations, cuts)
    each = [cuts] * len(probs) if isinstance(cuts, float) else cuts
    answered = [p is not None and p >= c for p, c in zip(probs, each, strict=True)]
    n_ans = sum(o.answerable for o in observations)
    got = sum(a for a, o in zip(answered, observations, strict=True) if o.answerable)
    held = sum(not a for a, o in zip(answered, observations, strict=True) if not o.answerable)
    weights = share_weights(observations, share)
    f1_at = weighted_f1(probs, observations, cuts, weights)
    ece_at = weighted_ece(probs, observations, answered, weights)
    return (
        f"F1@{100 * share:.0f}% {100 * f1_at:5.1f} ECE@{100 * share:.0f}% {ece_at:.3f}  F1 {100 * s.f1:5.1f}  "
        f"answered {got:4d}/{n_ans:<4d} of the answerable  "
        f"abstained {held:3d}/{len(observations) - n_ans:<3d} of the unanswerable  ECE {s.ece or 0:.3f}"
    )


def weighted_ece(probs: list, observations: list[Observation], answered: list[bool], weights: list[float]) -> float:
    """ECE over the answered questions (10 bins), each counted with its weight: the calibration
    error in a mix where the weights put the unanswerable share."""
    total = mass = 0.0
    for b in range(10):
        inside = [
            (p, o.right, w)
            for p, o, a, w in zip(probs, observations, answered, weights, strict=True)
            if a and p is not None and (b / 10 <= p < (b + 1) / 10 or (b == 9 and p == 1.0))
        ]
        m = sum(w for *_, w in inside)
        if m:
            conf = sum(p * w for p, _, w in inside) / m
            acc = sum(r * w for _, r, w in inside) / m
            total, mass = total + m * abs(conf - acc), mass + m
    return total / mass if mass else 0.0


def for_the_mix(obs: dict[str, list[Observation]], share: float, baseline: Calibration | None) -> None:
    """The default cut for the mix people ask (issue 25): which calibration, cut for `share`
    unanswerable over both fitting domains, and what it does on the test sets (never fitted on)."""
    fitting = obs["news"] + obs["squad"]
    # Both fits cut over both domains; "both domains" is what `qa calibrate eval/calibration.jsonl
    # --squad ... --fit full --expect-unanswerable SHARE` writes.
    candidates = {
        "SQuAD fit": lambda o: with_cut(
            fit([x for x in o if x.domain == "squad"], FEATURES, expect_unanswerable=share), o, share
        ),
        "both domains fit": lambda o: fit(o, FEATURES, expect_unanswerable=share),
    }
    print(
        f"\nthe cut for {100 * share:.0f}% unanswerable, chosen over news + SQuAD; validation, 5-fold cross-validated:"
    )
    for name, fitter in candidates.items():
        probs, cuts = cross_validated(fitting, fitter)
        for d in ("news", "squad"):
            idx = [i for i, o in enumerate(fitting) if o.domain == d]
            line = mix_line([probs[i] for i in idx], [fitting[i] for i in idx], [cuts[i] for i in idx], share)
            print(f"  {name:18} {d:6} {line}")
    chosen = candidates["both domains fit"](fitting)
    squad = obs["squad"]
    probs = [None if o.features is None else chosen.probability(o.features) for o in squad]
    asked = sum(not o.answerable for o in squad) / len(squad)
    ones = [1.0] * len(squad)
    at_default = weighted_f1(probs, squad, chosen.min_confidence, ones)
    at_mix = weighted_f1(probs, squad, chosen.cut_for(asked), ones)
    print(
        f"what the default costs on SQuAD's own mix ({100 * asked:.0f}% unanswerable; in-sample): F1 "
        f"{100 * at_default:.1f} at the default cut {chosen.min_confidence:.3f}, {100 * at_mix:.1f} at the curve's "
        f"cut for that mix ({chosen.cut_for(asked):.3f}, --expect-unanswerable {asked:.2f})"
    )
    tests = {d: obs[d] for d in ("test", "newsfolder") if d in obs}
    print("\ntest sets (never used to fit or choose anything): the whole assistant, a fresh index")
    rows: list[tuple[str, Calibration, float]] = []
    if baseline is not None:
        rows += [(f"before: its cut {baseline.min_confidence:.3f}", baseline, baseline.min_confidence)]
        rows += [("before, at cut 0.20", baseline, 0.2)]
    for name, fitter in candidates.items():
        cal = fitter(fitting)
        rows.append((f"{name}: cut {cal.min_confidence:.3f}", cal, cal.min_confidence))
        if name == "both domains fit":
            index_cal = recalibrate(cal, obs["news"], {}, share)
            rows.append(
                (f"  + news refit (index): {index_cal.min_confidence:.3f}", index_cal, index_cal.min_confidence)
            )
    for d, part in tests.items():
        for name, cal, cut in rows:
            probs = [None if o.features is None else cal.probability(o.features) for o in part]
            print(f"  {d:10} {name:34} {mix_line(probs, part, cut, share)}")
    print("\nthe content-word check (no word of the question in the passages read: abstain, no guess):")
    for d, part in obs.items():
        off = [o for o in part if not o.grounded]
        print(
            f"  {d:10} {len(off)}/{len(part)} questions stopped ({sum(o.answerable for o in off)} answerable): "
            + "; ".join(repr(o.question) for o in off[:4])
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
