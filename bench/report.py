"""Markdown tables from the results of :mod:`bench.run`, and the targets of the issue.

:func:`render` takes the results dictionary (also saved as JSON next to the
Markdown) and returns the whole report: the machine and command, a targets table
saying plainly which are met, then one table per scenario with each target's
figures and its ratio to the direct call (and to LiteLLM when it was run).
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Final

__all__ = ["markdown_table", "render", "targets"]

_DIRECT: Final = "direct"
_BARE: Final = "bare"
_OURS: Final = ("sqlite", "memory")


def _f(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _by_key(rows: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    return {row["key"]: row for row in rows}


def _ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "-"
    return f"{a / b:.2f}x"


def _met(ok: bool | None) -> str:
    return "not run" if ok is None else ("**met**" if ok else "**missed**")


def targets(results: Mapping[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """(target, measured, same figure for the bare stack, met) for each target measured.

    The bare-stack figure shows how much of a gap the web stack and the machine
    account for before any of our code runs.
    """
    checks: list[tuple[str, str, str, bool | None]] = []
    sequential = _by_key(results.get("sequential", []))
    if "sqlite" in sequential and _DIRECT in sequential:
        direct_p50 = sequential[_DIRECT]["p50_ms"]
        added = sequential["sqlite"]["p50_ms"] - direct_p50
        floor = f"{sequential[_BARE]['p50_ms'] - direct_p50:.2f} ms" if _BARE in sequential else "-"
        checks.append(("Added latency per sequential turn, p50 ≤ 1.5 ms (SQLite)", f"{added:.2f} ms", floor,
                       added <= 1.5))
    concurrent = _by_key(results.get("concurrent", {}).get("64", []))
    if "litellm" in concurrent:
        litellm_rate = max(concurrent["litellm"]["rate"], 1e-9)
        floor = f"{concurrent[_BARE]['rate'] / litellm_rate:.1f}x" if _BARE in concurrent else "-"
        for store in _OURS:
            if store in concurrent:
                ratio = concurrent[store]["rate"] / litellm_rate
                checks.append((f"Throughput at 64 sessions ≥ 10x LiteLLM ({store})", f"{ratio:.1f}x", floor,
                               ratio >= 10))
    else:
        checks.append(("Throughput at 64 sessions ≥ 10x LiteLLM", "run with --compare-litellm", "-", None))
    for store in _OURS:
        if store in concurrent:
            row = concurrent[store]
            spread = row["p99_ms"] / max(row["p50_ms"], 1e-9)
            floor = "-"
            if _BARE in concurrent:
                bare = concurrent[_BARE]
                floor = f"{bare['errors']} errors, p99 = {bare['p99_ms'] / max(bare['p50_ms'], 1e-9):.1f}x p50"
            checks.append((
                f"64 sessions: 0 errors, p99 ≤ 5x p50 ({store})",
                f"{row['errors']} errors, p99 = {spread:.1f}x p50",
                floor,
                row["errors"] == 0 and spread <= 5,
            ))
    streaming = _by_key(results.get("streaming", []))
    if _DIRECT in streaming:
        direct = streaming[_DIRECT]

        def added_ttft(row: Mapping[str, Any]) -> float:
            return float((row["ttft_p50_ms"] or 0) - (direct["ttft_p50_ms"] or 0))

        def slower(row: Mapping[str, Any]) -> float:
            return float(row["p50_ms"] / max(direct["p50_ms"], 1e-9) - 1)

        bare_stream = streaming.get(_BARE)
        for store in _OURS:
            if store in streaming:
                row = streaming[store]
                checks.append((
                    f"Streaming: added TTFT p50 ≤ 2 ms ({store})",
                    f"{added_ttft(row):.2f} ms",
                    f"{added_ttft(bare_stream):.2f} ms" if bare_stream else "-",
                    added_ttft(row) <= 2,
                ))
                checks.append((
                    f"Streaming: total stream time within 5 % of upstream's at 64 streams ({store})",
                    f"{slower(row) * 100:+.1f} % (p50)",
                    f"{slower(bare_stream) * 100:+.1f} %" if bare_stream else "-",
                    slower(row) <= 0.05,
                ))
    memory = results.get("memory", {})
    cold = results.get("cold_start", {})
    idle = memory.get("sqlite", {}).get("idle_rss_mib")
    if idle is None and cold.get("sqlite"):
        idle = statistics.median(run["rss_mib"] for run in cold["sqlite"])
    if idle is not None:
        checks.append(("Idle process ≤ 80 MiB RSS (SQLite)", f"{idle:.1f} MiB", "-", idle <= 80))
    if "sqlite" in memory:
        per = memory["sqlite"]["per_conversation_kib"]
        checks.append(("≤ 8 KiB per idle conversation actor (SQLite: no message text in RAM)",
                       f"{per:.1f} KiB", "-", per <= 8))
    if cold.get("sqlite"):
        median = statistics.median(run["first_chat_s"] for run in cold["sqlite"])
        checks.append(("Cold start ≤ 1.5 s (SQLite, fresh data directory)", f"{median:.2f} s", "-",
                       median <= 1.5))
    return checks


def _busy_note(results: Mapping[str, Any]) -> str:
    """A warning when other processes took a large share of the machine during the run."""
    others = [
        row["other_cpu_pct"]
        for key in ("sequential", "streaming", "streaming_burst")
        for row in results.get(key, [])
    ] + [row["other_cpu_pct"] for rows in results.get("concurrent", {}).values() for row in rows]
    if not others:
        return ""
    median = statistics.median(others)
    if median < 25:
        return ""
    return (
        f"**Warning: the machine was busy with other work during this run** (median "
        f"{median:.0f} % of a core used by processes outside the benchmark, out of 200 %). "
        "Absolute figures are pessimistic; ratios between targets measured in the same step "
        "(each step runs them back to back) are the fairer reading."
    )


def _relay_table(rows: Sequence[Mapping[str, Any]], *, streaming: bool = False) -> str:
    keyed = _by_key(rows)
    direct = keyed.get(_DIRECT)
    litellm = keyed.get("litellm")
    header = ["target", "turns/s", "vs direct", "p50 ms", "p99 ms", "added p50 ms"]
    if streaming:
        header += ["TTFT p50 ms", "TTFT p99 ms", "added TTFT p50 ms"]
    header += ["errors", "server CPU ms/turn", "server CPU %", "peak RSS MiB", "loadgen CPU %",
               "fake CPU %", "other procs CPU %"]
    if litellm is not None:
        header.insert(3, "vs LiteLLM")
    out = []
    for row in rows:
        line = [row["label"], _f(row["rate"]), _ratio(row["rate"], direct["rate"] if direct else None)]
        if litellm is not None:
            line.append(_ratio(row["rate"], litellm["rate"]) if row["key"] in _OURS else "-")
        line += [_f(row["p50_ms"], 2), _f(row["p99_ms"], 2),
                 _f(row["p50_ms"] - direct["p50_ms"], 2) if direct and row is not direct else "-"]
        if streaming:
            added = (
                row["ttft_p50_ms"] - direct["ttft_p50_ms"]
                if direct and row is not direct and row["ttft_p50_ms"] is not None
                and direct["ttft_p50_ms"] is not None
                else None
            )
            line += [_f(row["ttft_p50_ms"], 2), _f(row["ttft_p99_ms"], 2), _f(added, 2)]
        errors = str(row["errors"])
        if row.get("leaks"):
            errors += f" ({row['leaks']} leaks)"
        line += [errors, _f(row["cpu_ms_per_turn"], 2), _f(row["cpu_pct"], 0), _f(row["peak_rss_mib"]),
                 _f(row["loadgen_cpu_pct"], 0), _f(row["fake_cpu_pct"], 0), _f(row["other_cpu_pct"], 0)]
        out.append(line)
    return markdown_table(header, out)


def _memory_table(memory: Mapping[str, Mapping[str, Any]]) -> str:
    header = ["store", "conversations", "idle RSS MiB", "RSS with all live MiB", "per conversation KiB",
              "live actors", "created in s", "errors", "eviction: peak MiB", "after eviction MiB",
              "baseline MiB", "all evicted"]
    rows = []
    for store, row in memory.items():
        rows.append([
            store, f"{row['conversations']:,}", _f(row["idle_rss_mib"]), _f(row["rss_after_mib"]),
            _f(row["per_conversation_kib"], 2), str(row.get("live_actors")), _f(row["create_seconds"]),
            str(row["create_errors"] + row.get("short_create_errors", 0)), _f(row.get("short_peak_rss_mib")),
            _f(row.get("rss_after_eviction_mib")), _f(row.get("short_baseline_rss_mib")),
            "yes" if row.get("evicted_all") else "no",
        ])
    return markdown_table(header, rows)


def _cold_table(cold: Mapping[str, Sequence[Mapping[str, float]]], litellm: float | None) -> str:
    rows = []
    for store, runs in cold.items():
        rows.append([
            f"ours ({store})",
            _f(statistics.median(run["first_chat_s"] for run in runs), 2),
            ", ".join(f"{run['first_chat_s']:.2f}" for run in runs),
            _f(statistics.median(run["first_answer_s"] for run in runs), 2),
            _f(statistics.median(run["rss_mib"] for run in runs)),
        ])
    if litellm is not None:
        rows.append(["LiteLLM proxy", _f(litellm, 2), _f(litellm, 2), "-", "-"])
    return markdown_table(["server", "first /api/chat s (median)", "runs s", "first HTTP answer s", "RSS after it MiB"], rows)


def render(results: Mapping[str, Any]) -> str:
    """The whole report as Markdown."""
    meta = results["meta"]
    machine = meta["machine"]
    parts = [
        "# chatbot benchmark results",
        "",
        f"{meta['date']} · `{meta['command']}` · {machine['cores']} cores ({machine['cpu']}), "
        f"{machine['memory_mib']:,} MiB RAM, Python {machine['python']}, Linux {machine['kernel']}"
        + (f", allocator: {machine['allocator']}" if machine.get("allocator") else "")
        + (f" · LiteLLM {meta['litellm']}" if meta.get("litellm") else "")
        + f" · took {meta.get('duration_s', 0):.0f} s",
        "",
        "Fake upstream, server and load generator are separate processes on the same 2 cores. "
        "*direct* is the same load sent straight to the fake upstream (the limit); "
        "*bare stack* is a throwaway Quart + Hypercorn + httpx-aiohttp forwarder with no "
        "sessions, history, store, actors or telemetry (the floor our web stack allows). "
        "*other procs CPU %* is CPU used on the machine by processes outside the benchmark "
        "during the step (100 % = one core): high values mean the figures are noisy.",
        "",
        "## Targets",
        "",
        markdown_table(
            ["target", "measured", "bare stack, same figure", "status"],
            [[name, value, floor, _met(ok)] for name, value, floor, ok in targets(results)],
        ),
    ]
    note = _busy_note(results)
    if note:
        parts[parts.index("## Targets"):parts.index("## Targets")] = [note, ""]
    if "sequential" in results:
        parts += ["", "## 1. One session, sequential non-streaming turns", "",
                  "Added latency = our p50 - direct p50. Reply: 10 chunks, no upstream delay.", "",
                  _relay_table(results["sequential"])]
    for sessions, rows in results.get("concurrent", {}).items():
        parts += ["", f"## 2. {sessions} concurrent sessions, 5 non-streaming turns each, then a fresh session",
                  "", _relay_table(rows)]
    if "streaming" in results:
        plan = meta["plan"]
        parts += ["", f"## 3. {plan['stream_sessions']} concurrent streaming sessions, "
                  f"{plan['stream_chunks']} chunks, first token after {plan['stream_first_token'] * 1000:.0f} ms, "
                  f"then {plan['stream_token_delay'] * 1000:.0f} ms per token", "",
                  "Latency columns are the total stream time; TTFT is the time to the first text delta. "
                  "Steady state: the sessions' first turns are spread evenly over one stream's length, "
                  "as real users' are (the targets are read here).", "",
                  _relay_table(results["streaming"], streaming=True)]
    if "streaming_burst" in results:
        parts += ["", "### 3b. The same streams, every session sending its first turn at the same moment", "",
                  "Each turn's admission (session, conversation, actor, store, upstream request) queues "
                  "behind the others' on the one event loop, so TTFT here grows with the per-turn CPU cost.",
                  "", _relay_table(results["streaming_burst"], streaming=True)]
    if "memory" in results:
        parts += ["", "## 4. Idle conversations held by live actors", "",
                  "One turn in each of N sessions with a long idle-eviction time; per conversation = "
                  "(RSS after - idle RSS) / N. Then a second server with a short eviction time "
                  f"({meta['plan']['evict_seconds']:g} s): peak while creating, RSS once every actor "
                  "was evicted. The in-memory store keeps each conversation's messages in RAM, "
                  "so its figure includes message text; SQLite's does not.", "",
                  _memory_table(results["memory"])]
    if "cold_start" in results:
        parts += ["", "## 5. Cold start: process start to the first successful /api/chat", "",
                  _cold_table(results["cold_start"], results.get("litellm_cold_start_s"))]
    if "litellm_idle_rss_mib" in results:
        parts += ["", f"LiteLLM proxy RSS after its first request: {results['litellm_idle_rss_mib']:.0f} MiB."]
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    import json
    from pathlib import Path

    print(render(json.loads(Path(sys.argv[1]).read_text())))
