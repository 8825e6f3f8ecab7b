"""The two ways the models run: ONNX Runtime (exported once, cached) and torch, which must agree.

Every test here names the backend and dtype it runs, so none depends on what `auto` chose on this
CPU; torch's bfloat16 runs on every machine (slowly where the CPU has no native bf16). The export
cache is the test session's own folder (conftest sets QA_CACHE_DIR).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qa import loading, onnx_models
from qa.errors import ModelError
from qa.loading import choose_backend
from qa.reader import Reader, tokenize_windows, window_encodings

ROOT = Path(__file__).resolve().parent.parent


def test_windows_from_tokenizers_equal_transformers_windows(tiny_reader: Path) -> None:
    """Reading tokenizes with `tokenizers` directly, training with transformers: the windows must be the same."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    fast = AutoTokenizer.from_pretrained(tiny_reader, use_fast=True)
    raw = Tokenizer.from_str(fast.backend_tokenizer.to_str())
    words = " ".join(f"word{i}," for i in range(150))
    questions = ["  Who said “crazy”?", "What’s ATACMS?", "x", "Why?" * 3]
    contexts = [words, "Ukraine’s long-range strikes — café, naïve.", "short", f"{words}\n\n{words}"]
    for max_length, stride in ((64, 16), (384, 128)):
        want = tokenize_windows(fast, questions, contexts, max_length, stride)
        got = window_encodings(raw, questions, contexts, max_length, stride)
        assert got.pairs == list(want["overflow_to_sample_mapping"])
        for w, enc in enumerate(got.encodings):
            assert enc.ids == want["input_ids"][w]
            assert enc.type_ids == want["token_type_ids"][w]
            assert [tuple(o) for o in enc.offsets] == [tuple(o) for o in want["offset_mapping"][w]]
            assert enc.sequence_ids == want.sequence_ids(w)


# Each backend test names the backend and dtype it runs and compares like with like, so that it
# holds on every CPU, whichever way `auto` would choose there. float32 on ONNX Runtime and on
# torch give the same logits up to float rounding:
FP32_TOLERANCE = 1e-3
# bfloat16 rounds every value to 8 bits of mantissa (2^-8 of it) through six layers: on the shipped
# reader its gaps (logits ~11) were off by up to 0.06 from float32's, and by as much between two
# bf16 reads that pad differently (emulated on an AMD EPYC without bf16; 0.01-0.04 measured on a CPU
# with AVX512-BF16). A broken bf16 path (weights lost, a dtype cast missing) misses by whole units.
BF16_TOLERANCE = 0.25
QUESTIONS = ["Who devised the process?", "Who said the situation was crazy?", "Which missiles?"] * 3


def _pairs(article_text: str) -> tuple[list[str], list[str]]:
    return QUESTIONS, [article_text[i * 700 : i * 700 + 1400] for i in range(len(QUESTIONS))]


def _assert_same_spans(a: list, b: list, tolerance: float) -> None:
    """Each read's best span is among the other's spans, with the same offsets, gap and null within `tolerance`."""
    assert any(a), "the reads found no span at all"
    for x, y in ((a, b), (b, a)):
        for spans, others in zip(x, y, strict=True):
            if not spans:
                continue
            best = spans[0]
            same = [t for t in others if (t.start, t.end) == (best.start, best.end)]
            assert same, f"span {best} is missing from {others}"
            assert abs(best.gap - same[0].gap) <= tolerance and abs(best.null - same[0].null) <= tolerance


@pytest.mark.slow
def test_the_shipped_reader_reads_the_same_in_float32_on_onnx_runtime_and_torch(article_text: str) -> None:
    onnx, torch_ = Reader(backend="onnx", dtype="float32"), Reader(backend="torch", dtype="float32")
    questions, contexts = _pairs(article_text)
    a, b = onnx.read(questions, contexts), torch_.read(questions, contexts)
    assert (onnx.backend, onnx.dtype, torch_.backend, torch_.dtype) == ("onnx", "float32", "torch", "float32")
    for x, y in zip(a, b, strict=True):
        assert [(s.start, s.end) for s in x] == [(s.start, s.end) for s in y]
        assert all(
            abs(s.gap - t.gap) < FP32_TOLERANCE and abs(s.null - t.null) < FP32_TOLERANCE
            for s, t in zip(x, y, strict=True)
        )


@pytest.mark.slow
def test_the_shipped_reader_in_bfloat16_reads_within_bf16_rounding(article_text: str) -> None:
    """torch in bfloat16, the path `auto` takes on CPUs with native bf16 (run here whatever the CPU)."""
    bf16, fp32 = Reader(backend="torch", dtype="bfloat16"), Reader(backend="torch", dtype="float32")
    questions, contexts = _pairs(article_text)
    together = bf16.read(questions, contexts)
    assert (bf16.backend, bf16.dtype) == ("torch", "bfloat16")
    _assert_same_spans(together, fp32.read(questions, contexts), BF16_TOLERANCE)
    # bf16 against bf16: each pair read alone is padded otherwise, and rounds otherwise.
    alone = [bf16.read([q], [c])[0] for q, c in zip(questions, contexts, strict=True)]
    _assert_same_spans(together, alone, BF16_TOLERANCE)


def test_auto_follows_the_cpu_kind_and_qa_cpu_bf16_forces_it(
    tiny_reader: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """QA_CPU_BF16 makes any machine take the path `auto` takes on the other kind of CPU."""
    for native, path in (("1", ("torch", "bfloat16")), ("0", ("onnx", "float32"))):
        monkeypatch.setenv("QA_CPU_BF16", native)
        assert loading.cpu_has_bf16() is (native == "1") and loading.cpu_flags_have_bf16() is (native == "1")
        reader = Reader(str(tiny_reader))
        reader.warm_up()
        assert (reader.backend, reader.dtype) == path
    monkeypatch.setenv("QA_CPU_BF16", "yes")
    with pytest.raises(ModelError, match="QA_CPU_BF16 must be 0 or 1"):
        choose_backend("auto")
    monkeypatch.delenv("QA_CPU_BF16")
    assert loading.forced_cpu_bf16() is None


def test_an_export_is_reused_and_made_again_when_the_model_changes(tiny_reader: Path, tmp_path: Path) -> None:
    model = tmp_path / "reader"
    model.mkdir()
    for p in tiny_reader.iterdir():
        (model / p.name).write_bytes(p.read_bytes())
    loads: list[str] = []
    first = Reader(str(model), backend="onnx", cache=tmp_path / "cache")
    real_load = first._load_torch
    first._load_torch = lambda: loads.append("load") or real_load()  # type: ignore[method-assign]
    first.warm_up()
    assert loads == ["load"] and first.backend == "onnx"
    (again := Reader(str(model), backend="onnx", cache=tmp_path / "cache"))._load_torch = _never  # type: ignore[method-assign]
    again.warm_up()  # from the cache: the model is not loaded through torch
    assert again.read(["Which word?"], ["one two three"]) == first.read(["Which word?"], ["one two three"])
    (model / "README.md").write_text("a model card")  # not part of the graph: no new export
    settings = json.loads((model / "qa_reader.json").read_text())
    (model / "qa_reader.json").write_text(json.dumps({**settings, "stride": 8}))
    (same := Reader(str(model), backend="onnx", cache=tmp_path / "cache"))._load_torch = _never  # type: ignore[method-assign]
    same.warm_up()
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps(config, indent=1))  # a changed model: exported again
    changed = Reader(str(model), backend="onnx", cache=tmp_path / "cache")
    changed._load_torch = lambda: loads.append("again") or real_load()  # type: ignore[method-assign]
    changed.warm_up()
    assert loads == ["load", "again"]
    assert len(list((tmp_path / "cache" / "onnx").iterdir())) == 1  # the earlier version's export is removed
    assert changed.read(["Which word?"], ["one two three"])


def _never() -> None:
    raise AssertionError("the cached export must be used")


def test_a_damaged_export_is_one_clear_error_naming_the_fix(tiny_reader: Path, tmp_path: Path) -> None:
    Reader(str(tiny_reader), backend="onnx", cache=tmp_path).warm_up()
    (graph,) = (tmp_path / "onnx").glob("reader-*/model.onnx")
    graph.write_bytes(b"not a graph")
    with pytest.raises(
        ModelError, match=rf"ONNX Runtime cannot load {graph}.*delete {graph.parent} to export it again"
    ):
        Reader(str(tiny_reader), backend="onnx", cache=tmp_path).warm_up()


def test_an_unwritable_cache_is_one_clear_error_or_torch_under_auto(
    tiny_reader: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache folder should be")
    with pytest.raises(ModelError, match=r"cannot write the ONNX cache folder .* set QA_CACHE_DIR.*--backend torch"):
        Reader(str(tiny_reader), backend="onnx", cache=blocked).warm_up()
    said: list[str] = []
    monkeypatch.setattr(loading, "cpu_flags_have_bf16", lambda: False)  # where auto means ONNX Runtime
    auto = Reader(str(tiny_reader), backend="auto", cache=blocked, log=said.append)
    auto.warm_up()
    assert auto.backend == "torch"
    assert len(said) == 1 and said[0].startswith("cannot write the ONNX cache folder"), said


def test_backend_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loading, "cpu_flags_have_bf16", lambda: False)
    assert choose_backend("auto") == "onnx"
    assert choose_backend("torch") == "torch"
    assert choose_backend("auto", dtype="bfloat16") == "torch"
    assert choose_backend("auto", device="cuda") == "torch"
    assert choose_backend("auto", local=False) == "torch"  # a hub id: nothing on disk to key the export by
    monkeypatch.setattr(loading, "cpu_flags_have_bf16", lambda: True)
    assert choose_backend("auto") == "torch"  # native bf16: torch's bfloat16 reads faster
    assert choose_backend("auto", dtype="float32") == "onnx"
    with pytest.raises(ModelError, match="runs float32 on the CPU"):
        choose_backend("onnx", dtype="bfloat16")
    monkeypatch.setattr(onnx_models, "onnxruntime_installed", lambda: False)
    assert choose_backend("auto", dtype="float32") == "torch"
    with pytest.raises(ModelError, match="pip install onnxruntime"):
        choose_backend("onnx")
    with pytest.raises(ModelError, match="backend must be one of auto, onnx, torch"):
        choose_backend("tensorrt")


@pytest.mark.slow
def test_a_question_on_onnx_runtime_never_imports_torch(assistant_on, tmp_path: Path) -> None:
    """The cold start: torch and transformers are most of it, and ONNX Runtime needs neither.

    The reader is named: `Settings(...)` reads no environment, and the default, v3, is LoRA adapters
    whose first use merges them with torch (once, cached), which is not this test's question."""
    onnx = assistant_on("onnx", "float32")  # exports both models into this session's cache, as a first run would
    script = (
        "import sys\n"
        "from qa.assistant import Assistant\n"
        "from qa.settings import Settings\n"
        f"s = Settings(seeds={str(onnx.seeds)!r}, index_dir={str(onnx.index_dir)!r}, backend='onnx', "
        f"reader_model={onnx.settings.reader_model!r})\n"
        "r = Assistant(settings=s, log=lambda m: None).ask('Who devised the process?')\n"
        "print(r.answers[0].text if r.answers else '', [m for m in ('torch', 'transformers') if m in sys.modules])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=os.environ, check=False
    )
    assert done.returncode == 0, done.stderr
    expected = onnx.ask("Who devised the process?").answers[0].text
    assert done.stdout.strip() == f"{expected} []"


def test_the_backend_setting_resolves_flag_over_environment() -> None:
    from qa.errors import InputError
    from qa.settings import Settings

    assert Settings.resolve(env={"QA_BACKEND": "Torch"}).backend == "torch"
    assert Settings.resolve(env={"QA_BACKEND": "torch"}, backend="onnx").backend == "onnx"
    assert Settings.resolve(env={}).backend == "auto"
    with pytest.raises(InputError, match="QA_BACKEND must be one of auto, onnx, torch, got 'gpu'"):
        Settings.resolve(env={"QA_BACKEND": "gpu"})


@pytest.mark.slow
def test_qa_ask_answers_the_same_on_either_backend(assistant) -> None:
    """float32 on both (torch's own default would be bfloat16 on a CPU with native bf16)."""
    base = [sys.executable, "-m", "qa.cli", "ask", "Who said the situation was crazy?", "--json"]
    base += ["--seeds", str(assistant.seeds), "--index-dir", str(assistant.index_dir)]
    runs = []
    float32 = {"QA_READER_DTYPE": "float32"}
    for extra, env in ((["--backend", "torch"], float32), ([], {"QA_BACKEND": "onnx", **float32})):
        done = subprocess.run([*base, *extra], capture_output=True, text=True, env={**os.environ, **env}, check=False)
        assert done.returncode == 0, done.stderr
        runs.append(json.loads(done.stdout)["answers"])
    assert runs[0], "no answer to compare"
    assert [(a["text"], a["start"], a["end"]) for a in runs[0]] == [(a["text"], a["start"], a["end"]) for a in runs[1]]
    bad = subprocess.run(base, capture_output=True, text=True, env={**os.environ, "QA_BACKEND": "gpu"}, check=False)
    assert bad.returncode == 1 and bad.stderr.strip().splitlines() == [
        "Error: QA_BACKEND must be one of auto, onnx, torch, got 'gpu'"
    ]


@pytest.mark.slow
def test_qa_ask_in_bfloat16_answers_as_bfloat16_does_in_process(assistant_on) -> None:
    """The bf16 path through the CLI, against bf16 in this process (like with like)."""
    bf16 = assistant_on("torch", "bfloat16")
    question = "Who said the situation was crazy?"
    cmd = [sys.executable, "-m", "qa.cli", "ask", question, "--json", "--backend", "torch"]
    cmd += ["--seeds", str(bf16.seeds), "--index-dir", str(bf16.index_dir)]
    env = {**os.environ, "QA_READER_DTYPE": "bf16"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    (got,) = json.loads(done.stdout)["answers"]
    want = bf16.ask(question).answer
    assert want is not None and (got["text"], got["start"], got["end"]) == (want.text, want.start, want.end)
    assert abs(got["score"] - want.score) <= 0.05  # a probability from a bf16 gap: within its rounding


def test_a_model_torch_cannot_export_runs_on_torch_unless_onnx_was_asked_for(
    tiny_reader: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fails(*args: object) -> None:
        raise RuntimeError("Unsupported: an operator the exporter lacks\nmore detail")

    monkeypatch.setattr(onnx_models, "_export", fails)
    monkeypatch.setattr(loading, "cpu_flags_have_bf16", lambda: False)
    said: list[str] = []
    auto = Reader(str(tiny_reader), cache=tmp_path, log=said.append)
    auto.warm_up()
    assert auto.backend == "torch" and auto.read(["Which?"], ["one two three"])
    assert said == [
        f"Preparing the reader for ONNX Runtime (once per model; kept in {tmp_path})...",
        f"could not export the reader {tiny_reader} to ONNX (Unsupported: an operator the exporter lacks); "
        "running the reader with torch instead",
    ]
    with pytest.raises(ModelError, match=r"could not export the reader .*; use --backend torch"):
        Reader(str(tiny_reader), backend="onnx", cache=tmp_path).warm_up()


@pytest.mark.slow
def test_one_assistant_answers_from_several_threads_at_once(assistant) -> None:
    """A server shares one reader across threads: nothing it holds may be changed per call."""
    from concurrent.futures import ThreadPoolExecutor

    questions = ["Who devised the process?", "Who said the situation was crazy?", "Which newspaper reported it?"] * 4
    alone = [assistant.ask(q).answer for q in questions]
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(lambda q: assistant.ask(q).answer, questions))
    assert [(a.text, a.start, a.end) if a else None for a in together] == [
        (a.text, a.start, a.end) if a else None for a in alone
    ]
