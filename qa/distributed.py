"""`qa batch --ray` and `qa index --ray`: a run's model work on a Ray cluster, through Ray Data.

Ray is optional (`pip install -e ".[ray]"`) and imported only here; the command line imports this
module only when --ray is given, so a local run never loads Ray.

What moves to the cluster is the model work: answering questions (retrieval and reading) and
embedding chunks. What stays on this machine: reading the questions, checking the index and
building it when it is missing or stale *before* Ray starts (so the actors only read it), and
writing every record through the local run's writer, in input order. The actors read the articles
and the index folder at the paths this machine uses: on a cluster of several machines those
folders must be on storage that every machine mounts at the same path.

The work is cut into parts; a Ray Data dataset holds one row per part, and `map_batches` with an
actor class maps each part: the class builds its assistant (or embedder) once per actor from the
settings, passed as plain values, and the models load on its first part, once. A part of
questions is exactly one batch of the local run (`QUESTION_BATCH`), so the reader sees the same
batches and the records come out byte-identical. Results travel back pickled and are put back in
part order as they arrive.

Failures are one line (`ClusterError`), never a hang: Ray missing, an address nothing answers at,
actors that do not start within the time limit (what was asked for against what the cluster has).
An error an actor meets that the user can fix (a missing model, a stale index, an unknown --doc)
comes back as the part's value and is raised here, as the local run would raise it.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
import pickle
import signal
import socket
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qa.assistant import QUESTION_BATCH, Assistant
from qa.errors import ClusterError, QAError
from qa.settings import DEFAULT_RAY_TIMEOUT_S, RAY_TIMEOUT_ENV, Settings
from qa.types import Document, Result

if TYPE_CHECKING:
    import numpy as np

    from qa.index import Index

RAY_INSTALL = 'pip install -e ".[ray]"'
HEAD_PORT = 6379  # `ray start --head`'s default
CLIENT_PORT = 10001  # Ray Client's (ray://HOST), likewise
PROBE_TIMEOUT_S = 5.0
# Chunks per part when embedding: about four parts per actor keep every actor busy to the end.
EMBED_PART_MIN, EMBED_PART_MAX, PARTS_PER_ACTOR = 32, 512, 4


def import_ray() -> Any:
    """Ray with Ray Data, or the one line that says how to install them."""
    try:
        import ray
        import ray.data  # pyarrow and the rest of the [data] extra
    except ImportError:
        raise ClusterError(f"--ray needs Ray: {RAY_INSTALL}") from None
    return ray


def parse_address(address: str) -> tuple[str, int] | None:
    """The (host, port) that --ray names, to check before joining; None for `auto`."""
    if address == "auto":
        return None
    rest = address.removeprefix("ray://")
    host, colon, port = rest.rpartition(":")
    if not colon:
        host, port = rest, str(CLIENT_PORT if rest != address else HEAD_PORT)
    host = host.strip("[]")  # [::1]:6379
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ClusterError(f"--ray takes auto or a cluster's HOST:PORT (e.g. 127.0.0.1:6379), got {address!r}")
    return host, int(port)


def check_reachable(address: str, target: tuple[str, int]) -> None:
    """Something must answer at the address: `ray.init` retries an address nobody answers at for
    about 14 minutes (measured with Ray 2.60) before it gives up."""
    host, port = target
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as exc:
        why = exc.strerror or f"no answer within {PROBE_TIMEOUT_S:g} s"
        raise ClusterError(
            f"no Ray cluster answers at {address} ({why}); start one there with: ray start --head --port {port} "
            "(then pass its address), or use --ray auto to start one on this machine"
        ) from None


@dataclass(frozen=True)
class Plan:
    """The actors of a run, and the cluster they were sized to."""

    actors: int
    cpus_each: int
    cluster_cpus: int
    free_cpus: int
    nodes: int
    address: str

    def describe(self, parts: int, what: str) -> str:
        return (
            f"Ray at {self.address}: {parts} part(s) of {what} on {self.actors} actor(s) with {self.cpus_each} "
            f"CPU(s) each (the cluster: {self.cluster_cpus} CPUs on {self.nodes} node(s), {self.free_cpus} free)"
        )

    def not_started(self, timeout_s: float) -> str:
        return (
            f"Ray did not start {self.actors} actor(s) with {self.cpus_each} CPU(s) each within {timeout_s:g} s; "
            f"the cluster at {self.address} has {self.cluster_cpus} CPUs on {self.nodes} node(s), "
            f"{self.free_cpus} free when the run began: free some (other jobs hold them), add a machine "
            f"(ray start --address {self.address}), or wait longer ({RAY_TIMEOUT_ENV}=SECONDS or --ray-timeout)"
        )


def plan_actors(node_cpus: Sequence[float], free_cpus: float, parts: int, address: str) -> Plan:
    """Actors sized to the cluster, at least one and never more than there are parts.

    Two CPUs each where a machine has four or more (half the model copies in memory, and a part's
    reader batch keeps two threads busy), else one (a 2-CPU machine runs two actors, not one); as
    many as fit on the machines and on the CPUs free now, so a cluster that other jobs share runs
    with fewer actors instead of waiting for all of them.
    """
    cpus = [int(c) for c in node_cpus]
    each = 2 if max(cpus, default=0) >= 4 else 1
    fit = sum(c // each for c in cpus)
    if fit == 0:
        raise ClusterError(
            f"the Ray cluster at {address} has no CPU for an actor ({sum(cpus)} CPUs on {len(cpus)} node(s)); "
            f"add a machine with: ray start --address {address}"
        )
    actors = max(1, min(fit, int(free_cpus) // each, parts))
    return Plan(actors, each, sum(cpus), int(free_cpus), len(cpus), address)


def _no_restarts() -> dict[str, Any]:
    # Ray Data restarts a dead actor and retries its part forever by default, so a part that kills
    # its actor (out of memory) would be retried forever: stop with the error instead. (It also
    # keeps Ray from warning, for each actor, that restarts and arguments in the object store mix.)
    return {"max_restarts": 0, "max_task_retries": 0}


def _takes_remote_args_fn(ray: Any) -> bool:
    """Whether `map_batches` still takes `ray_remote_args_fn` (deprecated in Ray 2.60, to go in 2.64,
    with no named replacement for `max_restarts` yet)."""
    return "ray_remote_args_fn" in inspect.signature(ray.data.Dataset.map_batches).parameters


class RayCluster:
    """This process's connection to a Ray cluster, made on first use and closed by `close()`.

    `auto` joins the cluster `ray.init()` finds (RAY_ADDRESS, or one `ray start` left running on
    this machine), else starts one here, which `close()` stops; HOST:PORT joins that cluster. A Ray
    session this process already holds (a notebook, a test) is used as it is and left open.
    """

    def __init__(self, address: str, timeout_s: float, log: Callable[[str], None]) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self.log = log
        self._ray: Any = None
        self._joined = False  # this object called ray.init, so it calls ray.shutdown
        self._data_log_level: int | None = None

    def check(self) -> None:
        """What can be checked before any work, the index included: Ray installed, the address well
        formed and answering (and for `auto`, RAY_ADDRESS, which `ray.init()` follows, unless this
        process already holds a Ray session, which is then used)."""
        ray = import_ray()
        if not self.timeout_s > 0:
            raise ClusterError(f"the Ray time limit must be a number of seconds above 0, got {self.timeout_s!r}")
        target = parse_address(self.address)
        env_address = os.environ.get("RAY_ADDRESS", "").strip()
        if target is not None:
            check_reachable(self.address, target)
        elif env_address not in ("", "auto", "local") and not ray.is_initialized():
            check_reachable(f"RAY_ADDRESS={env_address}", parse_address(env_address) or ("127.0.0.1", HEAD_PORT))

    def connect(self) -> Any:
        if self._ray is not None:
            return self._ray
        self.check()
        ray = import_ray()
        if not ray.is_initialized():
            self._join(ray)
        # Ray Data's own logs and bars would bury the plan line and the progress bar; the errors
        # that matter come back as exceptions.
        data_logger = logging.getLogger("ray.data")
        self._data_log_level = data_logger.level
        data_logger.setLevel(logging.CRITICAL)
        self._ray = ray
        return ray

    def _join(self, ray: Any) -> None:
        # ray.init makes SIGTERM exit at once; keep the handler it replaces (a batch stopped by
        # SIGTERM keeps the records answered so far, as with Ctrl+C).
        main = threading.current_thread() is threading.main_thread()
        previous = signal.getsignal(signal.SIGTERM) if main else None
        try:
            ray.init(
                address=None if self.address == "auto" else self.address,
                include_dashboard=False,
                logging_level=logging.ERROR,
                log_to_driver=False,  # the actors' logs stay in the cluster's log files
            )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise ClusterError(
                f"cannot join the Ray cluster at {self.address} ({reason}); check the address (`ray status` on "
                "its head machine prints it) or start one with: ray start --head"
            ) from None
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        self._joined = True

    def plan(self, parts: int) -> Plan:
        ray = self.connect()
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        free = ray.available_resources().get("CPU", 0)
        address = ray.get_runtime_context().gcs_address
        return plan_actors([n.get("Resources", {}).get("CPU", 0) for n in nodes], free, parts, address)

    def map_parts(
        self, actor: type[PartActor], config: dict[str, Any], payloads: list[str], what: str
    ) -> Iterator[Any]:
        """Each part's value from the actors, in part order, as soon as it and those before it are
        back. The cluster is joined and the plan printed now; the parts go out as they are read."""
        ray = self.connect()
        plan = self.plan(len(payloads))
        self.log(plan.describe(len(payloads), what))
        rows = [{"part": i, "payload": p} for i, p in enumerate(payloads)]
        restarts = {"ray_remote_args_fn": _no_restarts} if _takes_remote_args_fn(ray) else {}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "`ray_remote_args_fn` is deprecated", DeprecationWarning)
            ds = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
                actor,
                fn_constructor_kwargs={"config": config},
                batch_size=1,  # one part a call: a part is already the batch the models take
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=plan.actors),
                num_cpus=plan.cpus_each,
                **restarts,
            )
        ds.context.enable_progress_bars = False  # the caller shows one bar for the whole run
        ds.context.print_on_execution_start = False
        # Without a limit, actors the cluster has no room for stay pending forever.
        ds.context.wait_for_min_actors_s = max(1, math.ceil(self.timeout_s))
        return self._in_order(ds, plan)

    def _in_order(self, ds: Any, plan: Plan) -> Iterator[Any]:
        waiting: dict[int, Any] = {}
        following = 0
        try:
            for row in ds.iter_rows():
                waiting[int(row["part"])] = _unpack(row["result"])
                while following in waiting:
                    yield waiting.pop(following)
                    following += 1
        except self._ray.exceptions.GetTimeoutError:
            raise ClusterError(plan.not_started(self.timeout_s)) from None

    def close(self) -> None:
        if self._data_log_level is not None:
            logging.getLogger("ray.data").setLevel(self._data_log_level)
            self._data_log_level = None
        if self._joined and self._ray is not None:
            self._ray.shutdown()  # stops the cluster `auto` started here; else only leaves it
        self._ray, self._joined = None, False

    def __enter__(self) -> RayCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _unpack(blob: bytes) -> Any:
    ok, value = pickle.loads(blob)  # from this run's own actors
    if not ok:
        raise value  # a QAError the actor met, raised as the local run raises it
    return value


def plain_settings(settings: Settings) -> dict[str, Any]:
    """The settings as plain values for the actors, folders made absolute (an actor's working folder
    need not be this one's)."""
    values = {f.name: getattr(settings, f.name) for f in fields(settings)}
    return {k: os.path.abspath(v) if isinstance(v, Path) else v for k, v in values.items()}


class PartActor:
    """Ray Data's callable class: `setup` builds what maps a part, once per actor; each call maps
    one part. A QAError (from `setup` too) comes back as the part's value, not as Ray's traceback."""

    def __init__(self, config: dict[str, Any]) -> None:
        # What `qa.cli.process_policy` sets for a local run, for this worker, which `qa` did not
        # start: OpenMP threads that wait passively, no tokenizer thread pool beside the model's.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        if os.path.isdir(config["cwd"]):
            os.chdir(config["cwd"])  # a relative model path names what it names on the driver
        self.error: QAError | None = None
        try:
            self.setup(config)
        except QAError as exc:
            self.error = exc

    def setup(self, config: dict[str, Any]) -> None:
        raise NotImplementedError

    def work(self, payload: Any) -> Any:
        raise NotImplementedError

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import numpy as np

        out = []
        for payload in batch["payload"]:
            try:
                if self.error is not None:
                    raise self.error
                out.append(pickle.dumps((True, self.work(json.loads(payload)))))
            except QAError as exc:
                out.append(pickle.dumps((False, exc)))
        return {"part": batch["part"], "result": np.array(out, dtype=object)}


class AnswerActor(PartActor):
    """Answers parts of questions with one `Assistant`, as `Assistant.ask_many` answers them here."""

    def setup(self, config: dict[str, Any]) -> None:
        settings = Settings(**config["settings"])
        article = config["article"]
        if article is None:
            # The driver built the index before Ray started: an actor only reads it, and a stale
            # one (an article edited since) is an error here, not a second writer.
            self.assistant = Assistant(settings=settings, auto_index=False)
        else:
            self.assistant = Assistant.from_document(Document(**article), settings=settings)

    def work(self, part: dict[str, Any]) -> list[Result]:
        return self.assistant.ask_many(
            part["questions"],
            top_k=part["top_k"],
            doc_id=part["doc_id"],
            batch_size=QUESTION_BATCH,
            min_confidence=part["min_confidence"],
        )


class EmbedActor(PartActor):
    """Embeds parts of chunk texts with the embedder the settings name."""

    def setup(self, config: dict[str, Any]) -> None:
        from qa.embedding import Embedder

        self.embedder = Embedder.from_settings(Settings(**config["settings"]))

    def work(self, texts: list[str]) -> np.ndarray:
        return self.embedder.encode(texts)


def _config(settings: Settings, article: Document | None = None) -> dict[str, Any]:
    held = None if article is None else asdict(article)
    return {"settings": plain_settings(settings), "article": held, "cwd": os.getcwd()}


class RayEmbedder:
    """An `EmbedderLike` whose `encode` runs on the actors. `qa index --ray` hands it to the index
    build, so only the embedding moves: choosing what to re-embed, the writer lock and writing the
    generation stay here. Questions are embedded here (`encode_queries`)."""

    def __init__(self, cluster: RayCluster, settings: Settings) -> None:
        from qa.embedding import Embedder

        self.cluster = cluster
        self.local = Embedder.from_settings(settings)  # loads nothing until asked to embed a question
        self.name = self.local.name  # what the manifest records, as a local build records it
        self.config = _config(settings)

    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        import numpy as np
        from tqdm import tqdm

        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        capacity = self.cluster.plan(len(texts)).actors
        size = min(EMBED_PART_MAX, max(EMBED_PART_MIN, math.ceil(len(texts) / (capacity * PARTS_PER_ACTOR))))
        parts = [texts[b : b + size] for b in range(0, len(texts), size)]
        vectors = []
        done = self.cluster.map_parts(EmbedActor, self.config, [json.dumps(p) for p in parts], "chunks")
        with tqdm(total=len(texts), desc="embedding", unit="chunk", disable=not progress, file=sys.stderr) as bar:
            for part, part_vectors in zip(parts, done, strict=True):
                vectors.append(part_vectors)
                bar.update(len(part))
        return np.ascontiguousarray(np.concatenate(vectors), dtype=np.float32)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        return self.local.encode_queries(texts)

    def warm_up_queries(self) -> None:
        self.local.warm_up_queries()


class RayAssistant:
    """What `qa batch` and `qa index` use of an `Assistant` (`iter_answers`, `build_index`), with the
    model work on a Ray cluster. Making one checks that Ray is installed and that something answers
    at the address, and joins nothing; the cluster is joined on first use and left by `close()`
    (`run_batch` calls it) or at the end of `build_index`."""

    def __init__(
        self,
        address: str,
        settings: Settings,
        article: Document | None = None,
        *,
        timeout_s: float = DEFAULT_RAY_TIMEOUT_S,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.article = article
        self.log = log or (lambda msg: print(msg, file=sys.stderr))
        self.cluster = RayCluster(address, timeout_s, self.log)
        self.cluster.check()
        self._config = _config(settings, article)
        self._index_ready = False

    def build_index(self, force: bool = False, progress: bool = True) -> tuple[Index, str | None]:
        """`Assistant.build_index` with the chunks embedded on the cluster, which is joined only when
        there is something to embed: choosing what to re-embed, the writer lock and writing the
        generation stay here."""
        try:
            embedder = RayEmbedder(self.cluster, self.settings)
            return Assistant(settings=self.settings, embedder=embedder, log=self.log).build_index(force, progress)
        finally:
            self.cluster.close()

    def iter_answers(
        self,
        questions: Sequence[str],
        top_k: int = 1,
        doc_id: str | None = None,
        progress: bool = False,
        batch_size: int = QUESTION_BATCH,
        total: int | None = None,
        min_confidence: float | None = None,
    ) -> Iterator[Result]:
        """`Assistant.iter_answers` on the cluster: a result per question, in input order."""
        from tqdm import tqdm

        self._prepare_index()
        parts = [list(questions[b : b + batch_size]) for b in range(0, len(questions), batch_size)]
        # ASCII JSON carries any question, a lone surrogate too, through Ray Data's Arrow columns.
        options = {"top_k": top_k, "doc_id": doc_id, "min_confidence": min_confidence}
        payloads = [json.dumps({"questions": part, **options}) for part in parts]
        answered = self.cluster.map_parts(AnswerActor, self._config, payloads, "questions") if payloads else iter(())
        total = len(questions) if total is None else total
        bar = tqdm(total=total, desc="questions", unit="q", disable=not progress, file=sys.stderr)
        bar.update(total - len(questions))
        try:
            for results in answered:
                for result in results:
                    bar.update(1)
                    yield result
        finally:
            bar.close()

    def _prepare_index(self) -> None:
        """The index, built here when it is missing or stale (as a local run builds it) before the
        cluster is joined, so the actors only read it."""
        if not self._index_ready and self.article is None:
            _ = Assistant(settings=self.settings, log=self.log).index
        self._index_ready = True

    def close(self) -> None:
        self.cluster.close()
