"""The shared page under load: the lanes (qa.lanes) and the bounds (qa.limits).

The lanes and the gate are tested as plain objects first; then a real Gradio server (qa.web.serve,
in this process) over the pure-Python fakes, whose embedder takes a fixed time per text, so that
indexing a pasted article takes seconds while a question takes milliseconds. The requests go as
a browser or an API client sends them (benchmarks/serve_load.py holds the raw protocol).
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import numpy as np
import pytest
from fakes import FakeEmbedder, FakeReader

from qa.assistant import MAX_QUESTION_CHARS, Assistant
from qa.errors import InputError
from qa.handlers import SessionArticles, Visit, batch_handler, session_ask_handler, use_article_handler
from qa.lanes import IndexLane, Lane, LaneFull, ModelGate, SlicedEmbedder
from qa.limits import LIMITS, MAX_BATCH_QUESTIONS, MAX_TOP_K, refusal

ROOT = Path(__file__).resolve().parent.parent
DOC = "pentagon-ukraine-long-range-strikes.txt"
WHO = "Who devised the process to evaluate requests for long-range missile strikes?"
SLOW_S = 0.02  # per text embedded: a pasted article of ~100 chunks takes ~2 s to index


class SlowEmbedder(FakeEmbedder):
    """The fake embedder at a fixed cost per text (time.sleep: the GIL is free, as in ONNX Runtime)."""

    def __init__(self, seconds: float = SLOW_S) -> None:
        super().__init__()
        self.delay = seconds
        self.texts = 0
        self.threads: set[str] = set()

    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        self.texts += len(texts)
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay * len(texts))
        return super().encode(texts)


class SlowReader(FakeReader):
    """The fake reader at a fixed cost per (question, passage) pair."""

    delay = 0.0

    def read(self, questions: list[str], contexts: list[str], n_best: int = 5) -> list:
        time.sleep(self.delay * len(questions))
        return super().read(questions, contexts, n_best)


def article(chunks: int) -> str:
    """About `chunks` chunks of prose (600-character chunks, 200 overlapping)."""
    sentence = "The committee met on Tuesday and reviewed the budget for the new bridge over the river. "
    return sentence * max(1, (chunks * 400 + 200) // len(sentence))


# --- the gate and the lanes, as plain objects ------------------------------------------------------


def test_a_waiting_question_goes_before_waiting_bulk_work() -> None:
    gate, order = ModelGate(bulk_wait=60), []
    started = threading.Event()

    def job(name: str, bulk: bool) -> None:
        with gate.hold(bulk=bulk):
            order.append(name)

    with gate.hold(bulk=True):  # a slice of bulk work is running
        bulk = threading.Thread(target=job, args=("bulk", True))
        bulk.start()
        while gate.waiting() != (0, 1):
            time.sleep(0.01)
        asking = threading.Thread(target=job, args=("question", False))
        asking.start()
        while gate.waiting() != (1, 1):
            time.sleep(0.01)
        started.set()
    bulk.join()
    asking.join()
    assert order == ["question", "bulk"]


def test_bulk_work_that_waited_long_enough_gets_its_slice() -> None:
    gate, order = ModelGate(bulk_wait=0.05), []

    def job(name: str, bulk: bool) -> None:
        with gate.hold(bulk=bulk):
            order.append(name)

    with gate.hold():
        threads = [threading.Thread(target=job, args=("bulk", True))]
        threads[0].start()
        while gate.waiting() != (0, 1):
            time.sleep(0.01)
        time.sleep(0.1)
        threads.append(threading.Thread(target=job, args=("question", False)))
        threads[1].start()
        while gate.waiting() != (1, 1):
            time.sleep(0.01)
    for t in threads:
        t.join()
    assert order == ["bulk", "question"]  # a steady stream of questions never stops it


def test_the_gate_is_reentrant_for_a_question_s_own_model_calls() -> None:
    gate = ModelGate()
    embedder = SlicedEmbedder(FakeEmbedder(), gate)
    with gate.hold():
        assert embedder.encode_queries(["a question"]).shape == (1, 64)  # does not wait for itself


def test_a_lane_runs_one_job_keeps_its_queue_and_refuses_the_rest() -> None:
    lane = Lane("test", queue=1, busy="{ahead} ahead of you, {queue} may wait; try again in a minute")
    release, places, done = threading.Event(), [], []

    def first() -> None:
        with lane.turn():
            release.wait(10)
            done.append("first")

    def second() -> None:
        with lane.turn(places.append):
            done.append("second")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    threads[0].start()
    while len(lane) < 1:
        time.sleep(0.01)
    threads[1].start()
    while not places:
        time.sleep(0.01)
    with pytest.raises(LaneFull) as refused, lane.turn():
        pass
    assert str(refused.value) == "2 ahead of you, 1 may wait; try again in a minute"
    release.set()
    for t in threads:
        t.join()
    assert done == ["first", "second"] and places[0] == 1 and len(lane) == 0


def test_sliced_embedding_gives_the_same_vectors_and_reports_progress() -> None:
    texts = [f"text number {i} about the river" for i in range(10)]
    seen: list[tuple[int, int]] = []
    sliced = SlicedEmbedder(FakeEmbedder(), ModelGate(), slice_size=4, progress=lambda d, t: seen.append((d, t)))
    assert np.array_equal(sliced.encode(texts), FakeEmbedder().encode(texts))
    assert seen == [(4, 10), (8, 10), (10, 10)] and sliced.embedded == 10


def test_an_article_over_the_time_limit_is_refused_before_the_work() -> None:
    lane, probed = IndexLane(limit_s=1.0), []

    def probe(n: int) -> float:
        probed.append(n)
        return 0.1 * n  # 0.1 s per chunk here

    lane.check("small.txt", 3_000, 8, probe)  # 0.8 s: within the limit
    with pytest.raises(InputError) as refused:
        lane.check("big.txt", 100_000, 250, probe)
    message = str(refused.value)
    assert "\n" not in message and "250 chunks" in message and "about 25 s" in message
    assert "limit of 1 s" in message and "qa ask --article" in message
    assert probed == [8]  # measured once, on eight chunks


# --- the table of limits and the raw calls' refusal ---------------------------------------------------


def test_the_docs_table_holds_every_limit() -> None:
    table = (ROOT / "docs" / "serving.md").read_text(encoding="utf-8")
    rows = {tuple(c.strip() for c in line.strip("|").split("|")) for line in table.splitlines() if line.startswith("|")}
    for row in LIMITS:
        assert row in rows, f"docs/serving.md lacks the row {' | '.join(row)} (qa.limits.LIMITS)"


def test_a_raw_call_s_arguments_are_checked_before_it_is_queued() -> None:
    def check(question: object = None, top_k: object = 1) -> None:
        if not isinstance(question, str) or len(question) > 5:
            raise InputError("the question is too long")

    assert str(refusal(json.dumps({"data": ["abcdefg", 1]}).encode(), check)) == "the question is too long"
    assert refusal(json.dumps({"data": ["abc", 1]}).encode(), check) is None
    assert refusal(json.dumps({"data": ["abc", 1, 2, 3]}).encode(), check) is None  # Gradio says what is wrong
    assert refusal(b"not json", check) is None


# --- a real server over the fakes ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("serve_load", ROOT / "benchmarks" / "serve_load.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


LANES: list[Any] = []  # the module server's lanes (qa.web.Lanes)
READER: list[SlowReader] = []
EMBEDDER: list[SlowEmbedder] = []  # and its embedder (the server shares it through the gate)


@pytest.fixture(scope="module")
def server(seeds_copy: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Assistant]]:
    """(url, assistant) of a real Gradio server (qa.web.serve) over the fakes."""
    from helpers import free_port

    from qa import web

    reader = SlowReader({WHO: "Eldridge Colby", "Who met?": "the committee"})
    READER[:] = [reader]
    EMBEDDER[:] = [SlowEmbedder(0.0)]
    assistant = Assistant(
        seeds_copy, tmp_path_factory.mktemp("index"), reader=reader, embedder=EMBEDDER[0], log=lambda m: None
    )
    port = free_port()
    LANES[:] = [web.Lanes()]
    app = web.serve(assistant, "127.0.0.1", port, block=False, lanes=LANES[0])
    try:
        yield f"http://127.0.0.1:{port}/", assistant
    finally:
        app.close()


def ask(url: str, load: ModuleType, *data: Any) -> tuple[bool, Any]:
    with httpx.Client(timeout=60) as client:
        return load.call(client, url, "ask", list(data))


def paste(url: str, load: ModuleType, text: str) -> tuple[bool, str, int]:
    fn_index, trigger = load.page_event(url, "use-article")
    with httpx.Client(timeout=120) as client:
        return load.use_article(client, url, text, fn_index, trigger)


def test_questions_keep_flowing_while_an_article_is_indexed(server: tuple[str, Assistant], load: ModuleType) -> None:
    url, _ = server
    EMBEDDER[0].delay = SLOW_S
    try:
        pasted: list[Any] = []
        thread = threading.Thread(target=lambda: pasted.append((paste(url, load, article(120)), time.monotonic())))
        thread.start()
        time.sleep(0.5)  # it is being embedded (~2.4 s)
        answered = []
        for _ in range(3):
            ok, out = ask(url, load, WHO, 1, None)
            assert ok and out["answers"][0]["text"] == "Eldridge Colby"
            answered.append(time.monotonic())
        thread.join()
    finally:
        EMBEDDER[0].delay = 0.0
    (ok, status, progress), finished = pasted[0]
    assert ok, status
    assert "120 chunks" in status or "chunks" in status
    assert progress >= 3  # the page showed the embedding's progress
    assert max(answered) < finished, "a question waited for the whole article to be indexed"


def test_questions_keep_flowing_while_a_batch_is_answered(
    server: tuple[str, Assistant], load: ModuleType, tmp_path: Path
) -> None:
    url, _ = server
    questions = tmp_path / "many.txt"
    questions.write_text(f"{WHO}\n" * 40, encoding="utf-8")  # 40 x 3 pairs x 20 ms: ~2.4 s
    READER[0].delay = SLOW_S
    try:
        batched: list[Any] = []

        def batch() -> None:
            with httpx.Client(timeout=120) as client:
                batched.append(load.call(client, url, "batch", [load.upload(client, url, questions), 1, None]))
            batched.append(time.monotonic())

        thread = threading.Thread(target=batch)
        thread.start()
        time.sleep(0.7)
        answered = []
        for _ in range(3):
            ok, out = ask(url, load, WHO, 1, None)
            assert ok and out["answers"][0]["text"] == "Eldridge Colby"
            answered.append(time.monotonic())
        thread.join()
    finally:
        READER[0].delay = 0.0
    (ok, records), finished = batched
    assert ok and len(records) == 40 and all(r["answer"] == "Eldridge Colby" for r in records)
    assert max(answered) < finished, "a question waited for the whole batch"


def test_the_index_lane_refuses_beyond_its_queue(server: tuple[str, Assistant], load: ModuleType) -> None:
    from qa.limits import INDEX_QUEUE

    url, _ = server
    EMBEDDER[0].delay = SLOW_S
    try:
        results: list[tuple[bool, str, int]] = []
        threads = [
            threading.Thread(target=lambda: results.append(paste(url, load, article(60))))
            for _ in range(INDEX_QUEUE + 2)
        ]
        for t in threads:
            t.start()
            time.sleep(0.2)
        for t in threads:
            t.join()
    finally:
        EMBEDDER[0].delay = 0.0
    refused = [status for ok, status, _ in results if not ok]
    assert sum(ok for ok, _, _ in results) == INDEX_QUEUE + 1
    assert len(refused) == 1 and "try again in a minute" in refused[0] and "qa ask --article" in refused[0]


def test_an_article_that_would_take_too_long_is_refused_up_front(
    seeds_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, load: ModuleType
) -> None:
    from helpers import free_port

    from qa import web

    monkeypatch.setenv("QA_MAX_INDEX_SECONDS", "0.5")
    embedder = SlowEmbedder(SLOW_S)
    assistant = Assistant(seeds_copy, tmp_path / "index", reader=FakeReader({}), embedder=embedder, log=lambda m: None)
    port = free_port()
    app = web.serve(assistant, "127.0.0.1", port, block=False)
    try:
        url = f"http://127.0.0.1:{port}/"
        before = embedder.texts
        ok, status, _ = paste(url, load, article(100))  # ~2 s to embed here
        assert not ok and "over its limit of 0.5 s" in status and "qa ask --article" in status
        assert embedder.texts - before <= 8  # only the probe's chunks were embedded
        ok, status, _ = paste(url, load, "A short article. It is quick to index.")
        assert ok, status
    finally:
        app.close()


def bounds_cases(tmp_path: Path) -> list[tuple[str, list[Any], str]]:
    """(endpoint, arguments, what the refusal says): one per bound of the API."""
    many = tmp_path / "many.txt"
    many.write_text("Who met?\n" * (MAX_BATCH_QUESTIONS + 1), encoding="utf-8")
    few = tmp_path / "few.txt"
    few.write_text("Who met?\n" * 2, encoding="utf-8")
    return [
        ("ask", ["x" * (MAX_QUESTION_CHARS + 1), 1, None], f"keep it to {MAX_QUESTION_CHARS} at most"),
        ("ask", [WHO, MAX_TOP_K + 1, None], f"top-k must be a whole number from 1 to {MAX_TOP_K}"),
        ("ask", [WHO, 0, None], "top-k must be"),
        ("ask", [WHO, 1, "missing.txt"], "no article 'missing.txt'"),
        ("batch", [many, 1, None], f"has {MAX_BATCH_QUESTIONS + 1:,} questions"),
        ("batch", [few, MAX_TOP_K + 1, None], "top-k must be"),
        ("batch", [few, 1, "missing.txt"], "no article 'missing.txt'"),
    ]


def test_every_bound_is_one_line_and_the_same_on_the_api_and_the_page(
    server: tuple[str, Assistant], load: ModuleType, tmp_path: Path
) -> None:
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    url, assistant = server
    client = Client(url, verbose=False)
    for api, args, says in bounds_cases(tmp_path):
        with httpx.Client(timeout=60) as raw:
            data = [load.upload(raw, url, a) if isinstance(a, Path) else a for a in args]
            response = raw.post(f"{url}gradio_api/call/{api}", json={"data": data})
        assert response.status_code == 400, (api, args[1:], response.text)
        line = response.json()["error"]
        assert says in line and "\n" not in line and "Traceback" not in line
        # gradio_client (queue/join) gets the same line as the endpoint's error
        with pytest.raises(AppError) as err:
            client.predict(*[handle_file(str(a)) if isinstance(a, Path) else a for a in args], api_name=f"/{api}")
        assert str(err.value) == line
        # the page says the same, in its status line
        if api == "ask":
            status = session_ask_handler(Visit(assistant, SessionArticles(), "tab"), *args).status
        else:
            status = batch_handler(assistant, str(args[0]), args[1], args[2]).status
        assert status.replace("\\", "") == f"**Cannot answer:** {line}"
    assert client.predict(WHO, MAX_TOP_K, None, api_name="/ask")["answers"]  # within bounds: answered


def test_a_pasted_article_over_the_cap_is_refused_on_the_page_and_in_a_raw_call(
    server: tuple[str, Assistant], load: ModuleType
) -> None:
    from qa.documents import MAX_ARTICLE_BYTES
    from qa.upload_guard import MAX_BODY_BYTES

    url, assistant = server
    ok, status, _ = paste(url, load, "x" * (MAX_ARTICLE_BYTES + 1))
    assert not ok and "larger than 1 MB" in status
    view = use_article_handler(assistant, SessionArticles(), "tab", "x" * (MAX_ARTICLE_BYTES + 1))
    assert re.sub(r"\\", "", view.status) == re.sub(r"\\", "", status)
    fn_index, _trigger = load.page_event(url, "use-article")
    huge = {"data": ["x" * MAX_BODY_BYTES, None, None], "fn_index": fn_index, "session_hash": "raw"}
    response = httpx.post(f"{url}gradio_api/queue/join", json=huge, timeout=60)
    assert response.status_code == 413 and "\n" not in response.json()["error"]


def test_a_full_batch_lane_refuses_a_raw_call_with_429_and_a_client_with_the_same_line(
    server: tuple[str, Assistant], load: ModuleType, tmp_path: Path
) -> None:
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    from qa.limits import BATCH_QUEUE

    url, _ = server
    questions = tmp_path / "q.txt"
    questions.write_text("Who met?\n", encoding="utf-8")
    lane = LANES[0].batch
    release = threading.Event()
    holders = [threading.Thread(target=lambda: hold(lane, release)) for _ in range(BATCH_QUEUE + 1)]
    for t in holders:
        t.start()
    try:
        while len(lane) < BATCH_QUEUE + 1:
            time.sleep(0.01)
        with httpx.Client(timeout=60) as raw:
            response = raw.post(
                f"{url}gradio_api/call/batch", json={"data": [load.upload(raw, url, questions), 1, None]}
            )
        assert response.status_code == 429
        line = response.json()["error"]
        assert "try again in a minute" in line and "qa batch FILE" in line and "\n" not in line
        with pytest.raises(AppError) as err:
            Client(url, verbose=False).predict(handle_file(str(questions)), 1, None, api_name="/batch")
        assert str(err.value) == line
    finally:
        release.set()
        for t in holders:
            t.join()
    ok, records = load.call(httpx.Client(timeout=60), url, "batch", [questions_upload(url, load, questions), 1, None])
    assert ok and len(records) == 1  # room again once the lane moved on


def questions_upload(url: str, load: ModuleType, path: Path) -> dict[str, Any]:
    with httpx.Client(timeout=60) as raw:
        return load.upload(raw, url, path)


def hold(lane: Lane, release: threading.Event) -> None:
    with lane.turn():
        release.wait(30)


def test_a_batch_file_over_the_size_limit_is_refused(
    server: tuple[str, Assistant], load: ModuleType, tmp_path: Path
) -> None:
    from qa.limits import MAX_BATCH_BYTES

    url, assistant = server
    big = tmp_path / "big.txt"
    big.write_text(("Who met? " * 100 + "\n") * (MAX_BATCH_BYTES // 900 + 1), encoding="utf-8")
    # The upload route takes files up to the largest tab's cap (a PDF article's); /batch checks its own.
    with httpx.Client(timeout=60) as raw:
        response = raw.post(f"{url}gradio_api/call/batch", json={"data": [load.upload(raw, url, big), 1, None]})
    assert response.status_code == 400
    line = response.json()["error"]
    assert "larger than 2 MB" in line and "qa batch" in line and "\n" not in line
    status = batch_handler(assistant, str(big), 1, None).status  # the page's handler
    assert status.replace("\\", "") == f"**Cannot answer:** {line}"
