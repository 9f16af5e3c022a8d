"""Benchmark (issue 17): the daemon's CPU and memory against the simulator, and a plain
httpx loop doing the same requests.

    .venv/bin/python bench/daemon.py [--minutes 30] [--schedule full|shipped]
        [--window fixed|rolling] [--weight-limit 1500] [--tree PATH] [--json F]

Three processes, so that each one's CPU is its own:

* the **simulator** (this script's ``_serve`` role): ``collector.sim`` under uvicorn, its
  rate limiter at ``--weight-limit`` with a fixed-minute or rolling 60-second window,
  wrapped in a recorder that counts, per client address, the requests, the weight the
  exchange admitted per clock minute and the 429s and 418s, and writes every request of
  the daemon (path and query) to a log;
* the **daemon**: ``python -m collector run`` with the schedule (``shipped``: the default
  ``schedules.yaml``; ``full``: trades, depth, book tickers and klines at about twice its
  pace, asking for a little more weight than the budget allows, so the governor runs at
  its limit), an API key and a fresh archive, for ``--minutes``. ``--tree`` runs the
  daemon from another checkout (a git worktree of an older commit: the "before" figures),
  with the simulator and this script from this one;
* the **reference loop** (``_reference`` role): ``httpx.AsyncClient`` sending the same
  requests as the daemon, read from the simulator's log and sent ``--lag`` seconds after
  the daemon's, with the same concurrency, from 127.0.0.2 so the simulator counts its
  weight apart; it reads each body and does nothing else: the floor for a Python client.

Every ``--sample`` seconds the daemon's and the loop's CPU time and resident memory are
read from ``/proc``, and whether ``pandas`` or ``matplotlib`` is mapped into the daemon
(their compiled modules show in ``/proc/PID/maps`` once imported). Per minute: CPU
seconds, RSS, requests and admitted weight. At the end: CPU per request, per unit of
weight and per 1,000 archived rows (rows counted from each Delta table's log), and the
ratios daemon / loop. The first minute (imports, first start's backfill) is reported but
left out of the steady-state figures.

``--weight-limit 1500`` (the default) lets the daemon's budget (0.8 of the limit) be the
exchange's usual full 1,200 weight a minute; ``--weight-limit 1200 --window rolling``
is the governor's test against a rolling window.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

DAEMON_ADDRESS = "127.0.0.1"
REFERENCE_ADDRESS = "127.0.0.2"
API_KEY = "bench-key"
CONCURRENCY = 4  # the shipped schedules.yaml's exchange.concurrency
TICKS = os.sysconf("SC_CLK_TCK")
#: The ``full`` schedule: the shipped one with trades, depth, book tickers and klines at
#: about twice its pace, asking a little more than a 1,200 weight a minute budget (trades
#: alone 780), so the daemon stretches it to fit and runs at its limit. Seconds per round.
FULL_SCHEDULE = {"trades": 5, "depth": 3, "book_ticker": 5, "klines": 30}
HEAVY_MODULES = ("pandas", "matplotlib")


# -- the simulator, with a recorder ---------------------------------------------------------


class Recorder:
    """ASGI middleware: per client address, requests, admitted weight per clock minute,
    429s and 418s; the daemon's requests appended to ``log``. ``GET /_bench/stats``."""

    def __init__(self, app: Any, log: Path) -> None:
        from collector.sim.app import resolve

        self.app, self.resolve = app, resolve
        self.log = log.open("a", buffering=1)
        self.clients: dict[str, dict[str, Any]] = {}

    def _client(self, address: str) -> dict[str, Any]:
        return self.clients.setdefault(
            address, {"requests": 0, "weight": 0, "status": {}, "minutes": {}}
        )

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == "/_bench/stats":
            body = json.dumps(self.clients).encode()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})
            return
        seen: dict[str, Any] = {}

        async def watch(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
            await send(message)

        await self.app(scope, receive, watch)
        address = (scope.get("client") or ("?", 0))[0]
        query = scope.get("query_string", b"").decode()
        now = time.time()
        client = self._client(address)
        client["requests"] += 1
        status = str(seen.get("status", 0))
        client["status"][status] = client["status"].get(status, 0) + 1
        minute = str(int(now // 60) * 60)
        resolved = self.resolve(scope["path"])
        if status not in ("429", "418") and resolved is not None:
            weight = resolved[0].cost(dict(parse_qsl(query)))
            client["weight"] += weight
            client["minutes"][minute] = client["minutes"].get(minute, 0) + weight
        if address == DAEMON_ADDRESS and not scope["path"].startswith("/_"):
            target = scope["path"] + ("?" + query if query else "")
            self.log.write(json.dumps({"t": now, "path": target}) + "\n")


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    from collector.sim import SimExchange
    from collector.sim.app import create_app
    from collector.sim.server import _bind

    options: dict[str, Any] = {"weight_limit": args.weight_limit}
    if args.window != "fixed":
        options["weight_window"] = args.window  # a TypeError here: a simulator without it
    app = Recorder(create_app(SimExchange(seed=args.seed), **options), Path(args.log))
    sock = _bind("127.0.0.1", 0)
    Path(args.port_file).write_text(str(sock.getsockname()[1]))
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))


# -- the reference loop ---------------------------------------------------------------------


async def replay(args: argparse.Namespace) -> None:
    import httpx

    transport = httpx.AsyncHTTPTransport(local_address=REFERENCE_ADDRESS)
    limit = asyncio.Semaphore(CONCURRENCY)
    counts = {"requests": 0, "errors": 0, "bytes": 0}
    deadline = time.time() + args.seconds
    async with httpx.AsyncClient(
        base_url=args.base_url, transport=transport, headers={"X-JEX-APIKEY": API_KEY}
    ) as client:

        async def one(due: float, path: str) -> None:
            await asyncio.sleep(max(0.0, due - time.time()))
            async with limit:
                try:
                    response = await client.get(path)
                    counts["bytes"] += len(response.content)
                except httpx.HTTPError:
                    counts["errors"] += 1
            counts["requests"] += 1

        tasks: set[asyncio.Task[None]] = set()
        with open(args.log) as log:
            while time.time() < deadline:
                line = log.readline()
                if not line.endswith("\n"):
                    log.seek(log.tell() - len(line))
                    await asyncio.sleep(0.2)
                    continue
                entry = json.loads(line)
                task = asyncio.create_task(one(entry["t"] + args.lag, entry["path"]))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks, timeout=30)
    print(json.dumps(counts))


# -- the measuring parent -------------------------------------------------------------------


def proc_sample(pid: int) -> dict[str, Any] | None:
    """CPU seconds (user + system), RSS MB and whether heavy modules are mapped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
        maps = Path(f"/proc/{pid}/maps").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat.rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICKS
    heavy = [m for m in HEAVY_MODULES if f"/{m}/" in maps]
    # Resident memory, and its anonymous part (the heap; the rest is mapped library code).
    kb = {
        line.split(":")[0]: int(line.split()[1])
        for line in status.splitlines()
        if line.startswith(("VmRSS:", "RssAnon:"))
    }
    rss, anon = kb.get("VmRSS", 0) / 1024, kb.get("RssAnon", 0) / 1024
    return {"cpu_s": cpu, "rss_mb": rss, "anon_mb": anon, "heavy": heavy}


def schedule_file(kind: str, directory: Path) -> Path:
    import yaml

    settings = yaml.safe_load((ROOT / "schedules.yaml").read_text())
    if kind == "full":
        for job, every in FULL_SCHEDULE.items():
            settings["jobs"][job]["every"] = every
    path = directory / f"{kind}.yaml"
    path.write_text(yaml.safe_dump(settings, sort_keys=False))
    return path


def archived_rows(data: Path) -> dict[str, int]:
    from deltalake import DeltaTable

    rows: dict[str, int] = {}
    for table in sorted(data.iterdir()):
        if (table / "_delta_log").is_dir():
            actions = DeltaTable(str(table)).get_add_actions(flatten=True)
            rows[table.name] = int(sum(actions.column("num_records").to_pylist()))
    return rows


def stats(base_url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{base_url}/_bench/stats", timeout=10) as response:  # noqa: S310
        return dict(json.loads(response.read()))


def start(role: str, *args: str, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: S603 (this script, with its own arguments)
        [sys.executable, __file__, role, *args],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )


def measure(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench-daemon-"))
    shutil.rmtree(work / "data", ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    requests_log, port_file = work / "requests.jsonl", work / "port"
    requests_log.write_text("")
    port_file.unlink(missing_ok=True)
    sim = start(
        "_serve",
        *("--port-file", str(port_file), "--log", str(requests_log)),
        *("--weight-limit", str(args.weight_limit), "--window", args.window),
        log=work / "sim.log",
    )
    try:
        while not port_file.exists() or not port_file.read_text():
            if sim.poll() is not None:
                raise SystemExit(f"the simulator failed: {(work / 'sim.log').read_text()}")
            time.sleep(0.05)
        base_url = f"http://127.0.0.1:{port_file.read_text()}"
        return run_daemon(args, work, base_url, requests_log)
    finally:
        sim.terminate()
        sim.wait(10)


def run_daemon(
    args: argparse.Namespace, work: Path, base_url: str, requests_log: Path
) -> dict[str, Any]:
    seconds = args.minutes * 60
    env = dict(os.environ, JEX_API_KEY=API_KEY)
    if args.tree:
        env["PYTHONPATH"] = str(Path(args.tree).resolve())
    command = [
        *(sys.executable, "-m", "collector", "run"),
        *("--config", str(schedule_file(args.schedule, work))),
        *("--base-url", base_url, "--data-dir", str(work / "data")),
        *("--duration", str(seconds), "--log-level", "warning"),
    ]
    started = time.time()
    daemon = subprocess.Popen(  # noqa: S603 (this interpreter, the collector's CLI)
        command,
        env=env,
        cwd=args.tree or ROOT,
        stdout=(work / "daemon.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    reference = None
    if args.reference:
        reference = start(
            "_reference",
            *("--base-url", base_url, "--log", str(requests_log)),
            *("--lag", str(args.lag), "--seconds", str(seconds + args.lag + 2)),
            log=work / "reference.log",
        )
    minutes: list[dict[str, Any]] = []
    last = {"daemon": 0.0, "reference": 0.0}
    heavy: set[str] = set()
    next_minute = started + args.sample_minute
    rusage = None
    while rusage is None:
        pid, status, usage = os.wait4(daemon.pid, os.WNOHANG)
        if pid:
            rusage, daemon.returncode = usage, os.waitstatus_to_exitcode(status)
            break
        sample = proc_sample(daemon.pid)
        if sample:
            heavy.update(sample["heavy"])
        if time.time() >= next_minute and sample:
            ref = proc_sample(reference.pid) if reference else None
            row: dict[str, Any] = {
                "minute": len(minutes) + 1,
                "daemon_cpu_s": sample["cpu_s"] - last["daemon"],
                "daemon_rss_mb": sample["rss_mb"],
                "daemon_anon_mb": sample["anon_mb"],
            }
            last["daemon"] = sample["cpu_s"]
            if ref:
                row["reference_cpu_s"] = ref["cpu_s"] - last["reference"]
                row["reference_rss_mb"] = ref["rss_mb"]
                last["reference"] = ref["cpu_s"]
            minutes.append(row)
            print(json.dumps(row), flush=True)
            next_minute += args.sample_minute
        time.sleep(min(args.sample, max(0.05, next_minute - time.time())))
    elapsed = time.time() - started
    ref_final = None
    if reference is not None:
        deadline = time.time() + args.lag + 60
        while ref_final is None and time.time() < deadline:
            pid, status, usage = os.wait4(reference.pid, os.WNOHANG)
            if pid:
                reference.returncode = os.waitstatus_to_exitcode(status)
                ref_final = {
                    "cpu_s": usage.ru_utime + usage.ru_stime,
                    "rss_mb": usage.ru_maxrss / 1024,
                }
            time.sleep(0.1)
    exchange = stats(base_url)
    return summarize(args, work, minutes, rusage, elapsed, exchange, ref_final, heavy, daemon)


def summarize(
    args: argparse.Namespace,
    work: Path,
    minutes: list[dict[str, Any]],
    rusage: Any,
    elapsed: float,
    exchange: dict[str, Any],
    ref_final: dict[str, Any] | None,
    heavy: set[str],
    daemon: subprocess.Popen[bytes],
) -> dict[str, Any]:
    ours = exchange.get(DAEMON_ADDRESS, {"requests": 0, "weight": 0, "status": {}, "minutes": {}})
    theirs = exchange.get(REFERENCE_ADDRESS, {"requests": 0, "weight": 0})
    # Admitted weight per full clock minute (the first and the last are partial).
    per_minute = [ours["minutes"][k] for k in sorted(ours["minutes"])][1:-1]
    for row, (_, weight) in zip(minutes, sorted(ours["minutes"].items()), strict=False):
        row["clock_minute_weight"] = weight
    rows = archived_rows(work / "data") if (work / "data").exists() else {}
    cpu = rusage.ru_utime + rusage.ru_stime
    steady = minutes[1:] or minutes
    steady_cpu = sum(m["daemon_cpu_s"] for m in steady)
    steady_minutes = len(steady) * args.sample_minute / 60
    result: dict[str, Any] = {
        "schedule": args.schedule,
        "window": args.window,
        "weight_limit": args.weight_limit,
        "tree": args.tree or str(ROOT),
        "seconds": round(elapsed, 1),
        "returncode": daemon.returncode,
        "daemon": {
            "cpu_s": round(cpu, 2),
            "peak_rss_mb": round(rusage.ru_maxrss / 1024, 1),
            "requests": ours["requests"],
            "weight": ours["weight"],
            "status": ours["status"],
            "rows": sum(rows.values()),
            "rows_by_dataset": rows,
            "heavy_modules_mapped": sorted(heavy),
            "steady_cpu_s_per_min": round(steady_cpu / steady_minutes, 3) if steady else None,
            "cpu_ms_per_request": round(1000 * cpu / max(1, ours["requests"]), 3),
            "cpu_ms_per_weight": round(1000 * cpu / max(1, ours["weight"]), 3),
            "cpu_s_per_1000_rows": round(1000 * cpu / max(1, sum(rows.values())), 4),
        },
        "weight_per_clock_minute": per_minute,
        "minutes": minutes,
    }
    if steady:
        result["daemon"]["core_share"] = round(result["daemon"]["steady_cpu_s_per_min"] / 60, 4)
    if ref_final is not None:
        ref_cpu = ref_final["cpu_s"]
        result["reference"] = {
            "cpu_s": round(ref_cpu, 2),
            "requests": theirs["requests"],
            "peak_rss_mb": round(ref_final["rss_mb"], 1),
            "cpu_ms_per_request": round(1000 * ref_cpu / max(1, theirs["requests"]), 3),
        }
        ref_steady = sum(m.get("reference_cpu_s", 0.0) for m in steady)
        result["reference"]["steady_cpu_s_per_min"] = round(ref_steady / steady_minutes, 3)
        result["daemon_over_reference_per_request"] = round(
            result["daemon"]["cpu_ms_per_request"]
            / max(1e-9, result["reference"]["cpu_ms_per_request"]),
            2,
        )
    return result


def report(result: dict[str, Any]) -> None:
    from common import table

    columns = ["minute", "daemon_cpu_s", "daemon_rss_mb", "daemon_anon_mb", "reference_cpu_s"]
    columns.append("reference_rss_mb")
    columns.append("clock_minute_weight")
    print(table(columns, [[row.get(c, "") for c in columns] for row in result["minutes"]]))
    print(json.dumps({k: v for k, v in result.items() if k != "minutes"}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="role")
    run = sub.add_parser("run", help="measure (the default)")
    run.add_argument("--minutes", type=float, default=30.0)
    run.add_argument("--schedule", choices=["full", "shipped"], default="full")
    run.add_argument("--window", choices=["fixed", "rolling"], default="fixed")
    run.add_argument("--weight-limit", type=int, default=1500)
    run.add_argument("--tree", help="run the daemon from this checkout (the simulator: this one)")
    run.add_argument("--no-reference", dest="reference", action="store_false")
    run.add_argument("--lag", type=float, default=1.0)
    run.add_argument("--sample", type=float, default=5.0, help="seconds between /proc reads")
    run.add_argument("--sample-minute", type=float, default=60.0, help=argparse.SUPPRESS)
    run.add_argument("--out", help="working folder (default: a new temporary one)")
    run.add_argument("--json", type=Path)
    serve_role = sub.add_parser("_serve")
    serve_role.add_argument("--port-file", required=True)
    serve_role.add_argument("--log", required=True)
    serve_role.add_argument("--weight-limit", type=int, default=1500)
    serve_role.add_argument("--window", default="fixed")
    serve_role.add_argument("--seed", type=int, default=1)
    reference_role = sub.add_parser("_reference")
    reference_role.add_argument("--base-url", required=True)
    reference_role.add_argument("--log", required=True)
    reference_role.add_argument("--lag", type=float, default=1.0)
    reference_role.add_argument("--seconds", type=float, required=True)
    argv = sys.argv[1:]
    if not argv or argv[0] not in ("run", "_serve", "_reference"):
        argv = ["run", *argv]
    args = parser.parse_args(argv)
    if args.role == "_serve":
        serve(args)
    elif args.role == "_reference":
        asyncio.run(replay(args))
    else:
        result = measure(args)
        report(result)
        if args.json:
            args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
