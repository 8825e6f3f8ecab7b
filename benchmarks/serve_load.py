"""Load test of the shared page: do ordinary visitors' questions keep flowing while one visitor
pastes a ~1 MB article and another sends a large batch?

Starts a real `qa serve` on localhost (over a copy of seeds/ and a fresh index), then runs two
phases with the same N simulated visitors, each asking the questions of benchmarks/questions.txt
through the raw HTTP API (`POST /gradio_api/call/ask`, then its event stream), with a think time
between questions:

1. baseline: the visitors alone, for --baseline-s seconds;
2. heavy: the same visitors while one more pastes a ~1 MB article into the *Your article* tab
   (the page's own event, as the browser sends it, with its progress messages) and another
   sends a batch of --batch-questions questions to `/batch`; it lasts until both are done.

It reports p50/p95 of the ordinary questions in each phase and their ratio, how long the paste
and the batch took and what they got back, and every request that got neither an answer nor a
clear one-line refusal (lost). Run it on an otherwise idle machine (here: under the lock):

    flock /work/heavy.lock python benchmarks/serve_load.py            # 4 visitors, 300-question batch
    python benchmarks/serve_load.py --visitors 8 --json runs/load.json

The article is built from the SQuAD paragraphs in ../shared/data/squad (real prose, never seen by
the page's index), else from the bundled article repeated.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
SQUAD = ROOT.parent / "shared" / "data" / "squad" / "squad-train-38.json"
ARTICLE_BYTES = 1_000_000
TIMEOUT_S = 900  # one request, at most: a lost request shows up as a timeout, never as a hang


@dataclass
class Outcome:
    """One request: when it started (seconds into the run), how long it took, and what came back."""

    kind: str
    phase: str
    start: float
    seconds: float
    ok: bool
    message: str = ""  # the refusal's or error's line; "" for an answer
    progress: int = 0  # progress messages seen (the paste)


@dataclass
class Run:
    outcomes: list[Outcome] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, outcome: Outcome) -> None:
        with self.lock:
            self.outcomes.append(outcome)


# --- the raw protocol ----------------------------------------------------------------------------


def events(response: httpx.Response) -> Iterator[tuple[str, str]]:
    """(event, data) pairs of a server-sent event stream."""
    kind, data = "message", []
    for line in response.iter_lines():
        if not line:
            if data:
                yield kind, "\n".join(data)
            kind, data = "message", []
        elif line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())


def call(client: httpx.Client, url: str, api: str, data: list[Any]) -> tuple[bool, Any]:
    """A named endpoint through `/gradio_api/call`: (True, output) or (False, the one-line reason)."""
    posted = client.post(f"{url}gradio_api/call/{api}", json={"data": data})
    if posted.status_code != 200:
        return False, f"HTTP {posted.status_code}: {posted.json().get('error', posted.text)}"
    event_id = posted.json()["event_id"]
    with client.stream("GET", f"{url}gradio_api/call/{api}/{event_id}") as stream:
        for kind, payload in events(stream):
            if kind == "complete":
                return True, json.loads(payload)[0]
            if kind == "error":
                return False, json.loads(payload) if payload and payload != "null" else "error without a message"
    return False, "the stream ended without a result"


def upload(client: httpx.Client, url: str, path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        sent = client.post(f"{url}gradio_api/upload", files={"files": (path.name, f)})
    sent.raise_for_status()
    return {"path": sent.json()[0], "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}


def page_event(url: str, elem_id: str) -> tuple[int, int]:
    """(fn_index, trigger id) of the page's event that the button `elem_id` triggers."""
    config = httpx.get(f"{url}config", timeout=30).json()
    button = next(c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == elem_id)
    fn = next(d for d in config["dependencies"] if any(t[0] == button for t in d["targets"]))
    return fn["id"], button


def use_article(client: httpx.Client, url: str, text: str, fn_index: int, trigger: int) -> tuple[bool, str, int]:
    """The *Your article* tab's button, as the browser presses it: (indexed, status line, progress messages)."""
    session = uuid.uuid4().hex[:11]
    joined = client.post(
        f"{url}gradio_api/queue/join",
        json={"data": [text, None, None], "fn_index": fn_index, "trigger_id": trigger, "session_hash": session},
    )
    if joined.status_code != 200:
        return False, f"HTTP {joined.status_code}: {joined.text[:200]}", 0
    seen = 0
    with client.stream("GET", f"{url}gradio_api/queue/data", params={"session_hash": session}) as stream:
        for _, payload in events(stream):
            message = json.loads(payload)
            if message.get("msg") == "progress":
                seen += 1
            if message.get("msg") == "process_completed":
                output = message.get("output") or {}
                status = (output.get("data") or [""])[0] or output.get("error") or ""
                return bool(message.get("success")) and "Using **your article**" in status, status, seen
    return False, "the stream ended without a result", seen


# --- the visitors ---------------------------------------------------------------------------------


def visitor(url: str, questions: list[str], run: Run, phase: str, stop: threading.Event, seed: int, t0: float) -> None:
    rng = random.Random(seed)
    with httpx.Client(timeout=TIMEOUT_S) as client:
        while not stop.is_set():
            q = rng.choice(questions)
            began = time.perf_counter()
            try:
                ok, out = call(client, url, "ask", [q, 1, None])
                message = "" if ok else str(out)
            except httpx.HTTPError as exc:
                ok, message = False, f"lost: {type(exc).__name__}: {exc}"
            run.add(Outcome("ask", phase, began - t0, time.perf_counter() - began, ok, message))
            stop.wait(rng.uniform(2.0, 4.0))  # reading the answer, typing the next question


def paster(url: str, text: str, run: Run, t0: float) -> None:
    fn_index, trigger = page_event(url, "use-article")
    began = time.perf_counter()
    with httpx.Client(timeout=TIMEOUT_S) as client:
        try:
            ok, status, seen = use_article(client, url, text, fn_index, trigger)
        except httpx.HTTPError as exc:
            ok, status, seen = False, f"lost: {type(exc).__name__}: {exc}", 0
    run.add(Outcome("paste", "heavy", began - t0, time.perf_counter() - began, ok, "" if ok else status, seen))


def batcher(url: str, questions_file: Path, run: Run, t0: float) -> None:
    began = time.perf_counter()
    with httpx.Client(timeout=TIMEOUT_S) as client:
        try:
            ok, out = call(client, url, "batch", [upload(client, url, questions_file), 1, None])
            message = "" if ok else str(out)
        except httpx.HTTPError as exc:
            ok, message = False, f"lost: {type(exc).__name__}: {exc}"
    run.add(Outcome("batch", "heavy", began - t0, time.perf_counter() - began, ok, message))


def phase(
    url: str, questions: list[str], run: Run, name: str, visitors: int, t0: float, seconds: float, jobs: list
) -> float:
    """The visitors ask for `seconds`, or while the heavy `jobs` (threads) run; returns the phase's length."""
    stop = threading.Event()
    threads = [
        threading.Thread(target=visitor, args=(url, questions, run, name, stop, 1000 * i + len(name), t0))
        for i in range(visitors)
    ]
    began = time.perf_counter()
    for t in threads:
        t.start()
    if jobs:
        time.sleep(2.0)  # the visitors are asking before the heavy ones arrive
        for t in jobs:
            t.start()
        for t in jobs:
            t.join()
    else:
        time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return time.perf_counter() - began


# --- setting up ------------------------------------------------------------------------------------


def big_article(n_bytes: int = ARTICLE_BYTES) -> str:
    if SQUAD.is_file():
        data = json.loads(SQUAD.read_text(encoding="utf-8"))
        paragraphs = [p["context"] for a in data["data"] for p in a["paragraphs"]]
    else:
        paragraphs = (ROOT / "seeds" / "pentagon-ukraine-long-range-strikes.txt").read_text("utf-8").split("\n\n")
    out, size = [], 0
    while size < n_bytes:
        for p in paragraphs:
            out.append(p)
            size += len(p.encode("utf-8")) + 2
            if size >= n_bytes:
                break
    return "\n\n".join(out).encode("utf-8")[: n_bytes - 4].decode("utf-8", "ignore")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    work: Path, log_path: Path, index_limit_s: float, reader: str | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    seeds = work / "seeds"
    shutil.copytree(ROOT / "seeds", seeds)
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    env["QA_MAX_INDEX_SECONDS"] = str(index_limit_s)
    cmd = [sys.executable, "-m", "qa.cli", "serve", "--port", str(port), "--seeds", str(seeds)]
    cmd += ["--index-dir", str(work / "index")] + (["--reader-model", reader] if reader else [])
    with log_path.open("w", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"qa serve exited with {proc.returncode}:\n{log_path.read_text('utf-8')}")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise SystemExit(f"qa serve did not start in 300 s:\n{log_path.read_text('utf-8')}")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def summary(run: Run, seconds: dict[str, float], args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {
        "cpu": f"{cpu_name()}, {os.cpu_count()} cores",
        "visitors": args.visitors,
        "batch_questions": args.batch_questions,
        "article_bytes": args.article_bytes,
        "index_limit_s": args.index_limit_s,
        "reader_model": args.reader_model or "shipped",
    }
    for name in ("baseline", "heavy"):
        asks = [o for o in run.outcomes if o.kind == "ask" and o.phase == name]
        times = [1000 * o.seconds for o in asks if o.ok]
        out[name] = {
            "seconds": round(seconds[name], 1),
            "questions": len(asks),
            "answered": len(times),
            "p50_ms": round(percentile(times, 50)) if times else None,
            "p95_ms": round(percentile(times, 95)) if times else None,
            "max_ms": round(max(times)) if times else None,
            "mean_ms": round(statistics.mean(times)) if times else None,
        }
    if out["baseline"]["p95_ms"] and out["heavy"]["p95_ms"]:
        out["p95_ratio"] = round(out["heavy"]["p95_ms"] / out["baseline"]["p95_ms"], 2)
    out["heavy_jobs"] = [asdict(o) for o in run.outcomes if o.kind != "ask"]
    refused = [o for o in run.outcomes if not o.ok]
    out["lost"] = [asdict(o) for o in refused if o.message.startswith("lost") or "\n" in o.message or not o.message]
    out["refused"] = [asdict(o) for o in refused if asdict(o) not in out["lost"]]
    return out


def report(s: dict[str, Any]) -> str:
    lines = [
        f"CPU: {s['cpu']}; reader: {s['reader_model']}; {s['visitors']} visitors asking (think time 2-4 s)",
        "",
        "| phase | seconds | questions | p50 ms | p95 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in ("baseline", "heavy"):
        p = s[name]
        lines.append(
            f"| {name} | {p['seconds']} | {p['answered']}/{p['questions']} | {p['p50_ms']} | {p['p95_ms']} | "
            f"{p['max_ms']} |"
        )
    lines.append("")
    lines.append(f"p95 with the heavy visitors / without: {s.get('p95_ratio')}x")
    for job in s["heavy_jobs"]:
        what = "done" if job["ok"] else f"refused: {job['message']}"
        extra = f", {job['progress']} progress messages" if job["kind"] == "paste" else ""
        lines.append(f"{job['kind']}: {job['seconds']:.1f} s, {what}{extra}")
    lines.append(f"lost requests: {len(s['lost'])}; refused with a message: {len(s['refused'])}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--visitors", type=int, default=4)
    parser.add_argument("--baseline-s", type=float, default=60.0)
    parser.add_argument("--batch-questions", type=int, default=300)
    parser.add_argument("--article-bytes", type=int, default=ARTICLE_BYTES)
    parser.add_argument(
        "--index-limit-s",
        type=float,
        default=600.0,
        help="the server's QA_MAX_INDEX_SECONDS: high by default, so that the paste is measured even on a "
        "machine slower than the default limit allows",
    )
    parser.add_argument(
        "--reader-model", help="the server's reader (qa serve --reader-model); default: the shipped one"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    questions = [
        line.strip()
        for line in (ROOT / "benchmarks" / "questions.txt").read_text("utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    with tempfile.TemporaryDirectory(prefix="qa-load-") as tmp:
        work = Path(tmp)
        batch_file = work / "batch.txt"
        batch_file.write_text("\n".join((questions * args.batch_questions)[: args.batch_questions]) + "\n", "utf-8")
        article = big_article(args.article_bytes)
        print(f"starting qa serve (log: {work / 'serve.log'})…", file=sys.stderr)
        proc, url = start_server(work, work / "serve.log", args.index_limit_s, args.reader_model)
        try:
            with httpx.Client(timeout=TIMEOUT_S) as client:  # the first questions pay for lazy loading
                for q in questions[:5]:
                    call(client, url, "ask", [q, 1, None])
            run, seconds, t0 = Run(), {}, time.perf_counter()
            print(f"baseline: {args.visitors} visitors for {args.baseline_s:g} s…", file=sys.stderr)
            seconds["baseline"] = phase(url, questions, run, "baseline", args.visitors, t0, args.baseline_s, [])
            print("heavy: the same visitors, a 1 MB paste and a batch…", file=sys.stderr)
            heavy = [
                threading.Thread(target=paster, args=(url, article, run, t0)),
                threading.Thread(target=batcher, args=(url, batch_file, run, t0)),
            ]
            seconds["heavy"] = phase(url, questions, run, "heavy", args.visitors, t0, 0.0, heavy)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        log = (work / "serve.log").read_text("utf-8")
    s = summary(run, seconds, args)
    s["server_tracebacks"] = log.count("Traceback")
    print(report(s))
    print(f"tracebacks in the server's log: {s['server_tracebacks']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(s, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
