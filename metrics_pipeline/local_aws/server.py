"""Starts the local AWS: a moto server on loopback whose CloudWatch knows a simulated fleet,
with the fleet's Performance Insights in front of it (moto has none).

    python -m metrics_pipeline.local_aws --port 5055

Point the pipeline at it with AWS_ENDPOINT_URL=http://127.0.0.1:5055 (any credentials).
"""

import argparse
import logging
import signal
import threading
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import BaseWSGIServer, make_server

from metrics_pipeline.local_aws import cloudwatch, rds
from metrics_pipeline.local_aws.fleet import (
    MAX_ACCOUNTS,
    SimulatedInstance,
    default_fleet,
    generated_fleet,
    reader_role_arn,
    simulated_accounts,
)
from metrics_pipeline.local_aws.performance_insights import PerformanceInsights
from metrics_pipeline.local_aws.simulator import Faults, Simulator

FLEET_CHECK_SECONDS = 5.0


@dataclass
class LocalAws:
    url: str
    simulator: Simulator
    server: BaseWSGIServer
    serving: threading.Thread
    stopping: threading.Event

    def stop(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()
        self.serving.join()
        cloudwatch.install(None)


def start(
    fleet: Sequence[SimulatedInstance],
    port: int = 0,
    seed: int = 7,
    faults: Faults | None = None,
    clock: Callable[[], datetime] | None = None,
) -> LocalAws:
    """A running local AWS with `fleet` in RDS; instances due later appear when their time comes
    (by `clock`, the wall clock unless given: what CloudWatch keeps is judged by it too)."""
    simulator = Simulator(fleet, seed=seed, faults=faults, clock=clock)
    cloudwatch.install(simulator)
    rds.install()
    # moto's server as ThreadedMotoServer builds it, behind Performance Insights.
    app = PerformanceInsights(DomainDispatcherApplication(create_backend_app), simulator)
    server = make_server("127.0.0.1", port, app, threaded=True, request_handler=MotoRequestHandler)
    serving = threading.Thread(target=server.serve_forever, daemon=True, name="local-aws")
    serving.start()
    url = f"http://127.0.0.1:{server.server_port}"
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"))
    simulator.create_due_instances(url)
    stopping = threading.Event()

    def add_instances_when_due() -> None:
        while not stopping.wait(FLEET_CHECK_SECONDS):
            for instance in simulator.create_due_instances(url):
                print(f"local AWS: created {instance.instance_id} in {instance.region}", flush=True)

    threading.Thread(target=add_instances_when_due, daemon=True, name="fleet-clock").start()
    return LocalAws(url, simulator, server, serving, stopping)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m metrics_pipeline.local_aws",
        description="A local AWS (moto) with a simulated RDS fleet, its CloudWatch metrics "
        "and its Performance Insights.",
    )
    parser.add_argument("--port", type=int, default=5055, help="loopback port (default 5055)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the metric values")
    parser.add_argument(
        "--fleet-size",
        type=int,
        default=0,
        help="simulate this many generated instances instead of the default handful",
    )
    parser.add_argument(
        "--fleet-age-days",
        type=int,
        default=30,
        help="the generated instances were created this many days ago (default 30)",
    )
    parser.add_argument(
        "--fleet-pi-days",
        type=int,
        metavar="DAYS",
        help="the generated instances have Performance Insights on, kept this many days (7 "
        "is PI's free retention; default: off)",
    )
    parser.add_argument(
        "--regions", default="us-east-1,eu-west-1", help="two or more comma-separated regions"
    )
    parser.add_argument(
        "--accounts",
        type=int,
        default=1,
        help=f"simulate this many accounts, 1 to {MAX_ACCOUNTS} (default 1): the pipeline's "
        "own, then 222222222222, 333333333333, ..., each with the role metrics-reader",
    )
    parser.add_argument(
        "--new-instance-after",
        type=float,
        default=20.0,
        metavar="MINUTES",
        help="create the instance 'newcomer-db' this many minutes after start (0: never)",
    )
    parser.add_argument(
        "--late-minutes", type=int, default=3, help="newest minutes not yet published"
    )
    parser.add_argument("--max-requests-per-second", type=float, help="throttle above this")
    parser.add_argument("--max-datapoints-per-second", type=float, help="throttle above this")
    parser.add_argument(
        "--outage",
        nargs=2,
        type=float,
        metavar=("AFTER", "MINUTES"),
        help="CloudWatch fails for MINUTES minutes, starting AFTER minutes from now",
    )
    args = parser.parse_args(argv)
    regions = [r.strip() for r in args.regions.split(",") if r.strip()]
    if len(regions) < 2:
        parser.error("--regions: give at least two comma-separated regions")
    if min(args.fleet_size, args.fleet_age_days, args.late_minutes, args.new_instance_after) < 0:
        parser.error(
            "--fleet-size, --fleet-age-days, --late-minutes and --new-instance-after must not "
            "be negative"
        )
    if args.fleet_pi_days is not None and args.fleet_pi_days < 1:
        parser.error("--fleet-pi-days: expected a number of days, 1 or more")
    if not 0 < args.port < 65536:
        parser.error("--port: expected 1 to 65535")
    if not 1 <= args.accounts <= MAX_ACCOUNTS:
        parser.error(f"--accounts: expected 1 to {MAX_ACCOUNTS}")
    args.regions = tuple(regions)
    return args


def build_fleet(args: argparse.Namespace, now: datetime) -> list[SimulatedInstance]:
    accounts = simulated_accounts(args.accounts)
    fleet = (
        generated_fleet(
            now,
            args.fleet_size,
            args.regions,
            accounts,
            timedelta(days=args.fleet_age_days),
            args.fleet_pi_days,
        )
        if args.fleet_size
        else default_fleet(now, args.regions[:2], accounts)
    )
    if args.new_instance_after:
        fleet.append(
            SimulatedInstance(
                "newcomer-db",
                args.regions[0],
                "postgres",
                "db.t3.medium",
                100,
                now + timedelta(minutes=args.new_instance_after),
                {"team": "shop", "env": "prod"},
            )
        )
    return fleet


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    now = datetime.now(UTC)
    faults = Faults(
        max_requests_per_second=args.max_requests_per_second,
        max_datapoints_per_second=args.max_datapoints_per_second,
        late_minutes=args.late_minutes,
        outages=(
            [(now + timedelta(minutes=args.outage[0]), now + timedelta(minutes=sum(args.outage)))]
            if args.outage
            else []
        ),
    )
    try:
        local = start(build_fleet(args, now), port=args.port, seed=args.seed, faults=faults)
    except OSError as error:
        raise SystemExit(f"local AWS: cannot listen on 127.0.0.1:{args.port} ({error})") from None
    present = [i for i in local.simulator.fleet.values() if i.created_at <= now]
    print(
        f"local AWS on {local.url}: {len(present)} RDS instance(s) in {', '.join(args.regions)}",
        flush=True,
    )
    others = local.simulator.accounts[1:]
    if others:
        print(
            f"local AWS accounts: {', '.join(local.simulator.accounts)}; roles to assume: "
            f"METRICS_AWS_ROLE_ARNS={','.join(reader_role_arn(a) for a in others)}",
            flush=True,
        )
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    local.stop()
