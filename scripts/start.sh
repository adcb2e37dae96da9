#!/usr/bin/env bash
# One command to run metrics_pipeline: installs it into .venv if needed, then starts the
# local AWS (a simulated RDS fleet), the Dagster webserver and the daemon.
#
#   bash scripts/start.sh              # on the local AWS, no account needed
#   bash scripts/start.sh --real-aws   # on your AWS account (boto3's usual credentials)
#   bash scripts/start.sh --scale-out  # the scale-out stack, on one machine: Dagster on a
#                                      # local PostgreSQL, the warehouse a DuckLake (catalog in
#                                      # that PostgreSQL, Parquet files in the local AWS's S3)
#
# Ctrl-C stops everything. Settings come from the environment (see docs/operations.md).
set -euo pipefail
# Job control: each service runs in its own process group with normal signal handling
# (a non-interactive shell would start them ignoring SIGINT, and Dagster maps SIGTERM to it).
set -m
cd "$(dirname "$0")/.."
project=$PWD

local_aws=1
scale_out=0
case "${1:-}" in
  "") ;;
  --real-aws) local_aws=0 ;;
  --scale-out) scale_out=1 ;;
  -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "start.sh: unknown option '$1' (expected --real-aws, --scale-out or nothing)" >&2
     exit 2 ;;
esac

bash scripts/install.sh

ui_port=${DAGSTER_PORT:-3000}
aws_port=${LOCAL_AWS_PORT:-5055}
if [ "$scale_out" = 1 ]; then
  export DAGSTER_HOME=${DAGSTER_HOME:-$project/.dagster-scale-out}
  instance_config=$project/deploy/dagster.yaml
else
  export DAGSTER_HOME=${DAGSTER_HOME:-$project/.dagster}
  instance_config=$project/dagster.yaml
fi
mkdir -p "$DAGSTER_HOME"
ln -sf "$instance_config" "$DAGSTER_HOME/dagster.yaml"
export METRICS_DUCKDB_PATH=${METRICS_DUCKDB_PATH:-$project/data/metrics.duckdb}

children=()
descendants() {  # every process below this script (or below $1), with the ones below them
  local pid
  for pid in $(pgrep -P "${1:-$$}"); do
    echo "$pid"
    descendants "$pid"
  done
}
wait_for_banner() {  # until the newest child's log ($1) has a line starting with $2
  for _ in $(seq 1 100); do
    grep -q "^$2" "$1" 2>/dev/null && return 0
    kill -0 "${children[-1]}" 2>/dev/null || { cat "$1" >&2; exit 1; }
    sleep 0.2
  done
}
stop() {
  trap - INT TERM EXIT
  echo
  echo "Stopping..."
  # Remembered before and while stopping: a run's process outlives the daemon that started it
  # for a moment, and is then no longer below this script.
  known=$(descendants)
  for pid in "${children[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 60); do
    known="$known $(descendants)"
    alive=0
    for pid in $known; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.5
  done
  for pid in $known; do kill -KILL "$pid" 2>/dev/null || true; done
  echo "Stopped."
}
trap stop INT TERM EXIT

if [ "$local_aws" = 1 ]; then
  export AWS_ENDPOINT_URL=http://127.0.0.1:$aws_port
  export AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local
  unset AWS_PROFILE AWS_SESSION_TOKEN
  export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1}
  export METRICS_AWS_REGIONS=${METRICS_AWS_REGIONS:-us-east-1,eu-west-1}
  # Two accounts: this one and 222222222222, reached through its role metrics-reader.
  export METRICS_AWS_ROLE_ARNS=${METRICS_AWS_ROLE_ARNS:-arn:aws:iam::222222222222:role/metrics-reader}
  log=$DAGSTER_HOME/local_aws.log
  .venv/bin/python -u -m metrics_pipeline.local_aws --port "$aws_port" --accounts 2 \
    --regions "$METRICS_AWS_REGIONS" ${LOCAL_AWS_ARGS:-} >"$log" 2>&1 &
  children+=($!)
  wait_for_banner "$log" "local AWS on"
  grep "^local AWS on" "$log"
fi

if [ "$scale_out" = 1 ]; then
  # A new stack each start: the local AWS keeps its S3 in memory, so a catalog kept from an
  # earlier start would name files that are gone.
  stack=${SCALE_OUT_DIR:-$project/.scale-out}
  pg_port=${POSTGRES_PORT:-5433}
  rm -rf "$stack" && mkdir -p "$stack"
  .venv/bin/python -u -m metrics_pipeline.local_postgres --folder "$stack/postgres" \
    --port "$pg_port" >"$DAGSTER_HOME/postgres.log" 2>&1 &
  children+=($!)
  wait_for_banner "$DAGSTER_HOME/postgres.log" "PostgreSQL on"
  # The lake's S3 checks credentials against IAM (the fleet's local AWS does not): the
  # pipeline's keys read and write the lake's prefix, the analysts' only read it.
  .venv/bin/python -u -m metrics_pipeline.local_aws.lake_s3 --port "${LAKE_S3_PORT:-5056}" \
    --bucket metrics-lake --prefix warehouse --env-dir "$stack" >"$DAGSTER_HOME/lake_s3.log" 2>&1 &
  children+=($!)
  wait_for_banner "$DAGSTER_HOME/lake_s3.log" "lake S3 on"
  set -a
  . "$stack/pipeline-s3.env"  # AWS_ENDPOINT_URL_S3 and the pipeline's keys
  set +a
  # The database roles' passwords are in files libpq reads (PGPASSFILE), never in a URL.
  export PGPASSFILE=$stack/postgres/metrics_writer.pgpass
  export DAGSTER_PG_URL=postgresql+psycopg2://metrics_writer@127.0.0.1:$pg_port/dagster
  catalog="host=127.0.0.1 port=$pg_port dbname=lake"
  export METRICS_WAREHOUSE="ducklake:postgres:$catalog user=metrics_writer"
  export METRICS_LAKE_DATA_PATH=s3://metrics-lake/warehouse/
  # What an analyst needs to read the lake, read-only: its role, its keys.
  analyst_env=$stack/analyst.env
  (
    umask 077
    cat "$stack/analyst-s3.env" - >"$analyst_env" <<EOT
AWS_DEFAULT_REGION=$AWS_DEFAULT_REGION
PGPASSFILE="$stack/postgres/metrics_reader.pgpass"
METRICS_WAREHOUSE="ducklake:postgres:$catalog user=metrics_reader"
METRICS_LAKE_DATA_PATH=$METRICS_LAKE_DATA_PATH
EOT
  )
  warehouse_line="Warehouse:   DuckLake $METRICS_WAREHOUSE, data in $METRICS_LAKE_DATA_PATH
  Dagster:     runs and event logs in $DAGSTER_PG_URL"
else
  warehouse_line="DuckDB file: $METRICS_DUCKDB_PATH"
fi

.venv/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p "$ui_port" >"$DAGSTER_HOME/dagster.log" 2>&1 &
children+=($!)
for _ in $(seq 1 300); do
  curl -sf "http://127.0.0.1:$ui_port/server_info" >/dev/null 2>&1 && break
  kill -0 "${children[-1]}" 2>/dev/null || { tail -50 "$DAGSTER_HOME/dagster.log" >&2; exit 1; }
  sleep 0.5
done

interval=${METRICS_FRESH_INTERVAL_MINUTES:-15}
if [ "$interval" = 1 ]; then every="every minute"; else every="every $interval minutes"; fi
cat <<EOT
metrics_pipeline is running.
  Dagster UI:  http://127.0.0.1:$ui_port
  $warehouse_line
  Read it:     $project/.venv/bin/metrics-pipeline --help (never blocks collection)${analyst_env:+
  Analysts:    set -a; . $analyst_env; set +a  (read-only database role and S3 keys)}
  Logs:        $DAGSTER_HOME/dagster.log
The first collection starts now and the gap sensor backfills the last days within minutes;
then the fresh schedule collects $every.
Press Ctrl-C to stop.
EOT
# How much of the look-back window has arrived, on this terminal until it is complete
# (metrics_pipeline/healing/progress.py); it ends with dagster dev.
.venv/bin/python -u -m metrics_pipeline.healing.progress --while-pid "${children[-1]}" &
disown
wait -n "${children[@]}"
