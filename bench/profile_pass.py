"""Profile one pass at scale: `python bench/profile_pass.py --size 100000 [--latency-ms 150]`.

The Sheets emulator and the fake Meta run in their own subprocesses (as in sync_scale.py); the
bridge runs here, its pass thread under cProfile (the sending threads only post). It prints the
wall time of each pass (first, then no change; `--first-only`: the first alone), the CPU it
took here and in each stand-in, and the functions with the most cumulative time,
and with `--out DIR` keeps the .prof files (read them with `python -m pstats`)."""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
import sync_scale


class Phases:
    """A pass's progress callback: when each phase was first and last reported."""

    def __init__(self, phases: dict[str, list[float]], started: float) -> None:
        self.phases, self.started = phases, started

    def __call__(self, phase: str, done: int, total: int) -> None:
        at = time.perf_counter() - self.started
        self.phases.setdefault(phase, [at, at])[1] = at


def stand_in_cpu(server: sync_scale.Server) -> float:
    """CPU a stand-in's process has used so far (0 where Linux's /proc cannot say)."""
    return sync_scale.tree_cpu_seconds(server.proc.pid) or 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--latency-ms", type=float, default=150.0)
    parser.add_argument("--top", type=int, default=45)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--no-profile", action="store_true", help="time the passes only")
    parser.add_argument(
        "--first-only", action="store_true", help="the first pass alone (say, under py-spy)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sheet-bridge-profile-") as tmp:
        workdir = Path(tmp)
        data_path = workdir / "sheets.json"
        rows = sync_scale.lead_rows(args.size, datetime.now(UTC))
        data_path.write_text(json.dumps(sync_scale.sheet_data(rows)))
        del rows
        sheets, meta = sync_scale.Server("sheets", data_path), sync_scale.Server("meta")
        try:
            os.environ["BENCH_SHEETS_URL"], os.environ["BENCH_META_URL"] = sheets.url, meta.url
            if args.latency_ms:
                speed = {"latency_ms": args.latency_ms}
                httpx.post(meta.url + "/_fake/speed", json=speed, timeout=10).raise_for_status()
            bridge = sync_scale.child_bridge(workdir, with_capi=True)
            for name in ("first",) if args.first_only else ("first", "no-change"):
                profiler = None if args.no_profile else cProfile.Profile()
                started = time.perf_counter()
                cpu = resource.getrusage(resource.RUSAGE_SELF)
                cpu_before = cpu.ru_utime + cpu.ru_stime
                stand_ins = {"Sheets emulator": sheets, "fake Meta": meta}
                stand_ins_before = {k: stand_in_cpu(s) for k, s in stand_ins.items()}
                if profiler is not None:
                    profiler.enable()
                phases: dict[str, list[float]] = {}
                result = bridge.sync(trigger="bench", progress=Phases(phases, started))
                if profiler is not None:
                    profiler.disable()
                seconds = time.perf_counter() - started
                cpu = resource.getrusage(resource.RUSAGE_SELF)
                used = cpu.ru_utime + cpu.ru_stime - cpu_before
                print(
                    f"## {name} pass: {seconds:.2f} s, CPU {used:.2f} s (this process), "
                    f"{result.events_sent} events sent, load {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
                print(
                    "   CPU of the stand-ins (they share the machine's cores): "
                    + ", ".join(
                        f"{k} {stand_in_cpu(s) - stand_ins_before[k]:.1f} s"
                        for k, s in stand_ins.items()
                    )
                )
                print(
                    "   phases (first and last progress report, s from the start): "
                    + ", ".join(f"{k} {a:.2f}–{b:.2f}" for k, (a, b) in phases.items())
                )
                if profiler is None:
                    continue
                if args.out:
                    args.out.mkdir(parents=True, exist_ok=True)
                    profiler.dump_stats(args.out / f"{name}.prof")
                text = io.StringIO()
                stats = pstats.Stats(profiler, stream=text).sort_stats("cumulative")
                stats.print_stats(args.top)
                print(text.getvalue())
                del result
        finally:
            sheets.stop()
            meta.stop()


if __name__ == "__main__":
    main()
