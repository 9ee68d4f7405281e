"""Benchmark of the testbed API: nancy's status with 2,000 jobs, and one job submission.

Targets: the site status of nancy (266 nodes) with 2,000 jobs answers in well under 1 s; a job
submission in under 50 ms. Everything runs against a server on 127.0.0.1 started here and stopped at
the end; the clock is frozen so that the 2,000 jobs stay where they were put.

    .venv/bin/python benchmarks/testbed_api.py [--jobs 2000] [--repeat 20]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time

import requests

from g5k_testbed.auth import AuthConfig
from g5k_testbed.http_server import start_server
from g5k_testbed.testbed import TestbedConfig

T0 = 1_700_000_000
HEADERS = {"Accept": "application/json", "X-Api-User-CN": "bench"}


def populate(session: requests.Session, url: str, jobs: int, seed: int = 1) -> float:
    """Submit `jobs` jobs of 1-4 nodes with walltimes of 1-6 h: running ones and a long waiting queue."""
    rnd = random.Random(seed)
    started = time.perf_counter()
    for i in range(jobs):
        nodes = rnd.randint(1, 4)
        hours = rnd.randint(1, 6)
        body = {"resources": f"nodes={nodes},walltime={hours}:00:00", "command": "sleep 1d", "name": f"b{i}"}
        if i % 5 == 0:
            body["resources"] = f"nodes={nodes}+slash_22=1,walltime={hours}:00:00"
        reply = session.post(f"{url}/sites/nancy/jobs", json=body, headers=HEADERS)
        reply.raise_for_status()
    return time.perf_counter() - started


def timed(func: object, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        func()  # type: ignore[operator]
        out.append(time.perf_counter() - started)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args(argv)

    handle = start_server(
        TestbedConfig(sites=["nancy"], frozen_clock=T0, tick_interval=0, auth=AuthConfig(inside_user="bench"))
    )
    session = requests.Session()
    try:
        handle.advance(0)
        fill = populate(session, handle.url, args.jobs)
        handle.advance(5)  # the first jobs run, the others wait in the gantt
        counts = requests.get(f"{handle.url}/sites/nancy/jobs?state=running&limit=1", headers=HEADERS).json()[
            "total"
        ]
        print(
            f"populated nancy with {args.jobs} jobs in {fill:.2f} s ({1000 * fill / args.jobs:.1f} ms per "
            f"submission while the queue grows); {counts} running, the rest waiting"
        )

        def status() -> None:
            reply = session.get(f"{handle.url}/sites/nancy/status", headers=HEADERS)
            reply.raise_for_status()
            reply.json()

        size = len(session.get(f"{handle.url}/sites/nancy/status", headers=HEADERS).content)
        status_times = timed(status, args.repeat)
        print(
            f"GET /sites/nancy/status ({size / 1e6:.1f} MB, 266 nodes, {args.jobs} jobs): "
            f"median {1000 * statistics.median(status_times):.0f} ms, max {1000 * max(status_times):.0f} ms "
            f"(target: well under 1000 ms)"
        )

        def submit() -> None:
            body = {"resources": "nodes=2+slash_22=1,walltime=1:00:00", "command": "sleep 1h"}
            session.post(f"{handle.url}/sites/nancy/jobs", json=body, headers=HEADERS).raise_for_status()

        submit_times = timed(submit, args.repeat)
        print(
            f"POST /sites/nancy/jobs with {args.jobs} jobs in the gantt: "
            f"median {1000 * statistics.median(submit_times):.1f} ms, max {1000 * max(submit_times):.1f} ms "
            f"(target: under 50 ms)"
        )
        victims = [
            j["uid"]
            for j in session.get(
                f"{handle.url}/sites/nancy/jobs?state=running&limit=5", headers=HEADERS
            ).json()["items"]
        ]
        delete_times = []
        for uid in victims:
            started = time.perf_counter()
            session.delete(f"{handle.url}/sites/nancy/jobs/{uid}", headers=HEADERS).raise_for_status()
            delete_times.append(time.perf_counter() - started)
        print(
            f"DELETE of a running job (gantt compaction, bounded per request): "
            f"median {1000 * statistics.median(delete_times):.1f} ms (no target)"
        )
        ok = statistics.median(status_times) < 1.0 and statistics.median(submit_times) < 0.05
        print("targets met" if ok else "targets NOT met")
        return 0
    finally:
        session.close()
        handle.stop()


if __name__ == "__main__":
    sys.exit(main())
