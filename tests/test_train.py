"""Training options on a tiny model and tiny data: several --data files, other-paragraph
negatives, compact features, the time-budget plan, and checkpoint/resume."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from qa.cli import cli
from qa.errors import InputError
from qa.squad import SquadExample, load_squad
from qa.training.config import TrainConfig
from qa.training.data import KIND_OTHER_PARAGRAPH, KIND_UNANSWERABLE, load_training_data, training_pairs
from qa.training.features import Features, build_features
from qa.training.schedule import Plan
from qa.training.trainer import train_reader

TINY = Path(__file__).parent / "data" / "squad_tiny.json"


def split_tiny(tmp_path: Path) -> tuple[Path, Path]:
    """squad_tiny.json as two files, one article each."""
    raw = json.loads(TINY.read_text(encoding="utf-8"))
    paths = []
    for article in raw["data"]:
        p = tmp_path / f"{article['title']}.json"
        p.write_text(json.dumps({"version": "v2.0", "data": [article]}), encoding="utf-8")
        paths.append(p)
    return paths[0], paths[1]


def article(title: str, paragraphs: list[tuple[str, list[tuple[str, str | None]]]]) -> list[SquadExample]:
    out = []
    for p, (context, qas) in enumerate(paragraphs):
        for q, (question, answer) in enumerate(qas):
            answers = [answer] if answer else []
            starts = [context.index(answer)] if answer else []
            out.append(SquadExample(f"{title}-{p}-{q}", title, question, context, answers, starts))
    return out


def test_data_may_be_repeated_and_validation_stays_whole_articles(tmp_path: Path) -> None:
    rockets, rivers = split_tiny(tmp_path)
    cfg = TrainConfig(data=(str(rockets), str(rivers)), val_articles=("Rivers",))
    train, val = load_training_data(cfg)
    assert {e.title for e in train} == {"Rockets"} and {e.title for e in val} == {"Rivers"}
    assert len(train) + len(val) == len(load_squad(TINY))
    with pytest.raises(InputError, match="in both"):
        load_training_data(TrainConfig(data=(str(TINY), str(rivers)), val_articles=("Rivers",)))


def test_other_paragraph_negatives_come_from_the_same_article_and_never_hold_the_answer() -> None:
    examples = article(
        "A",
        [
            ("The Rhine flows into the North Sea.", [("Where does the Rhine flow?", "the North Sea")]),
            ("Basel is a city on the Rhine.", [("Which city is on the Rhine?", "Basel")]),
            ("The North Sea is cold.", [("Is the sea cold?", None)]),
        ],
    ) + article("B", [("Paris is in France.", [("Where is Paris?", "France")])])
    pairs = training_pairs(examples, negatives=1.0, rng=random.Random(0))
    negatives = [p for p in pairs if p.kind == KIND_OTHER_PARAGRAPH]
    assert len(pairs) == len(examples) + len(negatives)
    by_question = {e.question: e for e in examples}
    assert {p.question for p in negatives} == {"Where does the Rhine flow?", "Which city is on the Rhine?"}
    for p in negatives:
        source = by_question[p.question]
        assert p.label is None and p.context != source.context
        assert p.context in {e.context for e in examples if e.title == source.title}
        assert source.answers[0].lower() not in p.context.lower()  # "the North Sea" paragraph is never used
    assert not [p for p in training_pairs(examples, 0.0, random.Random(0)) if p.kind == KIND_OTHER_PARAGRAPH]


def test_unanswerable_questions_are_oversampled_and_nothing_else_is() -> None:
    examples = article(
        "A",
        [
            ("The Rhine flows into the North Sea.", [("Where does the Rhine flow?", "the North Sea")]),
            ("The North Sea is cold.", [("How deep is the sea?", None), ("Who named the sea?", None)]),
        ],
    )
    once = training_pairs(examples, 0.0, random.Random(0))
    thrice = training_pairs(examples, 0.0, random.Random(0), unanswerable_repeats=3)
    unanswerable = [p for p in thrice if p.kind == KIND_UNANSWERABLE]
    assert len(unanswerable) == 6 and {p.question for p in unanswerable} == {
        "How deep is the sea?",
        "Who named the sea?",
    }
    assert [p for p in thrice if p.kind != KIND_UNANSWERABLE] == [p for p in once if p.kind != KIND_UNANSWERABLE]
    assert TrainConfig.from_json({**TrainConfig().to_json(), "unanswerable_repeats": 4}, "x").unanswerable_repeats == 4
    assert (
        TrainConfig.from_json(
            {k: v for k, v in TrainConfig().to_json().items() if k != "unanswerable_repeats"}, "x"
        ).unanswerable_repeats
        == 1
    )  # a checkpoint from before the option resumes as it was trained


def test_features_are_flat_arrays_and_batches_match_the_tokenizer(tiny_reader: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_reader))
    examples = load_squad(TINY)
    pairs = training_pairs(examples, 0.0, random.Random(0))
    feats = build_features(tok, pairs, max_length=64, stride=16, progress=False)
    assert feats.ids.dtype == np.uint16 and feats.ids.ndim == 1 and len(feats.offsets) == len(feats) + 1
    enc = tok(pairs[0].question, pairs[0].context, truncation="only_second", max_length=64)
    batch = feats.batch([0], tok.pad_token_id, with_token_types=True)
    n = len(enc["input_ids"])
    assert batch["input_ids"][0, :n].tolist() == enc["input_ids"]
    assert batch["token_type_ids"][0, :n].tolist() == enc["token_type_ids"]
    assert batch["attention_mask"][0].sum().item() == n
    # every answerable window's label points at the answer's text
    for i in range(len(feats)):
        if feats.start[i]:
            ids = feats.ids[feats.offsets[i] : feats.offsets[i + 1]]
            span = tok.decode(ids[feats.start[i] : feats.end[i] + 1].tolist())
            assert span.strip()
    key = "k1"
    feats.save(tmp_path / "f.npz", key)
    again = Features.load(tmp_path / "f.npz", key)
    assert again is not None and np.array_equal(again.ids, feats.ids)
    assert Features.load(tmp_path / "f.npz", "other key") is None


def test_plan_warms_up_then_decays_to_zero_at_the_planned_step() -> None:
    plan = Plan(total=100, warmup=10)
    assert plan.factor(0) == pytest.approx(0.1) and plan.factor(9) == pytest.approx(1.0)
    assert plan.factor(55) == pytest.approx(0.5) and plan.factor(100) == 0.0


def tiny_config(tmp_path: Path, tiny_reader: Path, **kw: object) -> TrainConfig:
    base = dict(
        data=(str(TINY),),
        output_dir=str(tmp_path / "run"),
        base_model=str(tiny_reader),
        val_articles=("Rivers",),
        batch_size=1,
        max_length=64,
        stride=16,
        bf16=False,
        negatives=0.0,
        learning_rate=1e-3,
    )
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def test_time_budget_plans_the_schedule_to_end_within_it(tmp_path: Path, tiny_reader: Path) -> None:
    # 60 epochs would be 180 steps; a 0.1-minute budget (with validation time reserved) stops far sooner,
    # and the schedule still ends at zero on the last step.
    cfg = tiny_config(tmp_path, tiny_reader, epochs=60.0, time_budget=0.1)
    best = train_reader(cfg, progress=False)
    state = json.loads((Path(cfg.output_dir) / "checkpoint" / "state.json").read_text())
    assert state["step"] == state["plan"]["total"] < 180 and best["step"] <= state["step"]
    assert Plan(**state["plan"]).factor(state["step"]) == 0.0
    # The saved reader is calibrated in the deployed mode: its validation questions asked through
    # the assistant over their articles.
    from qa.calibration import CALIBRATION_FILE, Calibration

    cal = Calibration.load(Path(cfg.output_dir) / CALIBRATION_FILE)
    assert cal.fitted["data"]["validation"]["questions"] > 0 and cal.reader["fingerprint"].startswith("sha256:")


def interrupt_training(monkeypatch: pytest.MonkeyPatch, cfg: TrainConfig, at_batch: int = 5) -> None:
    """Train `cfg` until its `at_batch`-th batch, then stop as Ctrl+C does (3 training questions an
    epoch: batch 5 is in the middle of epoch 2); batches are read as usual afterwards."""
    calls = {"n": 0}
    real_batch = Features.batch

    def interrupted(self: Features, *args: object, **kw: object) -> object:
        calls["n"] += 1
        if calls["n"] == at_batch:
            raise KeyboardInterrupt
        return real_batch(self, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Features, "batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_reader(cfg, progress=False)
    monkeypatch.setattr(Features, "batch", real_batch)


def test_an_interrupted_run_resumes_to_the_same_weights(
    tmp_path: Path, tiny_reader: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors.numpy import load_file

    whole = tiny_config(tmp_path / "a", tiny_reader, epochs=2.0)
    train_reader(whole, progress=False)

    cut = tiny_config(tmp_path / "b", tiny_reader, epochs=2.0)
    interrupt_training(monkeypatch, cut)
    state = json.loads((Path(cut.output_dir) / "checkpoint" / "state.json").read_text())
    assert state["step"] == 4
    best = train_reader(TrainConfig(), progress=False, resume=cut.output_dir)
    state = json.loads((Path(cut.output_dir) / "checkpoint" / "state.json").read_text())
    assert state["step"] == 6 and best["step"] <= 6
    a = load_file(str(Path(whole.output_dir) / "checkpoint" / "model.safetensors"))
    b = load_file(str(Path(cut.output_dir) / "checkpoint" / "model.safetensors"))
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6)


def test_resume_without_a_checkpoint_is_one_clear_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["train-reader", "--resume", str(tmp_path)])
    assert result.exit_code == 1
    assert "no checkpoint in" in result.stderr and "Traceback" not in result.output


def test_a_lora_run_resumes_to_the_same_adapters_and_ships_only_them(
    tmp_path: Path, tiny_reader: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LoRA (peft): an interrupted run resumed equals the uninterrupted one; the saved reader is the
    adapters and head alone, merged onto the base on load, reading as the trained model did."""
    from safetensors.numpy import load_file

    from qa.reader import Reader

    lora = {"lora_rank": 4, "epochs": 2.0, "calibrate": False}
    whole = tiny_config(tmp_path / "a", tiny_reader, **lora)
    train_reader(whole, progress=False)

    cut = tiny_config(tmp_path / "b", tiny_reader, **lora)
    interrupt_training(monkeypatch, cut)
    train_reader(TrainConfig(), progress=False, resume=cut.output_dir)
    a = load_file(str(Path(whole.output_dir) / "checkpoint" / "adapter_model.safetensors"))
    b = load_file(str(Path(cut.output_dir) / "checkpoint" / "adapter_model.safetensors"))
    assert any("lora_A" in k for k in a) and any("qa_outputs" in k for k in a)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6)

    out = Path(whole.output_dir)
    assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_reader)
    saved = load_file(str(out / "adapter_model.safetensors"))
    assert {v.dtype for v in saved.values()} == {np.dtype("float16")}

    # Loaded as any reader: merged once into the cache, then read on torch in float32.
    cache = tmp_path / "cache"
    reader = Reader(str(out), backend="torch", dtype="float32", cache=cache)
    merged = Path(reader.model_name)
    assert merged.is_relative_to(cache) and (merged / "config.json").is_file()
    assert Reader(str(out), backend="torch", cache=cache).model_name == str(merged)  # cached, not merged again
    # New reading settings (a recalibration) are read from the merged copy without merging again.
    settings = json.loads((out / "qa_reader.json").read_text())
    (out / "qa_reader.json").write_text(json.dumps({**settings, "null_threshold": 1.5}))
    assert Reader(str(out), backend="torch", cache=cache).settings.null_threshold == 1.5
    assert Reader(str(out), backend="torch", cache=cache).model_name == str(merged)
    question, context = "Which river flows through Basel?", "The Rhine flows through Basel and Strasbourg."
    spans = reader.read([question], [context])[0]
    assert spans and all(0 <= sp.start < sp.end <= len(context) for sp in spans)


def test_a_stage_stopped_by_the_clock_validates_and_resumes_to_the_same_weights(
    tmp_path: Path, tiny_reader: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--stop-after ends a stage (a session's hours) with the schedule untouched: it validates and
    checkpoints, and --resume then reaches the weights of the uninterrupted run."""
    from safetensors.numpy import load_file

    from qa.training.trainer import Trainer

    whole = tiny_config(tmp_path / "a", tiny_reader, epochs=2.0, calibrate=False)
    train_reader(whole, progress=False)

    stage = tiny_config(tmp_path / "b", tiny_reader, epochs=2.0, calibrate=False)
    monkeypatch.setattr(Trainer, "_stage_over", lambda self: self.state.step >= 4)
    best = train_reader(stage, progress=False, stop_after=1.0)
    out = Path(stage.output_dir)
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["step"] == 4 and state["plan"]["total"] == 6
    log = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["event"] == "validation"][-1] == 4 and best["step"] <= 4

    monkeypatch.undo()
    train_reader(TrainConfig(), progress=False, resume=stage.output_dir)
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == 6
    a = load_file(str(Path(whole.output_dir) / "checkpoint" / "model.safetensors"))
    b = load_file(str(out / "checkpoint" / "model.safetensors"))
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6)


def test_a_resumed_run_keeps_its_planned_schedule(
    tmp_path: Path, tiny_reader: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run planned against a time budget (say, on a lent GPU that spent it all) and resumed elsewhere
    keeps its plan: refitting the spent budget at the new machine's step time would decay the learning
    rate to zero within a few steps."""
    cfg = tiny_config(tmp_path, tiny_reader, epochs=4.0, time_budget=100.0, calibrate=False)
    interrupt_training(monkeypatch, cfg)
    path = Path(cfg.output_dir) / "checkpoint" / "state.json"
    state = json.loads(path.read_text())
    assert state["step"] == 4 and state["plan"]["total"] == 12
    state["seconds"] = 100 * 60.0  # the whole budget spent where the stage ran
    path.write_text(json.dumps(state))
    train_reader(TrainConfig(), progress=False, resume=cfg.output_dir)
    state = json.loads(path.read_text())
    assert state["step"] == state["plan"]["total"] == 12


def test_a_compacted_checkpoint_resumes(tmp_path: Path, tiny_reader: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The committed form of a checkpoint (Adam moments in bfloat16) is half the bytes and resumes, in float32."""
    import torch

    from qa.training.checkpoints import compact_checkpoint
    from qa.training.trainer import Trainer

    cfg = tiny_config(tmp_path, tiny_reader, epochs=2.0, calibrate=False)
    monkeypatch.setattr(Trainer, "_stage_over", lambda self: self.state.step >= 4)
    train_reader(cfg, progress=False, stop_after=1.0)
    monkeypatch.undo()
    path = Path(cfg.output_dir) / "checkpoint" / "optimizer.pt"
    before = path.stat().st_size
    assert compact_checkpoint(cfg.output_dir) > 0 and path.stat().st_size < 0.6 * before
    moments = torch.load(path, weights_only=True)["state"]
    assert {v["exp_avg"].dtype for v in moments.values()} == {torch.bfloat16}
    trainer = Trainer(TrainConfig(), progress=False, resume=cfg.output_dir)
    assert {s["exp_avg"].dtype for s in trainer.optimizer.state.values()} == {torch.float32}
    trainer.run()
    assert json.loads((Path(cfg.output_dir) / "checkpoint" / "state.json").read_text())["step"] == 6


def test_micro_batches_add_up_to_the_whole_batch_s_gradient(
    tmp_path: Path, tiny_reader: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a CPU a long batch is read in parts (memory); the step it takes is the whole batch's."""
    import torch

    from qa.training import trainer as trainer_module
    from qa.training.trainer import Trainer, micro_batches

    assert micro_batches(32, 384, "cpu") == [slice(0, 8), slice(8, 16), slice(16, 24), slice(24, 32)]
    assert micro_batches(32, 384, "cuda") == [slice(0, 32)] and micro_batches(3, 64, "cpu") == [slice(0, 3)]

    def gradients(tokens: int) -> dict[str, torch.Tensor]:
        monkeypatch.setattr(trainer_module, "MICRO_BATCH_TOKENS", tokens)
        torch.manual_seed(0)
        t = Trainer(tiny_config(tmp_path / str(tokens), tiny_reader, calibrate=False), progress=False)
        t.model.eval()  # no dropout: the two ways must read the same numbers
        t.scheduler = torch.optim.lr_scheduler.LambdaLR(t.optimizer, lambda n: 1.0)
        monkeypatch.setattr(t.optimizer, "step", lambda: None)  # keep the gradients to compare them
        monkeypatch.setattr(t.optimizer, "zero_grad", lambda set_to_none=True: None)
        rows = list(range(len(t.features)))
        assert len(micro_batches(len(rows), int(t.features.lengths.max()), "cpu")) == (
            1 if tokens > 1000 else len(rows)
        )
        t._step(rows)
        return {n: p.grad.clone() for n, p in t.model.named_parameters() if p.requires_grad}

    whole, parts = gradients(1 << 20), gradients(16)  # one part; one window a part
    assert whole and any(g.abs().sum() > 0 for g in whole.values())
    for name in whole:
        torch.testing.assert_close(whole[name], parts[name], rtol=1e-4, atol=1e-6)


def test_resume_with_other_settings_is_one_clear_line(tmp_path: Path) -> None:
    """--resume continues the saved run as it was planned: a setting beside it would be silently ignored."""
    result = CliRunner().invoke(cli, ["train-reader", "--resume", str(tmp_path), "--lr", "5e-4", "--epochs", "3"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "drop --epochs, --learning-rate" in result.output or "drop --learning-rate, --epochs" in result.output


def test_the_progress_bar_ends_at_the_plan_s_last_step(
    tmp_path: Path, tiny_reader: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run that ends mid-epoch shows the steps it will take, not the epoch's (a resumed run's last
    stage showed hours to go for its last minutes)."""
    cfg = tiny_config(tmp_path, tiny_reader, epochs=1.5, calibrate=False)  # 3 steps an epoch: 5 in all
    train_reader(cfg, progress=True)
    state = json.loads((Path(cfg.output_dir) / "checkpoint" / "state.json").read_text())
    bars = [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines() if line.startswith("epoch 2/")]
    assert state["step"] == state["plan"]["total"] == 5
    assert bars and all("/2 [" in line for line in bars), bars[-1:]
