"""Rebuild a sweep's reports (table, plots, recommendations) from its saved trials, without training.

    python scripts/report.py logs/sweep [--memory-budget-mb 2000] [--time-budget-s 60]
"""

import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a checkout too
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from lora_keras.cli import OneLineErrorParser, exit_on_input_error, positive_float  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = OneLineErrorParser(prog="report.py", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a run's output directory, LOGDIR/NAME")
    parser.add_argument("--memory-budget-mb", type=positive_float, help="peak memory budget (MiB)")
    parser.add_argument("--time-budget-s", type=positive_float, help="training time budget (s)")
    args = parser.parse_args(argv)
    with exit_on_input_error("report.py"):
        from lora_keras.results.report import rebuild_reports

        plots = rebuild_reports(args.run_dir, args.memory_budget_mb, args.time_budget_s)
    run_dir = pathlib.Path(args.run_dir)
    for name in ("results.md", "recommendations.md", *(path.name for path in plots.values())):
        print(run_dir / name)


if __name__ == "__main__":
    main()
