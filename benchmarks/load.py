"""Question latency on a shared machine: idle, and with another process keeping one core busy.

torch's OpenMP threads spin-wait for each other; when another process holds one of the two cores,
the thread on the busy core arrives late to every barrier and a question can take 20x longer.
This benchmark measures the warm per-question latency (one question at a time, the gold set's
questions) in a fresh process per thread policy, idle and loaded, and prints the table the
default was chosen from:

    python benchmarks/load.py            # all policies, idle and with one core busy
    python benchmarks/load.py --quick    # the default policy only

The load is a plain busy loop in another process (what a training run, a test suite or another
service does to a 2-core machine). Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# name -> environment for the measured process; the first is what `qa` does by itself.
POLICIES: dict[str, dict[str, str]] = {
    "qa default (onnx, threads never spin)": {},
    "torch, omp passive (qa --backend torch)": {"QA_BACKEND": "torch"},
    "torch, omp active (torch's own)": {"QA_BACKEND": "torch", "OMP_WAIT_POLICY": "ACTIVE", "QA_THREADS": "2"},
    "onnx, 1 thread": {"QA_THREADS": "1"},
}

WORKER = r"""
import json, os, sys, time
from qa.cli import process_policy
process_policy()
from qa.assistant import Assistant
from qa.evaluate import load_gold
root = sys.argv[1]
questions = [g.question for g in load_gold(os.path.join(root, "eval", "gold.jsonl"))]
a = Assistant(os.path.join(root, "seeds"), os.path.join(root, "index"), log=lambda m: None).warm_up()
for q in questions[:3]:
    a.ask(q)
times = []
for q in questions:
    t = time.perf_counter()
    a.ask(q)
    times.append(time.perf_counter() - t)
threads = int(os.environ.get("OMP_NUM_THREADS") or len(os.sched_getaffinity(0)))
print(json.dumps({"times": times, "threads": threads, "backend": a.reader.backend}))
"""


def busy() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def measure(env: dict[str, str]) -> tuple[float, int]:
    full = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "QA_THREADS", "OMP_NUM_THREADS")}
    full.update(env, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    done = subprocess.run(
        [sys.executable, "-c", WORKER, str(ROOT)], capture_output=True, text=True, env=full, timeout=1200
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    times = sorted(out["times"])
    return 1000 * times[len(times) // 2], out["threads"]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description="Question latency, idle and with one core busy.")
    parser.add_argument("--quick", action="store_true", help="Only the default policy.")
    args = parser.parse_args()
    policies = dict(list(POLICIES.items())[:1]) if args.quick else POLICIES
    print(f"{cpu_name()}, {os.cpu_count()} CPUs; warm p50 over the 45 gold questions, one at a time")
    print(f"{'policy':40} {'threads':>7} {'idle ms':>8} {'loaded ms':>10} {'loaded/idle':>12}")
    for name, env in policies.items():
        idle, threads = measure(env)
        load = busy()
        try:
            time.sleep(1)
            loaded, _ = measure(env)
        finally:
            load.kill()
            load.wait()
        print(f"{name:40} {threads:>7} {idle:>8.1f} {loaded:>10.1f} {loaded / idle:>11.1f}x")


if __name__ == "__main__":
    main()
