#!/usr/bin/env python3
"""Turns one run folder of scripts/bench.sh into its table: reads the tools' raw outputs (h2load,
wrk, `shop load --json`, metrics scrapes, RSS samples) and the run's facts (run.tsv), prints the
table as markdown and writes it as bench.md and bench.json into the folder. Run it again on an
old folder to redo the table: `python3 scripts/bench/report.py target/bench/<run>`."""

import json
import pathlib
import re
import sys

# Issue 13's targets.
GRPC_SHARE = 0.30  # GetProduct >= 30 % of the bare tonic handler
REST_RATIO = 1.0  # the gateway >= 1.0x Envoy's transcoder
P99_MS = 100.0  # PlaceOrder on PostgreSQL, and the journey
RSS_MB = 150.0  # every service + gateway, during the 10,000-user journey


def facts(run):
    """run.tsv: one `key<TAB>value` a line, written by bench.sh; a key may repeat."""
    out = {}
    path = run / "run.tsv"
    for line in path.read_text().splitlines():
        key, _, value = line.partition("\t")
        out.setdefault(key, []).append(value)
    return out


def one(f, key, default=""):
    return f.get(key, [default])[-1]


def read(path):
    return path.read_text() if path.exists() else None


def h2load(text):
    """req/s, request counts and mean latency of an h2load run; None when it did not finish."""
    if not text:
        return None
    finished = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", text)
    counts = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout",
        text,
    )
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", text)
    if not finished or not counts:
        return None
    return {
        "rps": float(finished.group(2)),
        "done": int(counts.group(3)),
        "succeeded": int(counts.group(4)),
        "failed": int(counts.group(5)) + int(counts.group(6)) + int(counts.group(7)),
        "mean": mean.group(1) if mean else "?",
    }


def duration_ms(raw):
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", raw)
    if not match:
        return None
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[match.group(2)]
    return float(match.group(1)) * scale


def wrk(text):
    """req/s, p50/p99, non-2xx answers and socket errors of a `wrk --latency` run."""
    if not text:
        return None
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if not rps:
        return None
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", text, re.M))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return {
        "rps": float(rps.group(1)),
        "p50_ms": duration_ms(percentiles.get("50", "")),
        "p99_ms": duration_ms(percentiles.get("99", "")),
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(int(n) for n in socket.groups()) if socket else 0,
    }


def get_product_answers(run, name):
    """GetProduct calls product-service answered during a point, by gRPC code, from the metrics
    scraped before and after it; None without both scrapes."""
    before, after = read(run / f"metrics-{name}-before.txt"), read(run / f"metrics-{name}-after.txt")
    if before is None or after is None:
        return None

    def counts(text):
        out = {}
        for line in text.splitlines():
            if not line.startswith("grpc_server_handled_total{"):
                continue
            labels, _, value = line.partition("} ")
            pairs = dict(re.findall(r'(\w+)="([^"]*)"', labels))
            if pairs.get("grpc_method") == "GetProduct":
                out[pairs.get("grpc_code", "?")] = float(value)
        return out

    old, new = counts(before), counts(after)
    return {code: int(new[code] - old.get(code, 0)) for code in new if new[code] > old.get(code, 0)}


# A load tool resets the streams still open when its time is up: the server counts them as
# cancelled, which is no failure of the server.
CUT = "Canceled"
# What a server past its limits answers instead of serving (overload shedding, not a failure).
SHED = ("ResourceExhausted", "Unavailable")
# The share of failed calls below which a throughput figure still stands (flagged, not void).
TOLERATED = 0.001


def failed_answers(answers):
    """Answers that are failures of the server: neither OK, nor cut, nor shed."""
    return sum(n for code, n in (answers or {}).items() if code not in ("OK", CUT, *SHED))


def served_share(answers):
    """The share of answered calls that were served (OK), the rest being shed or failed."""
    answered = sum(n for code, n in (answers or {}).items() if code != CUT)
    return (answers or {}).get("OK", 0) / answered if answered else 1.0


def server_time(run, name):
    """gRPC methods by the server time they took in a run (from grpc_server_handling_seconds
    of the metrics scraped at its end): `Method mean (calls)`, the costliest first."""
    text = read(run / f"metrics-{name}.txt")
    if not text:
        return None
    sums, counts = {}, {}
    for line in text.splitlines():
        for suffix, into in (("_sum{", sums), ("_count{", counts)):
            if line.startswith("grpc_server_handling_seconds" + suffix):
                labels, _, value = line.partition("} ")
                method = dict(re.findall(r'(\w+)="([^"]*)"', labels)).get("grpc_method", "?")
                into[method] = into.get(method, 0.0) + float(value)
    ranked = sorted(sums, key=sums.get, reverse=True)[:5]
    return ", ".join(
        f"{m} {ms(1000 * sums[m] / counts[m])} mean × {int(counts[m]):,}"
        for m in ranked if counts.get(m)
    )


def load_report(run, name):
    text = read(run / f"{name}.json")
    return json.loads(text) if text else None


def step(report, name):
    for s in report.get("steps", []):
        if s["step"] == name:
            return s
    return None


def ms(value):
    if value is None:
        return "?"
    if value < 10:
        return f"{value:.2f} ms"
    if value < 1000:
        return f"{value:.0f} ms"
    return f"{value / 1000:.2f} s"


def mb(kib):
    return kib / 1024


def rss(run, users):
    """Peak, idle (before the load) and after (the last samples) RSS in MB of the shop process
    of a journey run, from bench.sh's samples: `seconds<TAB>phase<TAB>VmRSS kB`."""
    text = read(run / f"rss-journey-{users}.tsv")
    if not text:
        return None
    rows = [line.split("\t") for line in text.splitlines() if line.count("\t") == 2]
    by_phase = {}
    for _, phase, kib in rows:
        by_phase.setdefault(phase, []).append(int(kib))
    hwm = read(run / f"hwm-journey-{users}.txt")
    peak = max((int(k) for _, _, k in rows), default=0)
    return {
        "idle_mb": mb(by_phase["idle"][-1]) if "idle" in by_phase else None,
        "peak_mb": mb(max(peak, int(hwm)) if hwm and hwm.strip().isdigit() else peak),
        "after_mb": mb(by_phase["after"][-1]) if "after" in by_phase else None,
    }


def cores(f, key):
    raw = one(f, key)
    return float(raw) if raw else None


def main():
    run = pathlib.Path(sys.argv[1])
    f = facts(run)
    rows, notes = [], []

    def row(measurement, value, reference, ratio, met):
        rows.append(
            {"measurement": measurement, "value": value, "reference": reference, "ratio": ratio,
             "met": met}
        )

    for skipped in f.get("skipped", []):
        notes.append(f"skipped: {skipped}")
    notes.extend(f.get("note", []))

    # GetProduct over gRPC against the bare tonic handler.
    ours, bare = h2load(read(run / "h2load-ours.txt")), h2load(read(run / "h2load-bare.txt"))
    conns = one(f, "h2load")
    if ours or bare:
        answers = get_product_answers(run, "grpc")
        wrong = failed_answers(answers)
        # h2load counts every HTTP 200 as a success, a shed call's too: only served ones count.
        served = ours["rps"] * served_share(answers) if ours else None
        ratio = served / bare["rps"] if served is not None and bare else None
        met = "?"
        if ratio is not None:
            met = ("yes" if ratio >= GRPC_SHARE else "no") + f" (≥ {GRPC_SHARE:.2f}×)"
        if ours and (ours["failed"] or wrong):
            # A handful (h2 closes a connection whose streams h2load resets at its end) leaves
            # the rate as it is; more means the figure is not a served rate.
            answered = sum((answers or {}).values())
            if ours["failed"] + wrong > TOLERATED * max(answered, 1):
                met = f"invalid: {ours['failed']} failed requests, {wrong} failed calls"
            else:
                met += f"; {wrong} failed calls"
        row(
            f"GetProduct, gRPC, SQLite ({conns})",
            f"{served:,.0f} served/s" if ours else "did not run",
            f"bare tonic handler {bare['rps']:,.0f} req/s" if bare else "did not run",
            f"{ratio:.3g}×" if ratio is not None else "",
            met,
        )
        if ours:
            notes.append(
                f"GetProduct gRPC: {ours['rps']:,.0f} answers/s, mean {ours['mean']} (ours) vs "
                f"{bare['mean'] if bare else '?'} (bare); product-service answered {answers} "
                "(warm-up included; Canceled: streams h2load reset at its end)"
            )

    # REST GetProduct: our gateway against Envoy's transcoder, same product-service.
    gw, envoy = wrk(read(run / "wrk-gateway.txt")), wrk(read(run / "wrk-envoy.txt"))
    if gw or envoy:
        ratio = gw["rps"] / envoy["rps"] if gw and envoy else None
        met = "?"
        if ratio is not None:
            met = ("yes" if ratio >= REST_RATIO else "no") + f" (≥ {REST_RATIO:.1f}×)"
        answers = {n: get_product_answers(run, n) for n in ("gateway", "envoy")}
        bad = [(n, r, failed_answers(answers[n])) for n, r in (("gateway", gw), ("envoy", envoy))
               if r and (r["non2xx"] or r["socket_errors"] or failed_answers(answers[n]))]
        if bad:
            what = ", ".join(
                f"{n} {r['non2xx']} non-2xx, {r['socket_errors']} socket errors, {wrong} failed "
                "GetProduct calls" for n, r, wrong in bad)
            void = any(r["non2xx"] + r["socket_errors"] + wrong
                       > TOLERATED * max(sum((answers[n] or {}).values()), 1)
                       for n, r, wrong in bad)
            met = f"invalid: {what}" if void else f"{met}; {what}"
        row(
            f"GET /v1/products/{{id}}, REST ({one(f, 'wrk')})",
            f"gateway {gw['rps']:,.0f} req/s, p99 {ms(gw['p99_ms'])}" if gw else "did not run",
            f"Envoy transcoder {envoy['rps']:,.0f} req/s, p99 {ms(envoy['p99_ms'])}"
            if envoy else "did not run",
            f"{ratio:.3g}×" if ratio is not None else "",
            met,
        )
        for name, r in (("gateway", gw), ("envoy", envoy)):
            if r:
                notes.append(f"REST via {name}: p50 {ms(r['p50_ms'])}, p99 {ms(r['p99_ms'])}; "
                             f"product-service answered {answers[name]} during the run")

    # PlaceOrder at 50 in flight.
    for name, label, target in (
        ("order-sqlite", "SQLite", False),
        ("order-pg", "PostgreSQL + RabbitMQ", True),
    ):
        report = load_report(run, name)
        if report is None:
            continue
        place = step(report, "place-order")
        orders = report["orders"]
        per_s = orders["placed"] / max(report["elapsed_s"], 1e-9)
        # From the send: with 50 slots the server has 50 calls at once; a user's wait for a free
        # slot is the load generator's own queue (it shows in the due-time p99 of the notes).
        p99 = place["service"]["p99_ms"] if place else None
        due_p99 = place["latency"]["p99_ms"] if place else None
        met = "(no target)"
        if target:
            ok = p99 is not None and p99 < P99_MS and report["errors"] == 0
            met = ("yes" if ok else "no") + f" (p99 < {P99_MS:.0f} ms, no errors)"
        row(
            f"PlaceOrder, gRPC, {label} ({one(f, 'order')})",
            f"p99 {ms(p99)}, {per_s:,.0f} orders/s, {report['errors']} errors",
            f"p99 {P99_MS:.0f} ms",
            f"{p99 / P99_MS:.3g}×" if p99 is not None else "",
            met,
        )
        notes.append(
            f"PlaceOrder on {label}: p50 {ms(place['service']['p50_ms']) if place else '?'}, "
            f"p99 from the due time {ms(due_p99)}; {orders['placed']} placed, "
            f"{orders['confirmed']} confirmed, {orders['cancelled']} cancelled, "
            f"{orders['unsettled']} still pending at the end; placed to confirmed p99 "
            f"{ms(report['confirmation']['p99_ms'])}; shop used "
            f"{cores(f, name + '-cores') or 0:.2f} cores"
        )
        for kind in report.get("error_kinds", [])[:3]:
            notes.append(f"  {label} errors: {kind['count']} × {kind['step']} {kind['kind']} "
                         f"({kind['example'][:120]})")

    # The journey: the target count first, then smaller ones until one meets the target.
    counts = [int(u) for u in f.get("journey", [])]
    think = one(f, "think")
    best = None
    for users in counts:
        report = load_report(run, f"journey-{users}")
        if report is None:
            notes.append(f"journey {users:,} users: no report (shop load failed, see its log)")
            continue
        p99 = report["overall"]["p99_ms"]
        ok = p99 < P99_MS and report["errors"] == 0
        if ok and (best is None or users > best):
            best = users
        memory = rss(run, users)
        steps = ", ".join(
            f"{s['step']} {ms(s['latency']['p99_ms'])}" for s in report["steps"]
        )
        if users == counts[0]:
            row(
                f"Journey, REST, {users:,} users, think {think} ({one(f, 'journey-shape')})",
                f"p99 {ms(p99)}, {report['errors']} errors, {report['rps']:,.0f} req/s",
                f"p99 {P99_MS:.0f} ms, 0 errors",
                f"{p99 / P99_MS:.3g}×",
                ("yes" if ok else "no") + f" (p99 < {P99_MS:.0f} ms, no errors)",
            )
            if memory:
                row(
                    f"Peak RSS of shop up (4 services + gateway), {users:,}-user journey, "
                    "embedded defaults",
                    f"{memory['peak_mb']:.0f} MB",
                    f"{RSS_MB:.0f} MB",
                    f"{memory['peak_mb'] / RSS_MB:.3g}×",
                    ("yes" if memory["peak_mb"] < RSS_MB else "no") + f" (< {RSS_MB:.0f} MB)",
                )
        notes.append(
            f"journey {users:,} users: p50 {ms(report['overall']['p50_ms'])}, p99 {ms(p99)} "
            f"(from the send {ms(report['service']['p99_ms'])}), {report['requests']:,} requests, "
            f"{report['errors']} errors ({report['cut_off']} cut off), orders "
            f"{report['orders']['placed']} placed / {report['orders']['confirmed']} confirmed; "
            f"p99 by step: {steps}; shop used {cores(f, f'journey-{users}-cores') or 0:.2f} "
            f"cores, the load generator {cores(f, f'journey-{users}-load-cores') or 0:.2f}"
            + (f"; RSS idle {memory['idle_mb']:.0f} MB, peak {memory['peak_mb']:.0f} MB, "
               f"{one(f, 'settle')} after {memory['after_mb']:.0f} MB"
               if memory and memory["idle_mb"] and memory["after_mb"] else "")
        )
        by_method = server_time(run, f"journey-{users}")
        if by_method:
            notes.append(f"  {users:,} users, server time by gRPC method: {by_method}")
        kinds = sorted(report.get("error_kinds", []), key=lambda k: k["count"], reverse=True)
        for kind in kinds[:3]:
            notes.append(f"  {users:,} users errors: {kind['count']} × {kind['step']} "
                         f"{kind['kind']} ({kind['example'][:120]})")
    if counts and best != counts[0]:
        target = counts[0]
        row(
            "Largest journey user count with p99 < 100 ms and no errors (of "
            + ", ".join(f"{u:,}" for u in counts) + ")",
            f"{best:,} users" if best else "none of those tried",
            f"{target:,} users",
            f"{best / target:.3g}×" if best else "",
            "yes" if best == target else "no",
        )

    header = [
        f"date: {one(f, 'date')}",
        f"commit: {one(f, 'commit')}",
        f"machine: {one(f, 'cpu')}, {one(f, 'cores')} cores, {one(f, 'ram')} RAM, "
        f"kernel {one(f, 'kernel')}",
        f"load average before / after: {one(f, 'load-before')} / {one(f, 'load-after')}",
        f"build: {one(f, 'build')}",
    ]
    lines = [*header, "",
             "| measurement | value | reference | ratio | target met? |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['measurement']} | {r['value']} | {r['reference']} | {r['ratio']} | "
                     f"{r['met']} |")
    lines += ["", *[f"- {n}" for n in notes]]
    table = "\n".join(lines) + "\n"
    (run / "bench.md").write_text(table)
    summary = {
        "date": one(f, "date"), "commit": one(f, "commit"), "cpu": one(f, "cpu"),
        "cores": one(f, "cores"), "ram": one(f, "ram"), "kernel": one(f, "kernel"),
        "load_before": one(f, "load-before"), "load_after": one(f, "load-after"),
        "build": one(f, "build"), "rows": rows, "notes": notes,
    }
    (run / "bench.json").write_text(json.dumps(summary, indent=2) + "\n")
    sys.stdout.write(table)


if __name__ == "__main__":
    main()
