"""gradio_client against a real `qa serve` process: the named endpoints /ask and /batch.

The server is started the way a user starts it (the `qa serve` command, in a subprocess, on
a free port) and its answers are compared with the CLI's over the same articles and index.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import free_port, start_server

pytestmark = pytest.mark.slow

ANSWERABLE = "Who devised the process to evaluate requests for long-range missile strikes?"
UNANSWERABLE = "Who won the 2018 FIFA World Cup?"
QUESTIONS = [
    ANSWERABLE,
    UNANSWERABLE,
    "Where did Trump meet Putin on August 15th?",
    "Who holds the ultimate authority on deploying ATACMS?",
]


def rounded(value: Any) -> Any:
    """Floats to 6 places: the server and the CLI compute the same numbers in different processes."""
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def qa(*args: str, status: int = 0) -> str:
    done = subprocess.run([sys.executable, "-m", "qa.cli", *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == status, done.stderr
    return done.stdout


SERVER_LOG: list[Path] = []  # where the module's server writes its log (for the tests that read it)


@pytest.fixture(scope="module")
def served(seeds_copy: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[str]]]:
    """(url, the --seeds/--index-dir options) of a `qa serve` running in a subprocess."""
    place = ["--seeds", str(seeds_copy), "--index-dir", str(tmp_path_factory.mktemp("serve-index"))]
    SERVER_LOG[:] = [tmp_path_factory.mktemp("serve-log") / "serve.log"]
    with start_server(place, free_port(), SERVER_LOG[0]) as url:
        yield url, place


@pytest.fixture(scope="module")
def client(served: tuple[str, list[str]]) -> Any:
    from gradio_client import Client

    return Client(served[0], verbose=False)


def test_the_named_endpoints_are_listed(client: Any) -> None:
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/ask", "/batch"} <= set(endpoints)


def test_ask_is_the_same_as_qa_ask_json(client: Any, served: tuple[str, list[str]]) -> None:
    _, place = served
    api = client.predict(ANSWERABLE, 2, None, api_name="/ask")
    cli = json.loads(qa("ask", ANSWERABLE, "--json", "--top-k", "2", *place))  # one CLI run: models load each time
    assert rounded(api) == rounded(cli)
    assert api["answers"] and "Colby" in api["answers"][0]["text"]


def test_ask_abstains(client: Any) -> None:
    api = client.predict(UNANSWERABLE, api_name="/ask")
    assert api["abstained"] is True and api["answers"] == [] and api["passages"]


def test_ask_bad_input_is_a_one_line_error(client: Any) -> None:
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="the question is empty"):
        client.predict("   ", 1, None, api_name="/ask")
    with pytest.raises(AppError, match=r"no article 'missing\.txt'"):
        client.predict(ANSWERABLE, 1, "missing.txt", api_name="/ask")
    assert client.predict(ANSWERABLE, api_name="/ask")["question"] == ANSWERABLE  # still serving


def test_several_people_at_once_each_get_their_own_answer(client: Any, served: tuple[str, list[str]]) -> None:
    from gradio_client import Client

    one_by_one = [client.predict(q, 1, None, api_name="/ask") for q in QUESTIONS]
    others = [Client(served[0], verbose=False) for _ in range(2)]
    jobs = [(c, q) for q in QUESTIONS for c in (client, *others)]
    submitted = [c.submit(q, 1, None, api_name="/ask") for c, q in jobs]
    results = [job.result(timeout=180) for job in submitted]
    expected = [one_by_one[QUESTIONS.index(q)] for _, q in jobs]
    assert rounded(results) == rounded(expected)


def test_batch_is_the_same_as_qa_batch(client: Any, served: tuple[str, list[str]], tmp_path: Path) -> None:
    from gradio_client import handle_file

    _, place = served
    path = tmp_path / "questions.jsonl"
    lines = [json.dumps({"id": f"q{i}", "question": q}) for i, q in enumerate(QUESTIONS, 1)] + ["{not json"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    records = client.predict(handle_file(str(path)), 1, None, api_name="/batch")
    # The bad line makes `qa batch` exit 1 (after writing every record); the page has no exit status.
    cli = [json.loads(line) for line in qa("batch", str(path), *place, status=1).splitlines()]
    # The server reads a batch one (question, passage) pair at a time between visitors' questions
    # (qa.lanes), the CLI many at once: in float32 the scores agree to 6 places, in bfloat16 (a CPU
    # with native bf16, or QA_CPU_BF16=1) they move with the batch's padding, by a few thousandths.
    from qa.loading import reader_dtype

    tolerance = 0.01 if reader_dtype("cpu") == "bfloat16" else 1e-6
    scores = ("score", "guess_score")
    assert [{k: v for k, v in r.items() if k not in scores} for r in rounded(records)] == [
        {k: v for k, v in r.items() if k not in scores} for r in rounded(cli)
    ]
    for ours, theirs in zip(records, cli, strict=True):
        for key in scores:
            if ours.get(key) is None or theirs.get(key) is None:
                assert ours.get(key) == theirs.get(key)
            else:
                assert abs(ours[key] - theirs[key]) <= tolerance, (key, ours, theirs)
    assert [r["id"] for r in records] == ["q1", "q2", "q3", "q4", 5]
    assert "not valid JSON" in records[-1]["error"]


def test_batch_reads_only_uploaded_files(served: tuple[str, list[str]], tmp_path: Path) -> None:
    """Raw HTTP, as an attacker sends it: a file argument marked as Gradio's FileData that names a
    path on the server (in /tmp, in the server's working folder, a system file, a `..` spelling
    into the upload folder) or a URL is refused with one line, on every route, and never read.
    (gradio_client would upload a local path itself, which is the client's own right.)"""
    import gradio
    import httpx
    from gradio.utils import get_upload_folder

    url = served[0]
    secret = tmp_path / "secret.txt"
    secret.write_text("a line that must not leave the server\n", encoding="utf-8")
    in_cwd = Path.cwd() / "benchmarks" / "questions.txt"  # the server runs in the test's working folder
    system = next(Path(gradio.__file__).parent.rglob("*.txt"), None)  # a .txt that ships with a package
    paths = [str(secret), f"{get_upload_folder()}/../{secret.relative_to('/')}", "http://127.0.0.1:9/x.txt"]
    paths += [str(p) for p in (in_cwd, system) if p is not None and p.is_file()]
    config = httpx.get(f"{url}config", timeout=30).json()
    fn_index = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "batch")
    for path in paths:
        file = {"path": path, "meta": {"_type": "gradio.FileData"}}
        called = httpx.post(f"{url}gradio_api/call/batch", json={"data": [file, 1, None]}, timeout=30)
        joined = httpx.post(
            f"{url}gradio_api/queue/join",
            json={"data": [file, 1, None], "fn_index": fn_index, "session_hash": "attacker"},
            timeout=30,
        )
        for response in (called, joined):
            assert response.status_code == 400, (path, response.text)
            message = response.json()["error"]
            assert "not uploaded" in message or "not fetched from URLs" in message
    # A file argument without Gradio's marker: a raw call is refused by the API's bounds check
    # (qa.limits), and through the queue it reaches the handler, which checks it too.
    unmarked = [{"path": str(secret)}, 1, None]
    posted = httpx.post(f"{url}gradio_api/call/batch", json={"data": unmarked}, timeout=30)
    assert posted.status_code == 400 and "not uploaded" in posted.json()["error"]
    joined = httpx.post(
        f"{url}gradio_api/queue/join",
        json={"data": unmarked, "fn_index": fn_index, "session_hash": "attacker2"},
        timeout=30,
    )
    joined.raise_for_status()
    events = httpx.get(f"{url}gradio_api/queue/data", params={"session_hash": "attacker2"}, timeout=60).text
    assert "not uploaded" in events and "must not leave" not in events
    log = SERVER_LOG[0].read_text(encoding="utf-8")
    assert "Traceback" not in log and "must not leave" not in log
