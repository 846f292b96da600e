#!/usr/bin/env python3
"""Writes BENCHMARKS.md from one bench/run.sh run (standard library only).

Owns the arithmetic of the report (percentiles come from oha and bench_stream_client; this only subtracts,
divides and compares with the targets of issues 9 and 18) and its layout. Reads the raw directory of one run; does not
measure anything itself. bench/analysis.md, when present, is appended verbatim (hand-written findings).

  report.py RAW_DIR BENCHMARKS.md SUMMARY.json
"""

import glob
import json
import os
import sys

RAW, OUT, SUMMARY = sys.argv[1], sys.argv[2], sys.argv[3]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATHS = ["direct", "ngproxy", "router", "features", "litellm"]
STREAM_PATHS = ["direct", "ngproxy", "router", "features", "litellm"]
LABEL = {
    "direct": "direct (nginx)",
    "ngproxy": "reference: nginx proxy -> nginx",
    "router": "router -> nginx",
    "features": "router + metrics, affinity, key limits -> nginx",
    "litellm": "LiteLLM -> nginx",
}
for _k in list(LABEL):
    LABEL[f"{_k}-sse"] = LABEL[_k]
# The streams go to the paced mock, not to nginx.
STREAM_LABEL = {k: v.replace("direct (nginx)", "direct (paced mock)").replace("-> nginx", "-> paced mock")
                for k, v in LABEL.items()}


def load(name):
    p = os.path.join(RAW, name)
    try:
        with open(p) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


machine = {}
with open(os.path.join(RAW, "machine.env")) as f:
    for line in f:
        k, _, v = line.rstrip("\n").partition("=")
        machine[k] = v
trial = machine.get("trial") == "1"


def oha(name):
    """Summary of one oha run: rps, latencies in ms, counts."""
    j = load(f"{name}.json")
    if not j:
        return None
    s, lp = j.get("summary", {}), j.get("latencyPercentiles", {})
    codes = j.get("statusCodeDistribution", {}) or {}
    errs = j.get("errorDistribution", {}) or {}
    ok = int(codes.get("200", 0))
    non200 = sum(int(v) for k, v in codes.items() if k != "200")
    nerr = sum(int(v) for v in errs.values())
    sent = ok + non200 + nerr
    dur = s.get("total") or 0
    cpu = load(f"{name}.cpu.json")
    cpu_used = {}
    if cpu:
        for k in cpu["after"]:
            cpu_used[k] = cpu["after"][k] - cpu["before"][k]

    def ms(v):
        return None if v is None else v * 1e3

    return {
        "sent": sent,
        "ok": ok,
        "non200": non200,
        "errors": nerr,
        "error_kinds": errs,
        "duration_s": dur,
        "rps": (ok / dur) if dur else None,
        "p50": ms(lp.get("p50")),
        "p90": ms(lp.get("p90")),
        "p99": ms(lp.get("p99")),
        "max": ms(s.get("slowest")),
        "mean": ms(s.get("average")),
        "cpu_s": cpu_used,
    }


def f(v, digits=2, unit=""):
    if v is None:
        return "n/a"
    return f"{v:,.{digits}f}{unit}"


def ratio(a, b):
    if a is None or b in (None, 0):
        return None
    return a / b


def verdict(ok, reference=False):
    if reference:
        return "reference"
    if ok is None:
        return "not measured"
    return "met" if ok else "**missed**"


md = []
summary = {"machine": machine, "runs": {}, "targets": []}
w = md.append

w("# Benchmarks")
w("")
if trial:
    w(
        "> **Trial run on a busy machine.** These numbers come from a short trial "
        f"({machine.get('duration')} s per load run) on a 2-core machine where other engineers were compiling "
        f"at the same time (load average {machine.get('load_start')} at the start, {machine.get('load_end')} at the "
        "end). They show that the benchmark works and roughly where the router stands; the absolute numbers and "
        "some ratios are distorted by the other load. The final numbers come from re-running `bench/run.sh` on a "
        "quiet machine."
    )
    w("")
w(
    "Produced by `bench/run.sh` (one command: installs nginx, oha and LiteLLM, builds the router in release mode, "
    "starts every server on 127.0.0.1, measures, stops everything, writes this file). Re-run it with "
    "`bench/run.sh`; `BENCH_DURATION=N` sets the seconds per load run (default 10). Raw results of the run stay "
    "in `bench/tmp/` (not committed); `bench/results/summary.json` holds the numbers below."
)
w("")
w("## Machine")
w("")
w("| | |")
w("|---|---|")
for k, label in [
    ("cpu", "CPU"),
    ("nproc", "cores (nproc)"),
    ("mem", "memory"),
    ("kernel", "kernel"),
    ("load_start", "load average at start"),
    ("load_end", "load average at end"),
    ("nginx", "nginx"),
    ("oha", "oha (load generator)"),
    ("litellm", "LiteLLM (PyPI, `litellm[proxy]`)"),
    ("rustc", "rustc"),
    ("commit", "router commit"),
    ("duration", "seconds per load run"),
    ("rounds", "paired saturation rounds (half as long each)"),
    ("wall_s", "whole run, seconds"),
]:
    w(f"| {label} | {machine.get(k, 'n/a')} |")
w("")
w(
    "All processes share the same cores: the load generator, nginx (1 worker), the reference nginx proxy "
    f"({machine.get('ngproxy_workers', '?')} workers: as many as the router has threads), the router (tokio, "
    f"{machine.get('router_threads', '?')} worker threads; run twice: `bench/router.yaml`, the bare proxy, and "
    "`bench/router-features.yaml`, the same with metrics, affinity and a gateway key with every limit) and "
    "LiteLLM (gunicorn, 2 uvicorn workers). On 2 cores the load generator itself takes a large share, so "
    "throughput ratios are ratios of what is left; the CPU seconds each server used per request (below) are the "
    "machine-independent view."
)
w("")

# --- sequential ------------------------------------------------------------------------------------------------
runs = {}
for p in PATHS:
    for kind in ["seq", "rate500", "rate1000", "rate2000", "sat"]:
        runs[f"{p}-{kind}"] = oha(f"{p}-{kind}")
for p in PATHS:
    runs[f"{p}-sse-sat"] = oha(f"{p}-sse-sat")
summary["runs"] = runs

w("## Sequential requests (one connection, one request at a time)")
w("")
w("| path | requests | p50 ms | p99 ms | added p50 ms | added p99 ms |")
w("|---|---:|---:|---:|---:|---:|")
d = runs.get("direct-seq")
for p in PATHS:
    r = runs.get(f"{p}-seq")
    if not r:
        w(f"| {LABEL[p]} | not measured | | | | |")
        continue
    add50 = None if p == "direct" or not d else r["p50"] - d["p50"]
    add99 = None if p == "direct" or not d else r["p99"] - d["p99"]
    w(f"| {LABEL[p]} | {r['ok']:,} | {f(r['p50'], 3)} | {f(r['p99'], 3)} | {f(add50, 3)} | {f(add99, 3)} |")
w("")

# --- fixed rates -----------------------------------------------------------------------------------------------
w("## Fixed request rates (50 connections, oha `-q`, latency corrected for coordinated omission)")
w("")
w("| rate | path | achieved rps | p50 ms | p90 ms | p99 ms | added p50 ms | added p99 ms | errors / non-200 |")
w("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
for rate in [500, 1000, 2000]:
    d = runs.get(f"direct-rate{rate}")
    for p in PATHS:
        r = runs.get(f"{p}-rate{rate}")
        if not r:
            w(f"| {rate:,} | {LABEL[p]} | not measured | | | | | | |")
            continue
        add50 = None if p == "direct" or not d else r["p50"] - d["p50"]
        add99 = None if p == "direct" or not d else r["p99"] - d["p99"]
        w(
            f"| {rate:,} | {LABEL[p]} | {f(r['rps'], 0)} | {f(r['p50'], 3)} | {f(r['p90'], 3)} | {f(r['p99'], 3)} "
            f"| {f(add50, 3)} | {f(add99, 3)} | {r['errors']} / {r['non200']} |"
        )
w("")


# --- saturation ------------------------------------------------------------------------------------------------
def cpu_per_req(r, who):
    if not r or not r["ok"]:
        return None
    return r["cpu_s"].get(who, 0) / r["ok"] * 1e6


def sat_table(suffix, title):
    w(title)
    w("")
    w(
        "| path | rps | vs direct | p50 ms | p99 ms | errors / non-200 | CPU us/request: nginx | the proxy "
        "measured |"
    )
    w("|---|---:|---:|---:|---:|---:|---:|---:|")
    d = runs.get(f"direct{suffix}-sat")
    for p in PATHS:
        r = runs.get(f"{p}{suffix}-sat")
        if not r:
            w(f"| {LABEL[p]} | not measured | | | | | | |")
            continue
        rel = ratio(r["rps"], d["rps"] if d else None)
        proxy_cpu = None if p == "direct" else cpu_per_req(r, p)
        w(
            f"| {LABEL[p]} | {f(r['rps'], 0)} | {f(rel, 2, 'x')} | {f(r['p50'], 3)} | {f(r['p99'], 3)} "
            f"| {r['errors']} / {r['non200']} | {f(cpu_per_req(r, 'nginx'), 1)} | {f(proxy_cpu, 1)} |"
        )
    w("")


sat_table("", "## Saturation throughput (64 connections, as fast as possible)")
sat_table(
    "-sse",
    "## Saturation with a short SSE response (nginx's fixed 5-event stream, `stream: true`, 64 connections)",
)

# --- paired rounds ---------------------------------------------------------------------------------------------
ROUND_PATHS = ["ngproxy", "router", "features"]
rounds = []
while True:
    rnd = {p: oha(f"{p}-round{len(rounds) + 1}-sat") for p in ROUND_PATHS}
    if not any(rnd.values()):
        break
    rounds.append(rnd)


def round_ratios(num, num_who, den, den_who):
    """Per round: (throughput ratio num/den, CPU-per-request ratio num/den); None where a run is missing."""
    out = []
    for rnd in rounds:
        a, b = rnd.get(num), rnd.get(den)
        out.append((
            ratio(a and a["rps"], b and b["rps"]),
            ratio(cpu_per_req(a, num_who), cpu_per_req(b, den_who)),
        ))
    return out


def median(xs):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


vs_nginx = round_ratios("router", "router", "ngproxy", "ngproxy")
features_vs_bare = round_ratios("features", "features", "router", "router")
summary["rounds"] = rounds
if rounds:
    w("## Paired saturation rounds (64 connections; nginx-as-proxy, the router, the router with features)")
    w("")
    w(
        "On a shared host the speed drifts between runs a minute apart by more than the ratios measured here, so "
        "each round runs the three back to back (the order rotated from round to round), and the targets of issue "
        "18 that compare them take the median of the rounds' ratios."
    )
    w("")
    w(
        "| round | nginx-as-proxy rps | router rps | features rps | CPU us/request: nginx-as-proxy | router | "
        "features | router / nginx: rps, CPU | features / router: rps, CPU |"
    )
    w("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for i, rnd in enumerate(rounds):
        n, r, fe = (rnd.get(p) for p in ROUND_PATHS)
        (xr, xc), (fr, fc) = vs_nginx[i], features_vs_bare[i]
        w(
            f"| {i + 1} | {f(n and n['rps'], 0)} | {f(r and r['rps'], 0)} | {f(fe and fe['rps'], 0)} "
            f"| {f(cpu_per_req(n, 'ngproxy'), 1)} | {f(cpu_per_req(r, 'router'), 1)} "
            f"| {f(cpu_per_req(fe, 'features'), 1)} | {f(xr, 2, 'x')}, {f(xc, 2, 'x')} | {f(fr, 3, 'x')}, {f(fc, 3, 'x')} |"
        )
    w(
        f"| median | | | | | | | {f(median(x for x, _ in vs_nginx), 2, 'x')}, "
        f"{f(median(c for _, c in vs_nginx), 2, 'x')} | {f(median(x for x, _ in features_vs_bare), 3, 'x')}, "
        f"{f(median(c for _, c in features_vs_bare), 3, 'x')} |"
    )
    w("")

# --- streaming -------------------------------------------------------------------------------------------------
streams = {
    "direct": load("stream-direct.json"),
    "ngproxy": load("ngproxy-stream.json"),
    "router": load("router-stream.json"),
    "features": load("features-stream.json"),
    "litellm": load("litellm-stream.json"),
}
summary["streams"] = streams
w("## Streaming through the paced mock (50 chunks, 20 ms apart; one stream at a time)")
w("")
w(
    "`examples/bench_upstream.rs` writes one SSE event per write, 20 ms apart; `examples/bench_stream_client.rs` "
    "times every body read and counts the SSE events each read completes (more than one = chunks merged)."
)
w("")
w(
    "| path | streams ok | TTFB p50 ms | TTFB p99 ms | added TTFB p50 ms | gap p50 ms | gap p99 ms | gap max ms "
    "| reads | events | merged reads |"
)
w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
ds = streams["direct"]
for p in STREAM_PATHS:
    s = streams[p]
    if not s or not s.get("ttfb_ms"):
        w(f"| {STREAM_LABEL[p]} | not measured | | | | | | | | | |")
        continue
    add = None if p == "direct" or not ds or not ds.get("ttfb_ms") else s["ttfb_ms"]["p50"] - ds["ttfb_ms"]["p50"]
    g = s.get("gap_ms") or {}
    w(
        f"| {STREAM_LABEL[p]} | {s['ok']}/{s['requests']} | {f(s['ttfb_ms']['p50'], 3)} | {f(s['ttfb_ms']['p99'], 3)} "
        f"| {f(add, 3)} | {f(g.get('p50'), 2)} | {f(g.get('p99'), 2)} | {f(g.get('max'), 2)} | {s['reads']:,} "
        f"| {s['events']:,} | {s['merged_reads']} |"
    )
w("")

# --- memory ----------------------------------------------------------------------------------------------------
big = load("rss-big.json")
rr = load("rss-router.json")
s1000 = load("router-streams1000.json")
summary["memory"] = {"big": big, "router": rr, "streams1000": s1000}
w("## Memory (VmRSS of the router process)")
w("")
w("| situation | RSS |")
w("|---|---:|")
if big:
    w(
        f"| idle, {big['channels']:,} channels / {big['models']:,} models (start-up {f(big['startup_s'], 2)} s) "
        f"| {f(big['rss_idle_kb'] / 1024, 1)} MB |"
    )
if rr:
    w(f"| idle, bench config (3 channels), before any load | {f(rr['idle_start_kb'] / 1024, 1)} MB |")
    w(f"| after the load runs, before the streams | {f(rr['before_streams_kb'] / 1024, 1)} MB |")
if s1000:
    w(
        f"| 1,000 concurrent slow streams (150 chunks x 20 ms), all open | "
        f"{f((s1000.get('rss_all_open_kb') or 0) / 1024, 1)} MB |"
    )
    w(f"| peak while the 1,000 streams ran | {f((s1000.get('rss_peak_kb') or 0) / 1024, 1)} MB |")
    w(
        f"| the 1,000 streams: {s1000['ok']}/{s1000['requests']} complete, {s1000['merged_reads']} merged reads, "
        f"TTFB p99 {f((s1000.get('ttfb_ms') or {}).get('p99'), 1)} ms, gap p99 "
        f"{f((s1000.get('gap_ms') or {}).get('p99'), 1)} ms | |"
    )
if rr:
    w(f"| after the streams | {f(rr['after_streams_kb'] / 1024, 1)} MB |")
w("")

# --- usage records ---------------------------------------------------------------------------------------------
def sent_to(prefix):
    """Requests sent to one router during the run: every load run, warm-up, stream and smoke request."""
    n = 0
    for p in glob.glob(os.path.join(RAW, f"{prefix}-*.json")):
        name = os.path.basename(p)
        if name.endswith(".cpu.json") or name.startswith(f"{prefix}-usage"):
            continue
        if name.startswith(f"{prefix}-stream"):
            j = load(name)
            n += j["requests"] if j else 0
        else:
            r = oha(name[: -len(".json")])
            n += r["sent"] if r else 0
    smoke_file = os.path.join(RAW, f"{prefix}-smoke.jsonl")
    if os.path.exists(smoke_file):
        with open(smoke_file) as fh:
            n += sum(1 for _ in fh)
    return n


log_lines = None
try:
    with open(os.path.join(RAW, "usage-log-lines.txt")) as fh:
        log_lines = int(fh.read().strip() or 0)
except (OSError, ValueError):
    pass
w("## Usage records written during the run")
w("")
records_ok = None
summary["usage"] = {}
for prefix, usage_prefix, label in [
    ("router", "usage", "the router (`bench/router.yaml`)"),
    ("features", "features-usage", "the router with metrics, affinity and key limits"),
]:
    sent = sent_to(prefix)
    status = load(f"{usage_prefix}-status.json") or {}
    usage = load(f"{usage_prefix}.json")
    recorded = None
    if usage and isinstance(usage, dict):
        recorded = (usage.get("totals") or {}).get("requests")
    summary["usage"][prefix] = {"sent": sent, "recorded": recorded, "status": status}
    if not status.get("available"):
        w(f"- {label}: {sent:,} requests sent; store **not measured** (`router usage` not available in this build).")
        continue
    if recorded is None:
        w(f"- {label}: {sent:,} requests sent; `router usage --json` failed: {status.get('error', '')!r}")
        records_ok = False
        continue
    ok = recorded == sent
    records_ok = ok if records_ok is None else (records_ok and ok)
    w(f"- {label}: {sent:,} requests sent (every load run, warm-up, stream and smoke request); `router usage --json "
      f"--store <its store>` counts {recorded:,} ({verdict(ok)}).")
if log_lines:
    w(f"- Log: the router also wrote {log_lines:,} usage records as JSON lines to its log.")
w("")
router_usage = summary["usage"].get("router", {})
sent, recorded, status = router_usage.get("sent", 0), router_usage.get("recorded"), router_usage.get("status", {})

# --- internals -------------------------------------------------------------------------------------------------
w("## Internals")
w("")
internals = sorted(glob.glob(os.path.join(ROOT, "bench", "results", "*.txt")))
if not internals:
    w(
        "Not yet available: `examples/bench_writer.rs` (usage writer records/s) and `examples/bench_routing.rs` "
        "(tag query time over 50,000 models, snapshot rebuild) are not in the tree yet; `bench/run.sh` runs them "
        "and includes their `bench/results/*.txt` once they are."
    )
else:
    for p in internals:
        w(f"### {os.path.relpath(p, ROOT)}")
        w("")
        w("```")
        with open(p) as fh:
            w(fh.read().rstrip())
        w("```")
        w("")
    for ex in ["bench_writer", "bench_routing"]:
        if not os.path.exists(os.path.join(ROOT, "examples", f"{ex}.rs")):
            w(f"`examples/{ex}.rs`: not yet available.")
            w("")
w("")

# --- targets ---------------------------------------------------------------------------------------------------
targets = []


def target(name, goal, value, ok):
    targets.append((name, goal, value, ok))
    summary["targets"].append({"target": name, "goal": goal, "measured": value, "met": ok})


r1k, d1k = runs.get("router-rate1000"), runs.get("direct-rate1000")
if r1k and d1k:
    a50, a99 = r1k["p50"] - d1k["p50"], r1k["p99"] - d1k["p99"]
    target("added latency p50 at 1,000 rps", "<= 0.1 ms", f"{a50:.3f} ms", a50 <= 0.1)
    target("added latency p99 at 1,000 rps", "<= 1 ms", f"{a99:.3f} ms", a99 <= 1.0)
    n1k = runs.get("ngproxy-rate1000")
    if n1k:
        target(
            "(reference) nginx as a proxy, added p50 / p99 at 1,000 rps",
            "(none)",
            f"{n1k['p50'] - d1k['p50']:.3f} / {n1k['p99'] - d1k['p99']:.3f} ms",
            None,
        )
rs, ds_, ls = runs.get("router-sat"), runs.get("direct-sat"), runs.get("litellm-sat")
x = ratio(rs and rs["rps"], ds_ and ds_["rps"])
target("saturation vs direct", ">= 0.7x", f(x, 2, "x"), None if x is None else x >= 0.7)
ns = runs.get("ngproxy-sat")
x = ratio(ns and ns["rps"], ds_ and ds_["rps"])
target("(reference) nginx as a proxy, saturation vs direct", "(none)", f(x, 2, "x"), None)
x = ratio(rs and rs["rps"], ls and ls["rps"])
target("saturation vs LiteLLM", ">= 15x", f(x, 1, "x"), None if x is None else x >= 15)
if streams["router"] and streams["direct"] and streams["router"].get("ttfb_ms") and streams["direct"].get("ttfb_ms"):
    a = streams["router"]["ttfb_ms"]["p50"] - streams["direct"]["ttfb_ms"]["p50"]
    target("streaming: added time to first byte (p50)", "<= 1 ms", f"{a:.3f} ms", a <= 1.0)
    m = streams["router"]["merged_reads"] + (s1000 or {}).get("merged_reads", 0)
    target("streaming: chunks never merged", "0 merged reads", f"{m} merged reads", m == 0)
if big:
    mb = big["rss_idle_kb"] / 1024
    target("RSS idle, 1,000 channels / 50,000 models", "<= 30 MB", f"{mb:.1f} MB", mb <= 30)
if s1000 and s1000.get("rss_all_open_kb"):
    mb = s1000["rss_peak_kb"] / 1024
    target("RSS with 1,000 concurrent streams (peak)", "<= 200 MB", f"{mb:.1f} MB", mb <= 200)
target(
    "usage records = requests sent",
    "equal",
    (
        "not measured: usage subcommand not available"
        + (f" (log lines: {log_lines:,} records for {sent:,} requests sent)" if log_lines is not None else "")
    )
    if not status.get("available")
    else f"{recorded} recorded / {sent} sent",
    records_ok if status.get("available") else None,
)
target("usage writer", ">= 20,000 records/s", "see Internals", None)
target("tag query over 50,000 models", "< 50 us", "see Internals", None)
target("metrics: CPU per request added (issue 15)", "< 2%", "bench/results/metrics.txt (bench/metrics.sh, examples/bench_metrics.rs)", None)

# --- targets of issue 18: the router against nginx as a proxy, and with its per-request features on ----------
t18 = []


def target18(name, goal, value, ok):
    t18.append((name, goal, value, ok))
    summary.setdefault("targets_issue18", []).append({"target": name, "goal": goal, "measured": value, "met": ok})


def tag_plan_us():
    """The median of the 345-candidate tag plan (`tag:glm,air,free`, free_first) from bench_routing's output."""
    for path in [os.path.join(RAW, "bench_routing.stdout"), os.path.join(ROOT, "bench", "results", "bench_routing.txt")]:
        try:
            with open(path) as fh:
                for line in fh:
                    parts = line.split()
                    if len(parts) >= 5 and parts[0] == "tag:glm,air,free" and parts[1] == "free_first":
                        return int(parts[2]), float(parts[3])
        except (OSError, ValueError):
            continue
    return None


ns = runs.get("ngproxy-sat")
rc, nc = cpu_per_req(rs, "router"), cpu_per_req(ns, "ngproxy")


def paired(pairs, pick, single, digits, detail=""):
    """A ratio target's (value, text): the median of the paired rounds when there are any, the single run's
    ratio (and `detail`) beside it; else the single run's."""
    m = median(pick(p) for p in pairs) if rounds else None
    if m is None:
        return single, f(single, digits, "x") + (f" ({detail})" if detail else "")
    one = f(single, digits, "x") + (f", {detail}" if detail else "")
    return m, f"{f(m, digits, 'x')} (median of {len(rounds)} rounds; single run {one})"


x, text = paired(vs_nginx, lambda p: p[0], ratio(rs and rs["rps"], ns and ns["rps"]), 2)
target18("saturation throughput vs nginx-as-proxy", ">= 0.9x", text, None if x is None else x >= 0.9)
x, text = paired(vs_nginx, lambda p: p[1], ratio(rc, nc), 2, f"{f(rc, 1)} vs {f(nc, 1)} us")
target18("CPU time per proxied request vs nginx-as-proxy", "<= 1.5x", text, None if x is None else x <= 1.5)
if r1k and d1k:
    a50, a99 = r1k["p50"] - d1k["p50"], r1k["p99"] - d1k["p99"]
    target18("added p50 / p99 latency at 1,000 rps", "<= 0.1 / <= 0.5 ms", f"{a50:.3f} / {a99:.3f} ms",
             a50 <= 0.1 and a99 <= 0.5)
else:
    target18("added p50 / p99 latency at 1,000 rps", "<= 0.1 / <= 0.5 ms", "n/a", None)
ttfb_added = None
if streams["router"] and streams["direct"] and streams["router"].get("ttfb_ms") and streams["direct"].get("ttfb_ms"):
    ttfb_added = streams["router"]["ttfb_ms"]["p50"] - streams["direct"]["ttfb_ms"]["p50"]
target18("added time to first byte, streaming (p50)", "<= 0.15 ms", f(ttfb_added, 3, " ms"),
         None if ttfb_added is None else ttfb_added <= 0.15)
ngs = streams.get("ngproxy")
if ngs and ngs.get("ttfb_ms") and streams["direct"] and streams["direct"].get("ttfb_ms"):
    target18("(reference) nginx-as-proxy: added time to first byte, streaming (p50)", "(none)",
             f(ngs["ttfb_ms"]["p50"] - streams["direct"]["ttfb_ms"]["p50"], 3, " ms"), None)
peak = (s1000 or {}).get("rss_peak_kb")
target18("RSS with 1,000 concurrent streams (peak)", "<= 64 MB", f(peak and peak / 1024, 1, " MB"),
         None if not peak else peak / 1024 <= 64)
tp = tag_plan_us()
target18("tag plan with 345 candidates (median)", "<= 30 us",
         f"{tp[1]:.1f} us ({tp[0]} candidates)" if tp else "n/a", None if not tp else tp[1] <= 30)
# The same figures with metrics, affinity and key limits on: within 5% of the bare proxy.
fs, f1k = runs.get("features-sat"), runs.get("features-rate1000")
x, text = paired(features_vs_bare, lambda p: p[0], ratio(fs and fs["rps"], rs and rs["rps"]), 3)
target18("with metrics, affinity, key limits: saturation throughput", "within 5% (>= 0.95x)", text,
         None if x is None else x >= 0.95)
fc = cpu_per_req(fs, "features")
x, text = paired(features_vs_bare, lambda p: p[1], ratio(fc, rc), 3, f"{f(fc, 1)} vs {f(rc, 1)} us")
target18("with metrics, affinity, key limits: CPU per request", "within 5% (<= 1.05x)", text,
         None if x is None else x <= 1.05)
if f1k and r1k:
    x = ratio(f1k["p50"], r1k["p50"])
    target18("with metrics, affinity, key limits: p50 latency at 1,000 rps", "within 5% (<= 1.05x)",
             f"{f(x, 3, 'x')} ({f1k['p50']:.3f} vs {r1k['p50']:.3f} ms)", None if x is None else x <= 1.05)
fst = streams.get("features")
if fst and fst.get("ttfb_ms") and streams["router"] and streams["router"].get("ttfb_ms"):
    a, b = fst["ttfb_ms"]["p50"], streams["router"]["ttfb_ms"]["p50"]
    x = ratio(a, b)
    target18("with metrics, affinity, key limits: streaming TTFB (p50)", "within 5% (<= 1.05x)",
             f"{f(x, 3, 'x')} ({a:.3f} vs {b:.3f} ms)", None if x is None else x <= 1.05)
x = ratio(rs and rs["rps"], ls and ls["rps"])
target18("(reference) saturation throughput vs LiteLLM", "(issue 9: >= 15x)", f(x, 1, "x"), None)
x = ratio(cpu_per_req(ls, "litellm"), rc)
target18("(reference) LiteLLM's CPU per request vs the router's", "(none)", f(x, 1, "x"), None)

head18 = ["## Targets (issue 18), this run", ""]
head18.append("| measure | target | measured | |")
head18.append("|---|---|---|---|")
for name, goal, value, ok in t18:
    head18.append(f"| {name} | {goal} | {value} | {verdict(ok, name.startswith('(reference)'))} |")
head18.append("")

head = head18 + ["## Targets (issue 9), this run", ""]
head.append("| target | goal | measured | |")
head.append("|---|---|---|---|")
for name, goal, value, ok in targets:
    head.append(f"| {name} | {goal} | {value} | {verdict(ok, name.startswith('(reference)'))} |")
head.append("")
# Targets go right after the machine section.
idx = md.index("## Sequential requests (one connection, one request at a time)")
md[idx:idx] = head

# --- commands --------------------------------------------------------------------------------------------------
w("## Commands")
w("")
w("Servers (ports are picked free on 127.0.0.1 at each run):")
w("")
w("```")
w("nginx -p bench/tmp/run-*/nginx -c nginx.conf -g 'daemon off;'         # from bench/nginx.conf.in, 1 worker")
w("nginx -p bench/tmp/run-*/nginx-proxy -c nginx.conf -g 'daemon off;'   # bench/nginx-proxy.conf.in, N workers")
w("bench_upstream --port P --chunks 50 --interval-ms 20                   # examples/bench_upstream.rs")
w("router serve --config bench/router.yaml --store bench/tmp/run-*/router.redb --listen 127.0.0.1:P")
w("router serve --config bench/router-features.yaml --store bench/tmp/run-*/router-features.redb --listen 127.0.0.1:P")
w("router serve --config big.yaml --store ... --listen 127.0.0.1:P        # bench/tool.py big-config 1000 50")
w("litellm --config bench/litellm.yaml --host 127.0.0.1 --port P --num_workers 2 --run_gunicorn")
w("```")
w("")
w("Load (each oha run also sends `-m POST -H 'content-type: application/json' -d <chat body> -t 30s "
  "--no-tui --output-format json`):")
w("")
w("```")
try:
    with open(os.path.join(RAW, "commands.tsv")) as fh:
        seen = set()
        for line in fh:
            name, _, cmd = line.rstrip("\n").partition("\t")
            generic = " ".join(cmd.split()[:-1]) + " <url>"
            if "-warm-" in name or generic in seen:
                continue
            seen.add(generic)
            w(generic)
except OSError:
    pass
w("bench_stream_client --url <path>/v1/chat/completions --model bench-slow --requests N --chunks 50")
w(
    "bench_stream_client --url <router>/v1/chat/completions --model bench-slow --requests 1000 --concurrency 1000 "
    "--chunks 150 --threads 2 --rss-pid <router pid>"
)
w("```")
w("")

analysis = os.path.join(ROOT, "bench", "analysis.md")
if os.path.exists(analysis):
    with open(analysis) as fh:
        w(fh.read().rstrip())
    w("")

# Sections other benchmarks write (scale-out, dashboard) follow this line; a run of this script keeps them.
KEEP = "<!-- Sections below come from other benchmarks (bench/postgres.sh, the dashboard load test); bench/run.sh keeps them. -->"
kept = ""
if os.path.exists(OUT):
    with open(OUT) as fh:
        old = fh.read()
    if KEEP in old:
        kept = old[old.index(KEEP):].rstrip() + "\n"
with open(OUT, "w") as fh:
    fh.write("\n".join(md) + "\n")
    if kept:
        fh.write("\n" + kept)
with open(SUMMARY, "w") as fh:
    json.dump(summary, fh, indent=1, default=str)
    fh.write("\n")
