"""PNG plots of a results.json (matplotlib, headless)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"round_robin": "#1f77b4", "sticky": "#2ca02c", "peer_tuned": "#ff7f0e",
          "peer_default": "#d62728", "minimum": "#7f7f7f"}


def _handover(results: dict[str, Any], path: Path) -> Path | None:
    hand = results.get("handover") or {}
    peers = results.get("peer") or {}
    if not hand and not peers:
        return None
    events = [("leave", "graceful leave", "leave"), ("crash_follower", "crash follower", "crash"),
              ("crash_leader", "crash leader", None), ("join", "join", "join")]
    series: list[tuple[str, str, list[tuple[float, float]]]] = []
    for strategy, r in hand.items():
        vals = []
        for kind, _, _ in events:
            s = r["summary"].get(kind, {})
            m = s.get("join" if kind == "join" else "all_moved_running", {})
            vals.append((m.get("median", math.nan), m.get("p95", math.nan)))
        series.append((f"xconsumer ({strategy})", COLORS.get(strategy, "#333"), vals))
    for key, label in (("tuned", "SetPartitioner (time_boundary {tb:g} s)"),
                       ("default", "SetPartitioner (default time_boundary {tb:g} s)")):
        r = peers.get(key)
        if not r:
            continue
        vals = []
        for _, _, pk in events:
            s = r["summary"].get(pk or "", {}) if pk else {}
            m = s.get("join" if pk == "join" else "all_running", {})
            vals.append((m.get("median", math.nan), m.get("p95", math.nan)))
        series.append((label.format(tb=r["time_boundary"]), COLORS[f"peer_{key}"], vals))
    fig, ax = plt.subplots(figsize=(10, 5.2))
    width = 0.8 / max(1, len(series))
    for i, (label, color, vals) in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(events))]
        med = [v[0] * 1000 for v in vals]
        err = [max(0.0, (v[1] - v[0]) * 1000) if not math.isnan(v[1]) else 0.0 for v in vals]
        ax.bar(xs, med, width, label=label, color=color, yerr=[[0] * len(err), err],
               capsize=3)
        for x, m, e in zip(xs, med, err, strict=True):
            if not math.isnan(m):
                ax.text(x, (m + e) * 1.12, f"{m:,.0f}", ha="center", va="bottom", fontsize=7,
                        rotation=90)
    st = next(iter(hand.values()))["session_timeout"] if hand else 2.0
    ax.axhline(st * 1000, color="#999", linestyle=":", linewidth=1)
    ax.text(len(events) - 0.5, st * 1000 * 1.05, f"session timeout {st:g} s", ha="right",
            fontsize=8, color="#666")
    ax.set_yscale("log")
    ax.set_xticks(range(len(events)))
    ax.set_xticklabels([e[1] for e in events])
    ax.set_ylabel("ms, log scale (bar p50, whisker p95)")
    ax.set_title("Handover: until every moved slot runs again, 5 members / 100 slots")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2)
    ax.set_ylim(10, 1_000_000)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _timeline(results: dict[str, Any], path: Path) -> Path | None:
    hand = results.get("handover") or {}
    if not hand:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for strategy, r in hand.items():
        first = True
        for ev in r["events"]:
            if ev["kind"] != "leave" or not ev.get("start_offsets"):
                continue
            xs = [0.0] + [x * 1000 for x in ev["start_offsets"]]
            ys = list(range(len(xs)))
            ax.step(xs, ys, where="post", color=COLORS.get(strategy, "#333"), alpha=0.7,
                    label=f"{strategy} ({ev['moved']} slots moved)" if first else None)
            first = False
    ax.set_xlabel("ms after SIGTERM")
    ax.set_ylabel("moved slots running on their new node")
    ax.set_title("Graceful leave of a follower: when each moved slot starts (every run)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _assignment(results: dict[str, Any], path: Path) -> Path | None:
    rows = [r for r in results.get("assignment") or [] if r.get("tasks", 10) == 10]
    if not rows:
        return None
    strategies = sorted({r["strategy"] for r in rows})
    fig, axes = plt.subplots(1, len(strategies) + 1, figsize=(5 * (len(strategies) + 1), 4.6))
    node_colors = {10: "#1f77b4", 100: "#ff7f0e", 1000: "#2ca02c"}
    for ax, strategy in zip(axes, strategies, strict=False):
        for n in sorted({r["nodes"] for r in rows}):
            sel = sorted((r for r in rows if r["strategy"] == strategy and r["nodes"] == n),
                         key=lambda r: r["slots"])
            xs = [r["slots"] for r in sel]
            color = node_colors.get(n, "#333")
            ax.plot(xs, [r["compute"]["median"] * 1000 for r in sel], marker="o", color=color,
                    label=f"{n} nodes: strategy")
            ax.plot(xs, [(r["leader_pass"] or {}).get("median", math.nan) * 1000 for r in sel],
                    marker="s", linestyle="--", color=color,
                    label=f"{n} nodes: whole leader pass")
        ax.axhline(500, color="#999", linestyle=":")
        ax.text(100000, 560, "target 0.5 s", fontsize=8, color="#666", ha="right")
        ax.set_title(f"Assignment CPU time, {strategy} (p50)")
        ax.set_ylabel("ms")
        ax.legend(fontsize=7, loc="lower right")
    ax2 = axes[-1]
    first = strategies[0]
    for n in sorted({r["nodes"] for r in rows}):
        sel = sorted((r for r in rows if r["strategy"] == first and r["nodes"] == n),
                     key=lambda r: r["slots"])
        xs = [r["slots"] for r in sel]
        color = node_colors.get(n, "#333")
        ax2.plot(xs, [r["json_bytes"] / 1024 for r in sel], marker="o", color=color,
                 label=f"{n} nodes: JSON")
        ax2.plot(xs, [r["published_bytes"] / 1024 for r in sel], marker="s", linestyle="--",
                 color=color, label=f"{n} nodes: as published")
    ax2.axhline(1024, color="#d62728", linestyle=":")
    ax2.text(1000, 1150, "jute.maxbuffer default, 1 MiB", fontsize=8, color="#d62728")
    ax2.set_ylabel("KiB")
    ax2.set_title(f"Assignment znode size ({first})")
    ax2.legend(fontsize=7, loc="lower right")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("slots (10 tasks)")
        ax.grid(alpha=0.3)
    ax2.set_ylim(4, 4096)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _moves(results: dict[str, Any], path: Path) -> Path | None:
    moves = results.get("moves") or {}
    strategies = moves.get("strategies") or {}
    if not strategies:
        return None
    first = next(iter(strategies.values()))["single"]
    labels = [e["event"] for e in first]
    series = [(s, COLORS.get(s, "#333"), [e["moved"] for e in r["single"]])
              for s, r in strategies.items()]
    series.append(("theoretical minimum", COLORS["minimum"], [e["minimum"] for e in first]))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / len(series)
    for i, (label, color, vals) in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(labels))]
        ax.bar(xs, vals, width, label=label, color=color)
        for x, v in zip(xs, vals, strict=True):
            ax.text(x, v + 5, str(v), ha="center", fontsize=8)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels)
    top = max(v for _, _, vals in series for v in vals)
    ax.set_ylim(0, top * 1.25)
    ax.set_ylabel("slots moved")
    ax.set_title(f"Slots moved per membership change, {moves['nodes']} nodes / "
                 f"{moves['slots']:,} slots")
    ax.legend(fontsize=8, loc="upper center", ncol=len(series))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _members(results: dict[str, Any], path: Path) -> Path | None:
    """Time to converge and requests per membership change against the cluster's size."""
    sizes = (results.get("members_scale") or {}).get("sizes") or {}
    ns = sorted(int(n) for n, size in sizes.items() if size.get("summary"))
    if not ns:
        return None
    series = (("join", "from_member_znode", "join (from the member znode)", "#1f77b4"),
              ("leave", "converge", "graceful leave", "#2ca02c"),
              ("crash", "after_expiry", "crash (after the session expiry)", "#d62728"))
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    for kind, key, label, color in series:
        pts = [(n, ((sizes[str(n)]["summary"].get(kind) or {}).get(key) or {}).get("median"),
                ((sizes[str(n)]["summary"].get(kind) or {}).get("requests") or {}).get("median"))
               for n in ns]
        t = [(n, v * 1000) for n, v, _ in pts if v is not None]
        r = [(n, v) for n, _, v in pts if v is not None]
        if t:
            left.plot(*zip(*t, strict=True), marker="o", label=label, color=color)
        if r:
            right.plot(*zip(*r, strict=True), marker="o", label=label, color=color)
    right.plot(ns, ns, linestyle=":", color=COLORS["minimum"], label="one request per member")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xticks(ns)
        ax.set_xticklabels([f"{n:,}" for n in ns])
        ax.set_xlabel("members")
        ax.legend(fontsize=8)
    right.set_yscale("log")
    left.set_ylabel("ms to converge, p50")
    right.set_ylabel("requests the members send, p50")
    left.set_title("Time to converge after a change (1 slot moves)")
    right.set_title("ZooKeeper requests per change")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def make_plots(results: dict[str, Any], img_dir: Path) -> list[str]:
    img_dir.mkdir(parents=True, exist_ok=True)
    made = []
    for name, fn in (("bench-handover.png", _handover), ("bench-leave-timeline.png", _timeline),
                     ("bench-assignment.png", _assignment), ("bench-moved-slots.png", _moves),
                     ("bench-members.png", _members)):
        out = fn(results, img_dir / name)
        if out is not None:
            # Recorded relative to the repository when possible: results.json is committed
            # and must not carry one machine's paths.
            try:
                made.append(str(Path(out).resolve().relative_to(Path.cwd().resolve())))
            except ValueError:
                made.append(Path(out).name)
    return made
