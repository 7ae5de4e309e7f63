#!/usr/bin/env python3
"""Runs palisade's benchmark suite and writes BENCHMARKS.md.

One command, from the repository root:

    python3 scripts/bench_report.py

It runs, in order:

1. the criterion benches `layers` and `stacks` (each layer alone and the
   full stacks against their peers, the rejection path, contention), in
   three rounds with short settings (0.5 s warm-up, 1.5 s measurement, 40
   samples per bench); every bench is reported at the median of its three
   round medians, and every target is judged by most rounds;
2. the `footprint` bench (keyed limiter memory, allocations per request);
3. the allocation test `tests/alloc.rs`;
4. the end-to-end run: the `bench_axum` example served bare, inside the
   full stack and with the stack through `Router::layer`, loaded by `wrk`
   (or `oha`) on the loopback interface;

then reads criterion's medians (`<target>/criterion/**/new/estimates.json`)
and writes BENCHMARKS.md with the machine, the date, the medians, the
ratios and every target marked met or missed. A full run takes about 13
minutes on two cores, plus the first build.

Options: `--quick` (shorter criterion settings), `--rounds N` (criterion
rounds, default 3), `--skip-bench` (reuse the last run's criterion
rounds), `--skip-e2e`, `--e2e-seconds N`, `--output PATH`.
The cargo target directory is `$CARGO_TARGET_DIR`, or `target/`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "palisade-workspace"
GROUP_PREFIXES = ("layer_", "reject_", "stack_", "contention_")


# ---------------------------------------------------------------------------
# running things


def log(message: str) -> None:
    print(f"[bench_report] {message}", file=sys.stderr, flush=True)


def target_dir() -> Path:
    env = os.environ.get("CARGO_TARGET_DIR")
    return Path(env) if env else ROOT / "target"


def run(cmd: list[str], capture: bool = False, check: bool = True) -> subprocess.CompletedProcess:
    log("$ " + " ".join(cmd))
    return subprocess.run(
        cmd,
        cwd=ROOT,
        check=check,
        text=True,
        stdout=subprocess.PIPE if capture else None,
    )


def criterion_args(quick: bool) -> list[str]:
    if quick:
        return ["--warm-up-time", "0.5", "--measurement-time", "1", "--sample-size", "30", "--noplot"]
    return ["--warm-up-time", "0.5", "--measurement-time", "1.5", "--sample-size", "40", "--noplot"]


def run_criterion(quick: bool, rounds: int) -> list[dict[str, dict]]:
    """Runs the criterion benches `rounds` times; the medians of each round."""
    criterion = target_dir() / "criterion"
    results = []
    for number in range(1, rounds + 1):
        # Results of a bench that no longer exists must not be reported.
        if criterion.is_dir():
            for entry in criterion.iterdir():
                if entry.is_dir() and entry.name.startswith(GROUP_PREFIXES):
                    shutil.rmtree(entry)
        log(f"criterion round {number} of {rounds}")
        run(["cargo", "bench", "-p", PACKAGE, "--bench", "layers", "--bench", "stacks", "--"]
            + criterion_args(quick))
        results.append(read_criterion())
    rounds_file().write_text(json.dumps(results))
    return results


def rounds_file() -> Path:
    return target_dir() / "bench_report_rounds.json"


def last_rounds() -> list[dict[str, dict]]:
    """The rounds of the last run, or criterion's last results as one round."""
    if rounds_file().is_file():
        return json.loads(rounds_file().read_text())
    return [read_criterion()]


def combine(rounds: list[dict[str, dict]]) -> dict[str, dict]:
    """Each bench at the median of its round medians, with every round's median.

    A slow drift of the machine's load moves one round; the median of
    three rounds is not moved by one bad round.
    """
    combined = {}
    for bench in rounds[0]:
        values = [r[bench]["median"] for r in rounds if bench in r]
        combined[bench] = {"median": statistics.median(values), "rounds": values}
    return combined


def read_criterion() -> dict[str, dict]:
    """Medians in nanoseconds per iteration, keyed by `group/function[/value]`."""
    results = {}
    criterion = target_dir() / "criterion"
    for estimates in criterion.glob("**/new/estimates.json"):
        bench = json.loads((estimates.parent / "benchmark.json").read_text())
        if not bench["group_id"].startswith(GROUP_PREFIXES):
            continue
        median = json.loads(estimates.read_text())["median"]
        results[bench["full_id"]] = {"median": median["point_estimate"]}
    return results


def run_footprint() -> dict:
    out = run(["cargo", "bench", "-p", PACKAGE, "--bench", "footprint"], capture=True).stdout
    for line in out.splitlines():
        if line.startswith("FOOTPRINT_JSON "):
            return json.loads(line[len("FOOTPRINT_JSON "):])
    raise RuntimeError("the footprint bench printed no FOOTPRINT_JSON line")


def run_alloc_test() -> dict:
    result = run(
        ["cargo", "test", "--release", "-p", PACKAGE, "--test", "alloc", "--", "--test-threads", "1"],
        capture=True,
        check=False,
    )
    tests = re.findall(r"^test (\S+) \.\.\. (ok|FAILED)$", result.stdout, re.MULTILINE)
    return {"passed": result.returncode == 0, "tests": tests}


# ---------------------------------------------------------------------------
# end to end


def load_tool() -> str | None:
    for tool in ("wrk", "oha"):
        if shutil.which(tool):
            return tool
    return None


def pinned(cpu: int | None, cmd: list[str]) -> list[str]:
    """`cmd` pinned to one CPU when `taskset` is there and the machine has two."""
    if cpu is None or not shutil.which("taskset") or (os.cpu_count() or 1) < 2:
        return cmd
    return ["taskset", "-c", str(cpu)] + cmd


def load_once(tool: str, url: str, seconds: int, connections: int) -> float:
    if tool == "wrk":
        out = subprocess.run(
            pinned(1, ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", url]),
            check=True, text=True, stdout=subprocess.PIPE,
        ).stdout
        match = re.search(r"Requests/sec:\s+([\d.]+)", out)
        errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        if errors:
            raise RuntimeError(f"{errors.group(1)} non-2xx responses under load")
        return float(match.group(1))
    out = subprocess.run(
        pinned(1, ["oha", "-z", f"{seconds}s", "-c", str(connections), "--no-tui", "--output-format", "json", url]),
        check=True, text=True, stdout=subprocess.PIPE,
    ).stdout
    return float(json.loads(out)["summary"]["requestsPerSec"])


def start_server(binary: Path, mode: str) -> tuple[subprocess.Popen, str]:
    server = subprocess.Popen(
        pinned(0, [str(binary), mode, "--workers", "1"]), cwd=ROOT, text=True, stdout=subprocess.PIPE
    )
    line = server.stdout.readline()
    match = re.search(r"listening on (http://\S+)", line)
    if not match:
        server.kill()
        raise RuntimeError(f"bench_axum {mode} did not start: {line!r}")
    return server, match.group(1) + "/"


def stop_server(server: subprocess.Popen) -> None:
    server.send_signal(signal.SIGINT)
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


# The end-to-end servers (`bench_axum` modes): bare first, as every ratio's
# denominator; the verdict is judged on "palisade".
E2E_SERVERS = {
    "bare": "bare axum",
    "palisade": "axum inside the palisade full stack",
    "palisade-route-layer": "axum + the full stack through `Router::layer`",
}


def cpu_seconds(process: subprocess.Popen) -> float | None:
    """User plus system CPU time `process` has used so far (Linux)."""
    try:
        fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def run_e2e(seconds: int, rounds: int = 21, connections: int = 32) -> dict:
    tool = load_tool()
    if tool is None:
        return {"skipped": "neither wrk nor oha is installed (apt-get install wrk, or cargo install oha)"}
    run(["cargo", "build", "--release", "-p", PACKAGE, "--example", "bench_axum"])
    binary = target_dir() / "release" / "examples" / "bench_axum"
    modes = tuple(E2E_SERVERS)
    runs: dict[str, list[float]] = {mode: [] for mode in modes}
    cpu: dict[str, list[float]] = {mode: [] for mode in modes}
    servers: dict[str, tuple[subprocess.Popen, str]] = {}
    try:
        # The servers run side by side, all pinned to the same core; only
        # the one under load uses it. Each is warmed up once.
        for mode in modes:
            servers[mode] = start_server(binary, mode)
            load_once(tool, servers[mode][1], 1, connections)
        # Each round loads the servers back to back, in an order that
        # turns from round to round, so that a change in background load
        # hits all alike and a steady drift favours none.
        for number in range(rounds):
            shift = number % len(modes)
            order = modes[shift:] + modes[:shift]
            if number % 2:
                order = order[::-1]
            for mode in order:
                server, url = servers[mode]
                before = cpu_seconds(server)
                rate = load_once(tool, url, seconds, connections)
                after = cpu_seconds(server)
                runs[mode].append(rate)
                if before is not None and after is not None and rate > 0:
                    cpu[mode].append((after - before) / (rate * seconds) * 1e6)
                log(f"e2e {mode}: {rate:.0f} req/s")
    finally:
        for server, _ in servers.values():
            stop_server(server)
    # The ratio within a round is not moved by a slow drift of the
    # machine's load.
    paired = {
        mode: [p / b for b, p in zip(runs["bare"], runs[mode])] for mode in modes[1:]
    }
    result = {
        "tool": tool,
        "seconds": seconds,
        "rounds": rounds,
        "connections": connections,
        "runs": runs,
        "medians": {mode: statistics.median(runs[mode]) for mode in modes},
        "paired": paired,
        "ratios": {mode: statistics.median(paired[mode]) for mode in modes[1:]},
    }
    if all(len(cpu[mode]) == rounds for mode in modes):
        # Server CPU time per request, paired within each round.
        result["cpu_us"] = {mode: statistics.median(cpu[mode]) for mode in modes}
        result["cpu_added_us"] = {
            mode: statistics.median(c - b for b, c in zip(cpu["bare"], cpu[mode]))
            for mode in modes[1:]
        }
    return result


# ---------------------------------------------------------------------------
# the machine


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    rustc = subprocess.run(["rustc", "-V"], text=True, stdout=subprocess.PIPE).stdout.strip()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True, stdout=subprocess.PIPE
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "rustc": rustc,
        "commit": commit,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


# ---------------------------------------------------------------------------
# report


@dataclass
class Target:
    name: str
    measured: str
    met: bool | None
    why: str = ""
    # Targets judged on criterion's figures: the ratio compared with the
    # bound, and in how many rounds the target was met (see
    # `judge_by_rounds`).
    ratio: float | None = None
    from_criterion: bool = False
    rounds: str = ""
    # Whether the target asks for a ratio at least its bound (scaling)
    # rather than at most.
    at_least: bool = False


class Report:
    def __init__(self, medians: dict[str, dict]):
        self.medians = medians
        self.targets: list[Target] = []

    def ns(self, bench: str) -> float | None:
        entry = self.medians.get(bench)
        return entry["median"] if entry else None

    def overhead(self, group: str, variant: str, bare: str = "bare") -> float | None:
        value, base = self.ns(f"{group}/{variant}"), self.ns(f"{group}/{bare}")
        if value is None or base is None:
            return None
        return value - base

    def target(self, name: str, measured: str, met: bool | None, why: str = "") -> None:
        self.targets.append(Target(name, measured, met, why))

    def ratio_target(self, name: str, measured: str, r: float | None, met: bool | None,
                     why: str = "", at_least: bool = False) -> None:
        """A target judged on criterion's figures, by the ratio `r`."""
        self.targets.append(Target(name, measured, met, why, ratio=r, from_criterion=True,
                                   at_least=at_least))


def fmt_ns(value: float | None) -> str:
    if value is None:
        return "n/a"
    if abs(value) >= 1e6:
        return f"{value / 1e6:.2f} ms"
    if abs(value) >= 1e3:
        return f"{value / 1e3:.2f} µs"
    return f"{value:.1f} ns"


def fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}×"


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def verdict(met: bool | None) -> str:
    return {True: "**met**", False: "**missed**", None: "not measured"}[met]


# Why a target is missed, from profiling (valgrind --tool=callgrind); shown
# only when the target is missed in this run.
MISSED_BECAUSE = {
    "stack": (
        "The stack pays one clock read (the rate limiter's), about fourteen atomic read-modify-writes "
        "and the moves of its 128-byte (`u64`) or 344-byte (HTTP) response future through every "
        "layer's `call`: for HTTP, ten `memcpy` calls per request of the stack's own (the "
        "224-byte request at five layer boundaries, the growing future four times, the response "
        "once; the bench's loop adds its own). They and the loop's took 28% of the HTTP bench's "
        "time in a `perf` profile of this code (about half, with four copies more of the "
        "stack's, before); see *The full stack* in the notes below."
    ),
    "stack_leaked": (
        "Leaked, the stack writes no reference counts, but it still pays the clock read, the locked "
        "instructions of the rate limiter, breaker and bulkhead, and the moves of its response "
        "future through every layer's `call`; see *The full stack* in the notes below."
    ),
    "layer:ratelimit": (
        "Both read the clock once per request (about 20 ns of either's overhead here). tower's "
        "`RateLimit` then decrements a counter owned by the service clone, so clones do not share "
        "a limit; palisade's runs GCRA on one bucket shared by every clone, which costs a "
        "compare-and-swap and the arrival-time arithmetic, and its response future is copied "
        "through stalled loads (item 4 of *The full stack* in the notes below)."
    ),
    "layer:bulkhead": (
        "Both take and give back a slot with locked instructions, and palisade's builds its response "
        "future in the caller's place; alternated runs while writing this measured palisade's at about "
        "half tower's overhead, so a miss here is this run's noise or a build whose code layout "
        "favours tower's. See *The bulkhead against tower's `ConcurrencyLimit`* in the notes below."
    ),
    "scaling": (
        "Every request writes cache lines shared by all workers: the rate limiter's bucket and the "
        "bulkhead's slot word, which any shared limit must write, and, unless the stack is leaked, "
        "five reference counts (a closed breaker in front of a healthy service writes nothing "
        "shared since its window skips outcomes that change nothing). A second worker mostly waits for lines "
        "held by the first. The table *Each layer alone, 64 tasks* shows where: the layers whose "
        "only shared write is a reference count slow down on two workers (leaking removes that "
        "write), and so do the bulkhead and, in some rounds, the rate limiter; see *Scaling with "
        "workers* in the notes below."
    ),
}
MISSED_BECAUSE["layer:bulkhead_shed"] = MISSED_BECAUSE["layer:bulkhead"]
REJECTION_COSTS = (
    "A rejection returns a `BoxError`, so it allocates its error (which names the policy, the limit "
    "and the reason) and the caller frees it: about 8 ns of `malloc` and `free` here, more than "
    "the bulkhead's whole admission adds. Only a zero-sized error would avoid it, and it could not "
    "say which policy refused."
)
SCOPE_COST = (
    "palisade's layer enters a capture scope around `call` and every poll (a thread-local write "
    "on the way in and one on the way out, with a check for a panic the service caught itself), "
    "so that the panic hook records a caught panic's location and backtrace and keeps the default "
    "print quiet, and its response future clones the layer's `Arc`. It makes no copy of the "
    "inner future or the response that the bare service does not make: what it adds is a few "
    "nanoseconds, near this machine's run-to-run noise."
)
SEE_SCOPE = " See *Measured and not kept* in the notes below."
MISSED_BECAUSE["layer:catch_panic"] = SCOPE_COST + SEE_SCOPE
MISSED_BECAUSE["layer:catch_panic_http"] = (
    SCOPE_COST
    + " The HTTP flavour also keeps the path (up to 96 bytes) and the method, to log a panic "
    "after the request has gone to the service, and looks up the request's `content-type` to "
    "answer a gRPC call as gRPC, which tower-http's layer does not do; its future carries them."
    + SEE_SCOPE
)


def evaluate(report: Report, footprint: dict | None, alloc: dict | None, e2e: dict | None) -> None:
    n = report.ns
    # Full stack, as built for both request types, and the leaked u64 stack:
    # the configuration a server built once at start-up can choose.
    for kind, variant, title, why in (
        ("u64", "palisade", "u64", "stack"),
        ("http", "palisade", "http", "stack"),
        ("u64", "palisade_leaked", "u64, leaked", "stack_leaked"),
    ):
        pal = report.overhead(f"stack_{kind}", variant)
        timeout_group, timeout_variant, timeout_label = {
            "u64": ("layer_timeout", "tower", "tower `Timeout`"),
            "http": ("layer_timeout_http", "tower", "tower `Timeout`"),
        }[kind]
        for other, label, bound in (
            (report.overhead(f"stack_{kind}", "peer"), "the peer stack's", 0.15),
            (report.overhead(timeout_group, timeout_variant), f"{timeout_label} alone", 3.0),
        ):
            r = ratio(pal, other)
            report.ratio_target(
                f"Full stack ({title}): overhead ≤ {bound:g}× {label}",
                f"{fmt_ns(pal)} vs {fmt_ns(other)} = {fmt_ratio(r)}",
                r,
                None if r is None else r <= bound,
                MISSED_BECAUSE[why],
            )
    # Each layer.
    for key, label, group, variant, counterpart, counterpart_label, bound in (
        ("layer:timeout", "Timeout", "layer_timeout", "palisade", "tower", "tower `Timeout`", 1.0),
        ("layer:bulkhead", "Bulkhead", "layer_bulkhead", "palisade", "tower", "tower `ConcurrencyLimit`", 1.0),
        ("layer:bulkhead_shed", "Bulkhead (rejecting when full)", "layer_bulkhead", "palisade",
         "tower_load_shed", "tower `LoadShed` + `ConcurrencyLimit`", 1.0),
        ("layer:ratelimit", "Rate limit", "layer_ratelimit", "palisade", "tower", "tower `RateLimit`", 1.0),
        ("layer:catch_panic", "Catch panic", "layer_catch_panic", "palisade", "tower_http",
         "tower-http `CatchPanic`", 1.0),
        ("layer:catch_panic_http", "Catch panic (HTTP flavour)", "layer_catch_panic", "palisade_http",
         "tower_http", "tower-http `CatchPanic`", 1.0),
        ("layer:breaker", "Circuit breaker", "layer_breaker", "palisade", "tower_resilience",
         "tower-resilience's breaker", 0.25),
        ("layer:fallback", "Fallback", "layer_fallback", "palisade", "tower_resilience",
         "tower-resilience's fallback", 0.25),
    ):
        pal = report.overhead(group, variant)
        other = report.overhead(group, counterpart)
        r = ratio(pal, other)
        bound_text = "≤" if bound == 1.0 else f"≤ {bound}×"
        met = None if pal is None or other is None else pal <= bound * other
        why = MISSED_BECAUSE.get(key, "")
        floor = report.overhead(group, "floor") if f"{group}/floor" in report.medians else None
        if floor is not None and other and pal is not None and floor > other:
            why = (
                f"{why} The *floor* row of the table (one clock read and one compare-and-swap of "
                f"a shared word, the least any limit shared by every clone does, with no "
                f"response future of its own) costs {fmt_ns(floor)} in this run, "
                f"{fmt_ratio(ratio(floor, other))} {counterpart_label}'s overhead: no shared "
                f"limiter that reads the clock per request can meet this target; palisade's "
                f"is {fmt_ns(pal - floor)} above that floor."
            )
        report.ratio_target(
            f"{label}: overhead {bound_text} {counterpart_label}'s",
            f"{fmt_ns(pal)} vs {fmt_ns(other)} = {fmt_ratio(r)}",
            r,
            met,
            why,
        )
    # Scaling: the default stack, and the leaked one, whose services and
    # calls write no reference counts.
    peer = n("contention_w2/peer/64")
    for variant, label in (("palisade", "palisade stack"), ("palisade_leaked", "palisade stack, leaked")):
        w2 = n(f"contention_w2/{variant}/64")
        w1 = n(f"contention_w1/{variant}/64")
        r = ratio(w1, w2)  # time per request: 1 worker / 2 workers = throughput ratio
        report.ratio_target(
            f"Scaling: 64 tasks, 2 workers ≥ 1.7× 1 worker ({label})",
            f"{rps(w2)} vs {rps(w1)} = {fmt_ratio(r)}",
            r,
            None if r is None else r >= 1.7,
            MISSED_BECAUSE["scaling"],
            at_least=True,
        )
        r = ratio(peer, w2)
        report.ratio_target(
            f"Scaling: 64 tasks, 2 workers, {label} ≥ 10× the peer stack",
            f"{rps(w2)} vs {rps(peer)} = {fmt_ratio(r)}",
            r,
            None if r is None else r >= 10.0,
            "The same shared writes cap palisade's throughput with two workers, while the peer "
            "stack's cost is mostly per-request allocation and locking. " + MISSED_BECAUSE["scaling"],
            at_least=True,
        )
    # Rejection.
    for layer, label in (("ratelimit", "rate-limited"), ("breaker", "breaker open"), ("bulkhead", "bulkhead full")):
        rej, adm = n(f"reject_{layer}/palisade_reject"), n(f"reject_{layer}/palisade_admit")
        r = ratio(rej, adm)
        report.ratio_target(
            f"Rejection ≤ 2× admission: {label}",
            f"{fmt_ns(rej)} vs {fmt_ns(adm)} = {fmt_ratio(r)}",
            r,
            None if r is None else r <= 2.0,
            REJECTION_COSTS,
        )
    # Allocations.
    if alloc is not None:
        failed = [name for name, status in alloc["tests"] if status != "ok"]
        report.target(
            "Zero allocations per request on the happy path (`tests/alloc.rs`)",
            f"{len(alloc['tests']) - len(failed)} of {len(alloc['tests'])} tests pass"
            + (f"; failed: {', '.join(failed)}" if failed else ""),
            alloc["passed"] and bool(alloc["tests"]),
        )
    else:
        report.target("Zero allocations per request on the happy path", "not run", None)
    # Keyed memory.
    if footprint is not None:
        mem = footprint["keyed_memory"]
        report.target(
            "Keyed limiter: ≤ 70 bytes per key (1,000,000 keys)",
            f"{mem['bytes_per_tracked_key']:.1f} bytes per tracked key "
            f"({mem['bytes_per_key_of_capacity']:.1f} per key of capacity)",
            mem["bytes_per_tracked_key"] <= 70,
        )
        report.target(
            "Keyed limiter: never above the cap",
            f"at most {mem['max_tracked']:,} keys tracked for a cap of {mem['cap']:,} "
            f"after {mem['keys_offered'] + mem['flood_keys']:,} distinct keys",
            mem["max_tracked"] <= mem["cap"],
        )
    else:
        report.target("Keyed limiter memory", "not run", None)
    # End to end.
    if e2e and "ratios" in e2e:
        e2e_ratio, medians = e2e["ratios"]["palisade"], e2e["medians"]
        report.target(
            "End to end: full stack ≥ 0.95× bare axum requests/s",
            f"median of {e2e['rounds']} paired rounds: {e2e_ratio:.3f}× "
            f"(medians {medians['palisade']:,.0f} vs {medians['bare']:,.0f} req/s); "
            f"with `Router::layer` instead: {e2e['ratios']['palisade-route-layer']:.3f}×",
            e2e_ratio >= 0.95,
            "In a real axum server the stack adds its own work and the moves of its large futures "
            "to a one-core hello-world request "
            f"({1 - e2e_ratio:.1%} fewer requests/s in this run); see *End to end* in the notes "
            "below.",
        )
    else:
        report.target("End to end: full stack ≥ 0.95× bare axum requests/s",
                      (e2e or {}).get("skipped", "not run"), None)


def rps(ns_per_request: float | None) -> str:
    if ns_per_request is None:
        return "n/a"
    return f"{1e9 / ns_per_request / 1e6:.2f} M req/s"


CONTENDED_LAYERS = (
    ("bare", "bare service"),
    ("timeout", "palisade timeout"),
    ("fallback", "palisade fallback"),
    ("catch_panic", "palisade catch-panic"),
    ("ratelimit", "palisade rate limit"),
    ("breaker", "palisade circuit breaker"),
    ("bulkhead", "palisade bulkhead"),
    ("tower_concurrency_limit", "tower `ConcurrencyLimit`"),
)

LAYER_GROUPS = (
    ("layer_timeout", "Timeout (`u64`)"),
    ("layer_timeout_waiting", "Timeout, around a call that waits once (`u64`): every timeout starts its timer"),
    ("layer_timeout_http", "Timeout, HTTP flavours (`http::Request<()>`)"),
    ("layer_bulkhead", "Bulkhead / concurrency limit (`u64`)"),
    ("layer_ratelimit", "Rate limit, global (`u64`)"),
    ("layer_breaker", "Circuit breaker, closed (`u64`)"),
    ("layer_fallback", "Fallback, not needed (`u64`)"),
    ("layer_catch_panic", "Catch panic, no panic (`http::Request<()>`)"),
)

VARIANT_NAMES = {
    "bare": "bare service",
    "palisade": "palisade",
    "palisade_http": "palisade (HTTP flavour: panics become 500s)",
    "palisade_extension": "palisade, `expose_deadline(true)` (deadline also in the extensions)",
    "palisade_leaked": "palisade, leaked (`StackLayer::leak`)",
    "tower": "tower",
    "tower_load_shed": "tower `LoadShed` + `ConcurrencyLimit`",
    "tower_http": "tower-http",
    "tower_resilience": "tower-resilience 0.13",
    "peer": "peer stack",
    "floor": "floor: one clock read and one compare-and-swap of a shared word (not a limiter)",
}


def group_table(report: Report, group: str) -> list[str]:
    variants = sorted(
        (bench.split("/", 1)[1] for bench in report.medians if bench.startswith(group + "/")),
        key=lambda v: (v != "bare", not v.startswith("palisade"), v),
    )
    pal = report.overhead(group, "palisade")
    lines = [
        "| variant | median per request | overhead over bare | overhead ÷ palisade's | each round's median |",
        "|---|---:|---:|---:|---:|",
    ]
    for variant in variants:
        bench = f"{group}/{variant}"
        over = report.overhead(group, variant)
        rel = "" if variant == "bare" else fmt_ratio(ratio(over, pal))
        rounds = " / ".join(fmt_ns(v) for v in report.medians[bench].get("rounds", []))
        lines.append(
            f"| {VARIANT_NAMES.get(variant, variant)} | {fmt_ns(report.ns(bench))} "
            f"| {'' if variant == 'bare' else fmt_ns(over)} | {rel} | {rounds} |"
        )
    return lines


def write_markdown(path: Path, info: dict, report: Report, footprint, alloc, e2e, settings: str) -> None:
    out: list[str] = []
    w = out.append
    w("# palisade benchmarks")
    w("")
    w("Generated by `python3 scripts/bench_report.py`, which runs the whole suite and rewrites this file. "
      "Every ratio compares numbers measured in the same run, on the same machine.")
    w("")
    w("## Machine and run")
    w("")
    w("| | |")
    w("|---|---|")
    w(f"| date | {info['date']} |")
    w(f"| CPU | {info['cpu']} |")
    w(f"| cores | {info['cores']} |")
    w(f"| load average (1, 5, 15 min) at start | {info['load_start']} |")
    w(f"| load average (1, 5, 15 min) at end | {info['load_end']} |")
    w(f"| toolchain | {info['rustc']} |")
    w(f"| commit | {info['commit']} |")
    w(f"| criterion | {settings} |")
    w(f"| run time | {info['elapsed']} |")
    w("")
    w("Criterion runs every bench in several rounds, one after the other; a bench's figure is the "
      "median of its rounds' medians (each round's median is listed too). Every target is also "
      "evaluated on each round alone: *rounds met* says in how many rounds it was met, with each "
      "round's ratio, and the verdict is that of most rounds; the ratio in *measured* is the "
      "deciding round's (the median round's, for three rounds), so it agrees with the verdict, and "
      "may differ a little from the ratio of the two medians beside it. *Overhead* is a variant's "
      "median minus the bare service's median in the same group: what the layer adds to one "
      "request. The machine is shared, so small differences (a few ns) are within noise; the load "
      "average above says how busy it was.")
    w("")
    w("## Targets")
    w("")
    w("| target | measured | verdict | rounds met |")
    w("|---|---|---|---:|")
    for t in report.targets:
        w(f"| {t.name} | {t.measured} | {verdict(t.met)} | {t.rounds} |")
    w("")
    missed = [(t.name, t.why) for t in report.targets if t.met is False]
    if missed:
        w("### Why the missed targets are missed")
        w("")
        for name, why in missed:
            w(f"- **{name}.** {why or 'See the notes at the end of this file.'}")
        w("")

    w("## Each layer alone")
    w("")
    w("Each iteration is one `ready().await` + `call().await` on a current-thread tokio runtime, "
      "around a service that answers at once; the layered service is built before timing starts. "
      "Happy path: nothing is rejected, and no fallback answers (checked after every batch). An "
      "HTTP request is a `GET /api/v1/items/42` with `Host`, `User-Agent` and `Accept` headers, "
      "built in every iteration (for every variant, the bare service included).")
    w("")
    for group, title in LAYER_GROUPS:
        w(f"### {title}")
        w("")
        out.extend(group_table(report, group))
        w("")

    w("## The full stack")
    w("")
    w("palisade: `Stack` with fallback, rate limit, circuit breaker, timeout, bulkhead and "
      "panic-catch (HTTP: the timeout's HTTP flavour, the HTTP panic-catch and `http_errors()`), "
      "limits set so nothing rejects. Peer: tower-resilience 0.13's fallback, rate limiter, circuit "
      "breaker and bulkhead, with tower-http's timeout and catch-panic for HTTP, in the same order. "
      "tower-http's layers take HTTP requests only and no peer catches panics of a non-HTTP "
      "service, so the `u64` peer stack uses tower's `Timeout` and has no panic-catch: five "
      "layers against palisade's six.")
    w("")
    for group, title in (("stack_u64", "`u64` requests"), ("stack_http", "`http::Request<()>` requests")):
        w(f"### {title}")
        w("")
        out.extend(group_table(report, group))
        w("")

    w("## Contention")
    w("")
    w("One stack, cloned into N tasks on a multi-thread runtime, every task sending requests back to "
      "back; throughput over all tasks.")
    w("")
    w("*palisade* is the stack as built; *leaked* is the same stack after `StackLayer::leak`, whose "
      "services and calls reach each layer's state by a plain reference instead of a counted one.")
    w("")
    w("| tasks | stack | bare, 2 workers | palisade, 2 workers | peer, 2 workers | palisade, 1 worker | "
      "peer, 1 worker | palisade 2 ÷ 1 worker | palisade ÷ peer (2 workers) |")
    w("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for tasks in (1, 2, 8, 64):
        get = lambda v, wk: report.ns(f"contention_w{wk}/{v}/{tasks}")
        for variant, label in (("palisade", "palisade"), ("palisade_leaked", "leaked")):
            w(f"| {tasks} | {label} | {rps(get('bare', 2))} | {rps(get(variant, 2))} | {rps(get('peer', 2))} "
              f"| {rps(get(variant, 1))} | {rps(get('peer', 1))} "
              f"| {fmt_ratio(ratio(get(variant, 1), get(variant, 2)))} "
              f"| {fmt_ratio(ratio(get('peer', 2), get(variant, 2)))} |")
    w("")
    w("### Each layer alone, 64 tasks")
    w("")
    w("Which layer keeps a second worker from adding throughput: each palisade layer around the "
      "same service, shared by 64 tasks (tower's `ConcurrencyLimit` for comparison with the "
      "bulkhead), as built and leaked. Figures are time per request over all tasks: lower is "
      "faster.")
    w("")
    w("| service | 1 worker | 2 workers | 2 ÷ 1 worker (throughput) | leaked, 1 worker | leaked, 2 workers | leaked 2 ÷ 1 worker |")
    w("|---|---:|---:|---:|---:|---:|---:|")
    for name, label in CONTENDED_LAYERS:
        one = report.ns(f"contention_layers_w1/{name}")
        two = report.ns(f"contention_layers_w2/{name}")
        leaked_one = report.ns(f"contention_layers_w1/{name}_leaked")
        leaked_two = report.ns(f"contention_layers_w2/{name}_leaked")
        leaked = (
            f"{fmt_ns(leaked_one)} | {fmt_ns(leaked_two)} | {fmt_ratio(ratio(leaked_one, leaked_two))}"
            if leaked_one is not None else " |  | "
        )
        w(f"| {label} | {fmt_ns(one)} | {fmt_ns(two)} | {fmt_ratio(ratio(one, two))} | {leaked} |")
    w("")

    w("## The rejection path")
    w("")
    w("One rejected request against one admitted by the same layer alone (rejection: the boxed "
      "error and its event; admission: the layer's bookkeeping plus the call of the service). "
      "Each breaker is tripped open by 200 failed calls, as a failing dependency trips it (so an "
      "open breaker's check of its wait's end, a clock read, is paid); the bulkhead has one slot, "
      "held by a call that never ends.")
    w("")
    w("| layer | palisade admit | palisade reject | reject ÷ admit | peer admit | peer reject |")
    w("|---|---:|---:|---:|---:|---:|")
    for layer, label, peer_prefix in (
        ("ratelimit", "rate limit", "tower_resilience"),
        ("breaker", "circuit breaker", "tower_resilience"),
        ("bulkhead", "bulkhead", "tower_resilience"),
        ("bulkhead", "bulkhead (peer: tower `LoadShed`)", "tower_load_shed"),
    ):
        g = f"reject_{layer}"
        adm, rej = report.ns(f"{g}/palisade_admit"), report.ns(f"{g}/palisade_reject")
        w(f"| {label} | {fmt_ns(adm)} | {fmt_ns(rej)} | {fmt_ratio(ratio(rej, adm))} "
          f"| {fmt_ns(report.ns(f'{g}/{peer_prefix}_admit'))} | {fmt_ns(report.ns(f'{g}/{peer_prefix}_reject'))} |")
    w("")
    w("tower-resilience's bulkhead in fail-fast mode waits for a zero-length `tokio::time::timeout`, "
      "which completes on the timer's next tick (about 1 ms), so its rejection is measured in "
      "milliseconds.")
    w("")

    w("## Allocations per request")
    w("")
    if alloc is not None:
        w(f"`tests/alloc.rs` ({'passed' if alloc['passed'] else 'FAILED'}):")
        w("")
        for name, status in alloc["tests"]:
            w(f"- `{name}`: {status}")
        w("")
    if footprint is not None:
        w("Counted with a counting allocator over 1000 calls after 1000 warm-up calls "
          "(`benches/footprint.rs`):")
        w("")
        w("| service | allocations per request | bytes per request |")
        w("|---|---:|---:|")
        for name, row in footprint["allocations"].items():
            w(f"| {name} | {row['allocations']:.2f} | {row['bytes']:.0f} |")
        w("")
        w("palisade's HTTP stack at its defaults allocates nothing: the handler reads the deadline "
          "with `Deadline::current()`. With `HttpDeadline::new().expose_deadline(true)` the applied "
          "`Deadline` is also inserted into the request's extensions; on a request whose extension "
          "map is still empty that insertion allocates three times (the map, its table and the "
          "boxed value), and `tests/alloc.rs` checks that the stack allocates exactly what that "
          "insertion does and nothing more.")
        w("")

        mem = footprint["keyed_memory"]
        w("## Keyed rate limiter memory")
        w("")
        w(f"A keyed limiter with a cap of {mem['cap']:,} keys, fed {mem['keys_offered']:,} distinct keys "
          f"(each kept busy so that none is evicted), then {mem['flood_keys']:,} more:")
        w("")
        w("| | |")
        w("|---|---:|")
        w(f"| allocated when the layer is built | {mem['build_bytes']:,.0f} bytes |")
        w(f"| per key of capacity | {mem['bytes_per_key_of_capacity']:.1f} bytes |")
        w(f"| keys tracked after the first million | {mem['tracked']:,} |")
        w(f"| per tracked key | {mem['bytes_per_tracked_key']:.1f} bytes |")
        w(f"| allocations during the first million | {mem['first_million_allocations']} |")
        w(f"| most keys tracked during the flood of {mem['flood_keys']:,} | {mem['flood_peak_tracked']:,} |")
        w(f"| allocations / bytes retained during the flood | {mem['flood_allocations']} / {mem['flood_bytes_retained']} |")
        w("")
        w("Keys that find their set of eight slots full share the overflow bucket, which is why "
          "slightly fewer than a million are tracked.")
        w("")

    w("## End to end")
    w("")
    if e2e and "ratios" in e2e:
        w(f"`examples/bench_axum.rs` (one `GET /` route answering a static string; tokio with one "
          f"worker thread, pinned to CPU 0) on 127.0.0.1, loaded by `{e2e['tool']}` (pinned to CPU 1) "
          f"with one thread and {e2e['connections']} connections for {e2e['seconds']} s, after a 1 s warm-up; "
          f"the three servers run side by side and are warmed up once; {e2e['rounds']} rounds, each "
          "loading them back to back, in an order that turns from round to round; median reported. "
          "The full stack is the HTTP stack above. It goes around the whole router "
          "(`stack.layer(router)`, served with `axum::ServiceExt::into_make_service`), the way "
          "palisade's documentation recommends for a server-wide policy: every request meets it "
          "once, before routing. The third server applies the same stack with `Router::layer`, "
          "which wraps each route in another of axum's boxed route services: per request, axum "
          "then also clones the layered service into a box and boxes its response future, with "
          "the stack's whole future inside.")
        w("")
        w("| server | runs (req/s) | median req/s |")
        w("|---|---|---:|")
        medians, ratios = e2e["medians"], e2e["ratios"]
        for mode, name in E2E_SERVERS.items():
            runs = ", ".join(f"{x:,.0f}" for x in e2e["runs"][mode])
            w(f"| {name} | {runs} | {medians[mode]:,.0f} |")
        w("")
        paired = ", ".join(f"{x:.3f}" for x in e2e["paired"]["palisade"])
        w(f"Ratio per round (full stack around the router ÷ bare, runs of a round back to back): "
          f"{paired}. Median: **{ratios['palisade']:.3f}** (ratio of the medians: "
          f"{medians['palisade'] / medians['bare']:.3f}). The verdict uses the median of the "
          "per-round ratios, which a drift in the machine's load moves least.")
        paired = ", ".join(f"{x:.3f}" for x in e2e["paired"]["palisade-route-layer"])
        w("")
        w(f"Through `Router::layer`, per round: {paired}. Median: "
          f"**{ratios['palisade-route-layer']:.3f}**.")
        if "cpu_us" in e2e:
            cpu, added = e2e["cpu_us"], e2e["cpu_added_us"]
            w("")
            w("The same cost as CPU time: the server's user plus system time per request, read "
              "from `/proc` around each run (the load keeps the server's one core busy): "
              f"bare {cpu['bare']:.2f} µs, with the stack around the router {cpu['palisade']:.2f} µs "
              f"(median added within a round: {added['palisade']:+.2f} µs), through `Router::layer` "
              f"{cpu['palisade-route-layer']:.2f} µs ({added['palisade-route-layer']:+.2f} µs).")
    else:
        w((e2e or {}).get("skipped", "Not run."))
    w("")

    notes = ROOT / "scripts" / "bench_notes.md"
    if notes.exists():
        w(notes.read_text().rstrip())
        w("")
    path.write_text("\n".join(out) + "\n")


def judge_by_rounds(report: Report, rounds, footprint, alloc, e2e) -> None:
    """Evaluates every criterion target on each round alone.

    A target's verdict is the verdict of most rounds, so that one noisy
    round cannot flip it; the figures shown stay the medians over rounds,
    and `rounds` lists each round's ratio.
    """
    per_round = []
    for medians in rounds:
        single = Report(medians)
        evaluate(single, footprint, alloc, e2e)
        per_round.append(single.targets)
    for index, target in enumerate(report.targets):
        if not target.from_criterion:
            continue
        judged = [targets[index] for targets in per_round]
        count = sum(1 for t in judged if t.met is True)
        shown = ", ".join(fmt_ratio(t.ratio) for t in judged)
        target.rounds = f"{count} of {len(judged)} ({shown})"
        if all(t.met is not None for t in judged):
            target.met = count * 2 > len(judged)
        # The ratio shown is the deciding round's, so that it always agrees
        # with the verdict: with the rounds ordered from best to worst (met
        # ones first, then by ratio, which a negative denominator would
        # otherwise misplace), the one that is met exactly when most rounds
        # are (the median round, for an odd count). A ratio of medians
        # could disagree.
        if judged and all(t.ratio is not None for t in judged):
            ordered = sorted(
                judged,
                key=lambda t: (t.met is not True, -t.ratio if target.at_least else t.ratio),
            )
            deciding = ordered[len(ordered) // 2].ratio
            target.ratio = deciding
            head, sep, _ = target.measured.rpartition(" = ")
            if sep:
                target.measured = f"{head} = {fmt_ratio(deciding)}"


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter criterion settings")
    parser.add_argument("--rounds", type=int, default=3, help="criterion rounds (default 3)")
    parser.add_argument("--skip-bench", action="store_true", help="reuse the last run's criterion rounds")
    parser.add_argument("--skip-e2e", action="store_true", help="skip the end-to-end load run")
    parser.add_argument("--e2e-seconds", type=int, default=2)
    parser.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"))
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    started = time.monotonic()
    info = machine()
    info["load_start"] = load_average()
    # Build everything first, so that the measurements do not share the
    # machine with the compiler.
    run(["cargo", "bench", "-p", PACKAGE, "--bench", "layers", "--bench", "stacks",
         "--bench", "footprint", "--no-run"])
    rounds = last_rounds() if args.skip_bench else run_criterion(args.quick, args.rounds)
    medians = combine(rounds)
    footprint = run_footprint()
    alloc = run_alloc_test()
    e2e = None if args.skip_e2e else run_e2e(args.e2e_seconds)
    info["load_end"] = load_average()
    minutes, seconds = divmod(int(time.monotonic() - started), 60)
    info["elapsed"] = f"{minutes} min {seconds} s"

    report = Report(medians)
    evaluate(report, footprint, alloc, e2e)
    judge_by_rounds(report, rounds, footprint, alloc, e2e)
    settings = " ".join(criterion_args(args.quick)) + (
        f" (results reused, {len(rounds)} rounds)" if args.skip_bench else f", {args.rounds} rounds"
    )
    write_markdown(Path(args.output), info, report, footprint, alloc, e2e, settings)
    missed = sum(1 for t in report.targets if t.met is False)
    log(f"wrote {args.output}: {len(report.targets)} targets, {missed} missed")
    for t in report.targets:
        log(f"  {verdict(t.met).strip('*'):>12}  {t.name}: {t.measured}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
