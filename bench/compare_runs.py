"""Pooled figures of several `bench/continuous.py` runs side by side: one row per
run, set and partials mode, and a plot of the live/file WER ratio and the finals
latency against the option each run tried.

    python bench/compare_runs.py "label=results/a.json" "label=results/b.json" ...
        [--plot docs/sentence-silence.png] [--data docs/data/sentence-silence.json]

A run made with ``--only-partials on`` adds its "on" rows; give the same label to
two files to put them in one column (the "off" rows of one, the "on" rows of the
other). ``--data`` keeps the pooled figures (not the events) for ``--replot``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

GROUPS = ("tune", "heldout", "all")
MODES = ("on", "off")


def pooled(paths: list[tuple[str, Path]]) -> list[dict[str, Any]]:
    """Rows of ``{"label", "commit", "group", "partials", ...figures}``; a later file
    replaces an earlier one's row of the same label, group and mode."""
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for label, path in paths:
        run = json.loads(path.read_text())
        for row in run["pooled"]:
            if row.get("path", "input") != "input":
                continue
            keep = {k: row[k] for k in ("live_wer", "file_wer", "ratio", "finals_p50")}
            keep |= {k: row[k] for k in ("finals_p95", "shown_p50", "cpu_cores", "sentences")}
            keep |= {"label": label, "commit": run["commit"][:7], "args": run["listen_args"]}
            keep |= {"group": row["group"], "partials": row["partials"]}
            keep |= {"load": [run["load_average_before"], run["load_average_after"]]}
            rows[(label, row["group"], row["partials"])] = keep
    return list(rows.values())


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| option | commit | set | partials | live WER | file WER | live/file "
        "| finals p50 | finals p95 | shown p50 | CPU cores |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in sorted(rows, key=lambda r: (GROUPS.index(r["group"]), r["partials"])):
        lines.append(
            f"| {r['label']} | `{r['commit']}` | {r['group']} | {r['partials']} "
            f"| {r['live_wer']:.3f} | {r['file_wer']:.3f} | {r['ratio']:.2f} "
            f"| {r['finals_p50']:.2f} | {r['finals_p95']:.2f} | {r['shown_p50']:.2f} "
            f"| {r['cpu_cores']:.2f} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(r["label"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for group, marker in zip(GROUPS, ("o", "s", "D"), strict=True):
        for mode, style in zip(MODES, ("-", "--"), strict=True):
            got = {r["label"]: r for r in rows if r["group"] == group and r["partials"] == mode}
            xs = [i for i, label in enumerate(labels) if label in got]
            if not xs:
                continue
            name = f"{group}, partials {mode}"
            axes[0].plot(
                xs, [got[labels[i]]["ratio"] for i in xs], style, marker=marker, label=name
            )
            axes[1].plot(
                xs, [got[labels[i]]["finals_p95"] for i in xs], style, marker=marker, label=name
            )
    axes[0].axhline(1.15, color="grey", lw=0.8, ls=":")
    axes[1].axhline(1.5, color="grey", lw=0.8, ls=":")
    axes[0].set_ylabel("live WER / file WER (pooled)")
    axes[1].set_ylabel("finals p95, s (end of sentence to final)")
    for ax in axes:
        ax.set_xticks(range(len(labels)), labels, rotation=15, fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("Continuous speech, tiny.en, --input at real time: the options tried")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", help="LABEL=RESULTS.json")
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--data", type=Path, help="write the pooled rows here")
    parser.add_argument("--replot", type=Path, help="read the pooled rows from here")
    args = parser.parse_args(argv)
    if args.replot is not None:
        rows = json.loads(args.replot.read_text())
    else:
        pairs = []
        for spec in args.runs:
            label, sep, path = spec.partition("=")
            if not sep:
                parser.error(f"{spec!r}: give LABEL=RESULTS.json")
            pairs.append((label, Path(path)))
        rows = pooled(pairs)
    print(table(rows))
    if args.data is not None:
        args.data.parent.mkdir(parents=True, exist_ok=True)
        args.data.write_text(json.dumps(rows, indent=1) + "\n")
    if args.plot is not None:
        plot(rows, args.plot)
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
