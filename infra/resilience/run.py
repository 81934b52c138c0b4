#!/usr/bin/env python3
"""Runs the resilience scenarios (crash, then outage) with their defaults and ends with the line
that infra/test's summary counts: `resilience: N passed, M failed, 0 skipped` (one test per
scenario). Exit status 1 when any failed.

    .venv/bin/python infra/resilience/run.py [--only crash,outage] [--seed N] [--keep] [--binary PATH]

Each scenario also runs alone, with more options: infra/resilience/crash.py --help,
infra/resilience/outage.py --help.
"""

from __future__ import annotations

import argparse
import sys

import crash
import outage
import support

SCENARIOS = {crash.NAME: crash, outage.NAME: outage}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma list of scenarios")
    parser.add_argument("--seed", type=int, help="random seed of every scenario (default: a new one each)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folders (logs)")
    parser.add_argument("--binary", help="the medinform binary (default target/debug/medinform)")
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        parser.error(f"unknown scenario {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    passthrough = []
    if args.seed is not None:
        passthrough += ["--seed", str(args.seed)]
    if args.keep:
        passthrough.append("--keep")
    if args.binary:
        passthrough += ["--binary", args.binary]

    support.install_signal_handlers()
    reports = []
    for name in names:
        module = SCENARIOS[name]
        support.log(f"scenario {name}")
        reports.append(support.run_scenario(name, module.run, module.parser().parse_args(passthrough)))
    print()
    for report in reports:
        print(f"  {'ok    ' if report.ok else 'FAILED'}  resilience/{report.scenario}")
    print(support.totals_line(reports), flush=True)
    sys.exit(0 if all(r.ok for r in reports) else 1)


if __name__ == "__main__":
    main()
