"""``adaptopt study``: list, run and report the studies in ``studies/*.toml``
(see adaptopt.experiments.study)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from adaptopt.cli.sweep import add_executor_arguments, slurm_parameters
from adaptopt.experiments.study import (
    StudyError,
    available,
    load_study,
    plan,
    run_study,
    studies_dir,
    study_runs,
)
from adaptopt.experiments.sweep import resolve_all


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "study",
        help="reproduce a claim of the paper: grid → seeds → report, at a named scale",
        description="Studies are TOML files in studies/ (or $ADAPTOPT_STUDIES). `run` does the "
        "grid search on the validation split, retrains the best setting per arm with every "
        "seed on the test split and writes the report; finished runs are skipped, so an "
        "interrupted study resumes. `report` rebuilds the report from the run records alone.",
    )
    commands = parser.add_subparsers(dest="study_command", required=True)
    listing = commands.add_parser("list", help="the available studies and their scales")
    listing.set_defaults(func=list_studies)

    for name, func, text in (
        ("run", run, "run (or resume) a study, then write its report"),
        ("report", report, "rebuild a study's report from its run records"),
        ("plan", show_plan, "print what `run` would train now (nothing runs)"),
    ):
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("name", help="study name (file stem in studies/) or a path to a .toml")
        sub.add_argument("--scale", default="cpu", help="named scale of the study (default: cpu)")
        sub.add_argument(
            "--out", type=Path, help="run directories (default: runs/studies/NAME/SCALE)"
        )
        sub.add_argument(
            "--results",
            type=Path,
            help="report and run records (default: docs/results/NAME/SCALE)",
        )
        if name == "run":
            sub.add_argument("--workers", type=int, default=1, help="parallel worker processes")
            sub.add_argument("--no-report", action="store_true", help="skip the report")
            add_executor_arguments(sub)
        sub.set_defaults(func=func)


def _load(args: argparse.Namespace):
    try:
        return load_study(args.name, args.scale, work_dir=args.out, results_dir=args.results)
    except StudyError as e:
        raise SystemExit(f"study: {e}") from None


def list_studies(args: argparse.Namespace) -> int:
    directory = studies_dir()
    names = available(directory)
    if not names:
        raise SystemExit(f"study: no study files in {directory}")
    for name in names:
        try:
            study = load_study(directory / f"{name}.toml", "cpu")
            print(f"{name:20s} {study.title}  [scales: {', '.join(study.scales)}]")
        except StudyError as e:
            print(f"{name:20s} INVALID: {e}")
    return 0


def show_plan(args: argparse.Namespace) -> int:
    study = _load(args)
    try:
        now = plan(study)
    except StudyError as e:
        raise SystemExit(f"study: {e}") from None
    done = {r.path.name for r in study_runs(study) if r.status in ("finished", "diverged")}
    print(study.describe())
    for phase, configs in (("grid", now.grid), ("seeds", now.seeds)):
        if phase == "seeds" and now.undecided:
            print(f"seeds: chosen once the grid of {len(now.undecided)} (task, arm) is done")
        else:  # run ids hash the resolved configs: this builds the tasks (loads their data)
            ids = [c.run_id() for c in resolve_all(configs)]
            print(f"{phase}: {len(ids)} runs, {sum(i in done for i in ids)} done")
    return 0


def run(args: argparse.Namespace) -> int:
    study = _load(args)
    try:
        path = run_study(
            study,
            workers=args.workers,
            executor=args.executor,
            slurm=slurm_parameters(args),
            report=not args.no_report,
        )
    except StudyError as e:
        raise SystemExit(f"study: {e}") from None
    if path is not None:
        print(f"report: {path}")
    return 0


def report(args: argparse.Namespace) -> int:
    from adaptopt.experiments.study_report import write_report

    study = _load(args)
    if not any(True for _ in study_runs(study)):
        print(
            f"adaptopt study: no runs of {study.name} at scale {study.scale} in "
            f"{study.work_dir} or {study.results_dir / 'runs'}; run it first",
            file=sys.stderr,
        )
        return 1
    print(write_report(study))
    return 0
