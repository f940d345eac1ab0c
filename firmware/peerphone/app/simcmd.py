"""`peerphone sim`: check the arguments, run the scenarios, print reports, write a plot."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from ..core.overlay import Topology
from ..sim.plot import hops_and_latency_svg
from ..sim.scenario import Report, Scenario, SimSpec
from .config import ConfigError

NODES_MAX = 100_000
SUCCESSORS_MAX = 16  # a successor list must fit one datagram even with IPv6 addresses


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise ConfigError("--nodes must be numbers separated by commas") from None
    if not sizes or any(not 3 <= n <= NODES_MAX for n in sizes):
        raise ConfigError(f"--nodes must be 3..{NODES_MAX}")
    return sizes


def _partition(text: str) -> tuple[int, int]:
    try:
        start, duration = (int(part) for part in text.split(","))
    except ValueError:
        raise ConfigError("--partition-s must be START,DURATION in seconds") from None
    if start < 0 or duration < 1:
        raise ConfigError("--partition-s must be START,DURATION with START >= 0 and DURATION >= 1")
    return start, duration


def specs_from_args(args: argparse.Namespace) -> list[SimSpec]:
    if not 0.0 <= args.fail_fraction < 1.0:
        raise ConfigError("--fail-fraction must be in [0, 1)")
    if args.fail_fraction and args.churn_median_s:
        raise ConfigError("choose --fail-fraction or --churn-median-s, not both")
    if args.churn_median_s is not None and args.churn_median_s <= 0:
        raise ConfigError("--churn-median-s must be positive")
    if not 2 <= args.successors <= SUCCESSORS_MAX:
        raise ConfigError(f"--successors must be 2..{SUCCESSORS_MAX}")
    if not 0.0 <= args.loss < 1.0:
        raise ConfigError("--loss must be in [0, 1)")
    if not 1.0 <= args.maintenance_s <= 3600:
        raise ConfigError("--maintenance-s must be 1..3600")
    if args.duration_s < 1 or args.values < 0 or args.lookups < 1:
        raise ConfigError("--duration-s and --lookups must be positive, --values not negative")
    if args.calls < 0 or (args.calls and args.phones < 2):
        raise ConfigError("--calls must not be negative, and calls need --phones of at least 2")
    if args.calls and args.fail_fraction:
        raise ConfigError("--calls are measured on a stable overlay or under churn, not after --fail-fraction")
    if not 0.0 <= args.battery_share < 1.0:
        raise ConfigError("--battery-share must be in [0, 1): some nodes must stay peers")
    if args.battery_share and (args.fail_fraction or args.churn_median_s):
        raise ConfigError("--battery-share is measured on its own or with --calls, not with --fail-fraction or churn")
    if args.battery_share and args.topology == "kademlia":
        raise ConfigError("--battery-share runs on chord and onehop (the simulator's clients attach to ring peers)")
    partition = _partition(args.partition_s) if args.partition_s else None
    return [SimSpec(nodes=n, partition_s=partition, seed=args.seed, topology=Topology(args.topology),
                    duration_s=args.duration_s,
                    churn_median_s=args.churn_median_s, session=args.session, fail_fraction=args.fail_fraction,
                    values=args.values, lookups=args.lookups, maintenance_s=args.maintenance_s,
                    successors=args.successors, loss=args.loss, cold_start=args.cold_start,
                    calls=args.calls, phones=args.phones, battery_share=args.battery_share)
            for n in _sizes(args.nodes)]


def run_sim(args: argparse.Namespace) -> int:
    specs = specs_from_args(args)
    if args.log_level.upper() == "INFO":  # thousands of simulated fronts would say every registration
        logging.getLogger("peerphone.sip").setLevel(logging.WARNING)
    reports: list[Report] = []
    for spec in specs:
        started = time.monotonic()
        scenario = Scenario(spec, progress=lambda text: print(f"  ... {text}", file=sys.stderr, flush=True))
        report = scenario.run()
        reports.append(report)
        sys.stdout.write(report.text())
        wall = time.monotonic() - started
        print(f"  (wall time {wall:.1f} s, {scenario.sim.events_run / wall:,.0f} events/s)", file=sys.stderr)
        print()
    if args.plot:
        Path(args.plot).write_text(hops_and_latency_svg(reports))
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0
