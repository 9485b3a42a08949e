"""`ltkd report SWEEP_DIR [SWEEP_DIR ...]`: paper-style tables (and figures) from the Parquet
results alone: no Ray, no Optuna storage, no checkpoints."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trainables.errors import UserError
from trainables.metrics import ACCURACY_METRICS


def _warn(message: str) -> None:
    print(f"ltkd: warning: {message}", file=sys.stderr)


def cmd_report(args: argparse.Namespace) -> int:
    import json

    from results.render import RENDERERS, to_markdown
    from results.store import read_results
    from results.tables import BEST_CONFIG_FILE, all_tables, best_configs

    if args.figures and not args.out:
        raise UserError("--figures writes PDF and PNG files: give a folder with --out DIR")
    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    # Tables read each trial's final row; figures (learning curves) and --select best-epoch every epoch's.
    df = read_results(args.sweep_dirs, warn=_warn, final_only=not args.figures and args.select == "last-epoch")
    tables = all_tables(df, select=args.select, paper=args.paper)
    no_table = ("no completed final, single or teacher runs in " + ", ".join(args.sweep_dirs)
                + " (search trials alone make no table; they feed --figures)")
    if not tables and not args.figures:
        raise UserError(no_table)
    if tables:
        print("\n".join(to_markdown(table) for table in tables))
    else:
        _warn(no_table)
    if out is None:
        return 0
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for table in tables:
        for extension, render in RENDERERS.items():
            path = out / f"{table.name}.{extension}"
            path.write_text(render(table), encoding="utf-8")
            written.append(path)
    chosen = best_configs(df)
    if chosen:  # sweep -> cell -> the final runs' hyperparameters and how they were chosen
        path = out / BEST_CONFIG_FILE
        path.write_text(json.dumps(chosen, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    if args.figures:
        from results.report_figures import all_figures

        figures = all_figures(df, out, select=args.select, objective=args.objective)
        written += figures
        if not figures and not tables:
            raise UserError("nothing to report: no table and no figure can be drawn from these results")
        if not figures:
            _warn("no figure could be drawn from these results")
    print(f"wrote {len(written)} file(s) to {out}", file=sys.stderr)
    if args.figures:
        stems = sorted({path.stem for path in figures})
        print(f"figures ({len(stems)}, each as PDF and PNG):", file=sys.stderr)
        for stem in stems:
            print(f"  {stem}.pdf, {stem}.png", file=sys.stderr)
    return 0


def add_commands(commands) -> None:
    report = commands.add_parser(
        "report", help="paper-style tables and figures from sweep results (reads only the Parquet files)",
        description="Builds the paper's tables from the Parquet results of one or more sweeps: the main table "
                    "(methods x imbalance factor, Tail and All accuracy, mean +- std over seeds with a 95% "
                    "t-interval in CSV/HTML, LTKD's gain with a paired t-test), the ablation table and the "
                    "group-count table when those runs exist, and the chosen hyperparameters of every cell. "
                    "Markdown to the terminal; LaTeX, HTML and CSV files, best_config.json (and the figures, "
                    "PDF and PNG) with --out.")
    report.add_argument("sweep_dirs", nargs="+", metavar="SWEEP_DIR",
                        help="sweep folder (or pyarrow URI, e.g. s3://bucket/sweep) holding results/*.parquet")
    report.add_argument("--out", default=None, metavar="DIR",
                        help="write <table>.md/.tex/.html/.csv, best_config.json (and the figures) into DIR")
    report.add_argument("--figures", action="store_true",
                        help="also draw the figures into --out DIR, each as <name>.pdf and <name>.png (200 dpi): "
                             "per-class accuracy by class frequency and the teacher's head bias (means over seeds "
                             "with their spread), the sensitivity to every hyperparameter a search varied (with "
                             "Optuna's importance of each) and each cell's Optuna history")
    report.add_argument("--paper", action="store_true",
                        help="set the paper's published numbers beside the reproduced ones where they match")
    report.add_argument("--select", choices=("last-epoch", "best-epoch"), default="last-epoch",
                        help="which epoch of a run counts: its last (default) or its best test accuracy "
                             "(test-selected, the public KD codebases' convention; the caption says so)")
    report.add_argument("--objective", default=None,
                        choices=ACCURACY_METRICS,
                        help="the metric the Optuna-history and sensitivity figures rank search trials by (default: "
                             "the metric each search maximised, as its results record it; acc for results "
                             "that do not record it)")
    report.set_defaults(handler=cmd_report)
