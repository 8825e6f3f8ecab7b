"""`qa batch --ray` and `qa index --ray` on a local 2-CPU Ray cluster: the same bytes as a local run,
and one clear line, never a hang, when Ray is missing, nothing answers at the address, or the
cluster has no room for the actors.

The cluster is started by this test process (`ray.init`), and stopped by it; the `qa` runs on
Ray are separate processes that join it by address, as a user's would. The reader is the tiny
random one (fast to load): what is under test is the plumbing, not the answers.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import free_port

from qa.cli import cli
from qa.distributed import RayCluster, plan_actors
from qa.errors import ClusterError

ray = pytest.importorskip("ray", reason='Ray is optional; pip install -e ".[ray]" to run these tests')

pytestmark = [
    pytest.mark.ray,
    # Ray Data copying its own settings object reads its deprecated fields; nothing for us to change.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context"),
]


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """The address of a 2-CPU Ray cluster that this process heads (and shuts down at the end)."""
    previous = signal.getsignal(signal.SIGTERM)  # ray.init replaces it with one that exits
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    signal.signal(signal.SIGTERM, previous)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def env(seeds_copy: Path, tiny_reader: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    index = tmp_path_factory.mktemp("ray_index")
    return {"QA_SEEDS": str(seeds_copy), "QA_INDEX_DIR": str(index), "QA_READER_MODEL": str(tiny_reader)}


def questions_file(folder: Path, n: int = 70) -> Path:
    """n questions (two parts of the local run's 64, so two actors answer them) with every kind of
    record: ids of several types, a broken line, an empty question, a lone surrogate."""
    lines = [json.dumps({"id": f"q{i}", "question": f"Who devised the process? ({i})"}) for i in range(n - 5)]
    lines[3:3] = [
        json.dumps({"question": "When did Trump meet Putin?"}),
        "{broken json",
        json.dumps({"id": 9, "question": "   "}),
        json.dumps({"id": [1, "x"], "question": "Where is Elmendorf?"}),
        json.dumps({"id": None, "question": "bad \ud800 surrogate"}),
    ]
    path = folder / "questions.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def qa(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`qa ARGS` in its own process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "qa.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_batch_on_ray_writes_the_bytes_of_a_local_run(cluster: str, env: dict[str, str], tmp_path: Path) -> None:
    questions = questions_file(tmp_path)
    local = CliRunner().invoke(cli, ["batch", str(questions), "--out", str(tmp_path / "local.jsonl")], env=env)
    assert local.exit_code == 1, local.output  # three records have errors: every record is written anyway
    on_ray = qa(env, "batch", str(questions), "--out", str(tmp_path / "ray.jsonl"), "--ray", cluster)
    assert on_ray.returncode == 1, on_ray.stderr
    assert (tmp_path / "ray.jsonl").read_bytes() == (tmp_path / "local.jsonl").read_bytes()
    assert f"Ray at {cluster}: 2 part(s) of questions on 2 actor(s) with 1 CPU(s) each" in on_ray.stderr
    assert "Traceback" not in on_ray.stderr
    summary = on_ray.stderr.strip().splitlines()[-1].replace("ray.jsonl", "local.jsonl")
    assert summary == local.stderr.strip().splitlines()[-1]


def test_index_on_ray_writes_the_index_of_a_local_build(cluster: str, env: dict[str, str], tmp_path: Path) -> None:
    local_env = {**env, "QA_INDEX_DIR": str(tmp_path / "local")}
    ray_env = {**env, "QA_INDEX_DIR": str(tmp_path / "ray")}
    local = CliRunner().invoke(cli, ["index"], env=local_env)
    assert local.exit_code == 0, local.output
    on_ray = qa(ray_env, "index", "--ray", cluster)
    assert on_ray.returncode == 0, on_ray.stderr
    assert f"Ray at {cluster}: " in on_ray.stderr and "part(s) of chunks" in on_ray.stderr
    assert on_ray.stdout.replace(str(tmp_path / "ray"), str(tmp_path / "local")) == local.stdout

    def generation(folder: Path) -> tuple[dict[str, object], Path]:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        gen = folder / manifest.pop("generation")
        manifest.pop("created")
        return manifest, gen

    (m_local, g_local), (m_ray, g_ray) = generation(tmp_path / "local"), generation(tmp_path / "ray")
    assert m_ray == m_local
    assert (g_ray / "chunks.jsonl").read_bytes() == (g_local / "chunks.jsonl").read_bytes()
    bm25_files = sorted(p.relative_to(g_local) for p in (g_local / "bm25").rglob("*") if p.is_file())
    assert bm25_files
    for name in bm25_files:
        assert (g_ray / name).read_bytes() == (g_local / name).read_bytes(), name
    import faiss

    v_local, v_ray = (faiss.read_index(str(g / "vectors.faiss")) for g in (g_local, g_ray))
    assert v_ray.ntotal == v_local.ntotal > 0
    # Each actor embeds its part in batches of its own, so the padding differs: float noise only.
    np.testing.assert_allclose(
        v_ray.reconstruct_n(0, v_ray.ntotal), v_local.reconstruct_n(0, v_local.ntotal), atol=1e-5
    )


def test_an_address_nothing_answers_at_is_one_line(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "q.txt").write_text("Who devised the process?\n", encoding="utf-8")
    port = free_port()
    out = tmp_path / "answers.jsonl"
    args = ["batch", str(tmp_path / "q.txt"), "--out", str(out), "--ray", f"127.0.0.1:{port}"]
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: no Ray cluster answers at 127.0.0.1:{port} (Connection refused); start one there with: "
        f"ray start --head --port {port} (then pass its address), or use --ray auto to start one on this machine"
    ]
    assert not out.exists() and not list(tmp_path.glob(".answers.jsonl.*"))  # nothing written, nothing left
    bad = CliRunner().invoke(cli, ["index", "--ray", "nowhere:port"], env=env)
    assert bad.exit_code == 1 and bad.stderr.strip().splitlines() == [
        "Error: --ray takes auto or a cluster's HOST:PORT (e.g. 127.0.0.1:6379), got 'nowhere:port'"
    ]


def test_without_ray_installed_it_says_how_to_install_it(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "q.txt").write_text("Who devised the process?\n", encoding="utf-8")
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails, as without the package
    for args in (["batch", str(tmp_path / "q.txt"), "--ray", "auto"], ["index", "--ray", "127.0.0.1:6379"]):
        result = CliRunner().invoke(cli, args, env=env)
        assert result.exit_code == 1
        assert result.stderr.strip().splitlines() == ['Error: --ray needs Ray: pip install -e ".[ray]"']


def test_a_local_run_never_imports_ray() -> None:
    code = (
        "import sys, qa.cli, qa.batch, qa.assistant, qa.index, qa.embedding, qa.reader, qa.retrieval\n"
        "print([m for m in sys.modules if m == 'ray' or m.startswith('ray.')])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_actors_sized_to_the_cluster() -> None:
    assert plan_actors([2], 2, parts=4, address="a").actors == 2  # a 2-CPU machine: two actors of one CPU
    assert (plan_actors([2], 2, parts=1, address="a").actors, plan_actors([2], 2, 1, "a").cpus_each) == (1, 1)
    big = plan_actors([16, 8], 24, parts=100, address="a")
    assert (big.actors, big.cpus_each) == (12, 2)
    assert plan_actors([16, 8], 5, parts=100, address="a").actors == 2  # only what is free now
    assert plan_actors([16], 0, parts=100, address="a").actors == 1  # none free: one, that waits (time limit)
    with pytest.raises(ClusterError, match="has no CPU for an actor"):
        plan_actors([0], 0, parts=3, address="a")


@ray.remote(num_cpus=2)
class _Hog:
    """Holds both of the cluster's CPUs, as another job would."""

    def ready(self) -> bool:
        return True


def test_actors_without_room_stop_the_run_within_the_time_limit(
    cluster: str, env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "q.txt").write_text("Who devised the process?\n", encoding="utf-8")
    hog = _Hog.remote()
    ray.get(hog.ready.remote())
    try:
        # In this process, which holds the cluster's session: `auto` uses it as it is.
        result = CliRunner().invoke(
            cli, ["batch", str(tmp_path / "q.txt"), "--ray", "auto"], env={**env, "QA_RAY_TIMEOUT": "2"}
        )
    finally:
        ray.kill(hog)
    assert result.exit_code == 1, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: Ray did not start 1 actor(s) with 1 CPU(s) each within 2 s; the cluster at ")
    assert "has 2 CPUs on 1 node(s), 0 free when the run began" in last
    assert ray.is_initialized()  # a session this process held is left open


def test_a_held_session_is_left_open_and_the_logs_restored(cluster: str) -> None:
    level = logging.getLogger("ray.data").level
    with RayCluster("auto", 5, log=lambda msg: None) as joined:
        joined.connect()
        assert logging.getLogger("ray.data").level == logging.CRITICAL
    assert ray.is_initialized() and logging.getLogger("ray.data").level == level
