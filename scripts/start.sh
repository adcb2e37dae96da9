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
# What the stack writes (Dagster's run databases and logs, which name the accounts) is the
# user's own: folders 0700, files 0600.
umask 077

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
chmod -R go-rwx "$DAGSTER_HOME"  # also what an earlier start left readable
ln -sf "$instance_config" "$DAGSTER_HOME/dagster.yaml"

children=()  # the services, each the leader of its own process group
declare -A reader=()  # the settings another shell needs to read this stack's warehouse
spawn() {  # runs "$@" in the background as a service: see stop()
  # A process group of its own, which everything it starts stays in; SIGINT handled as in a
  # terminal (a script's background commands would start ignoring it).
  .venv/bin/python -c 'import os, signal, sys
os.setpgid(0, 0)
signal.signal(signal.SIGINT, signal.SIG_DFL)
os.execvp(sys.argv[1], sys.argv[1:])' "$@" </dev/null &
  children+=($!)
}
wait_for_banner() {  # until the newest child's log ($1) has a line starting with $2
  for _ in $(seq 1 100); do
    grep -q "^$2" "$1" 2>/dev/null && return 0
    kill -0 "${children[-1]}" 2>/dev/null || { cat "$1" >&2; exit 1; }
    sleep 0.2
  done
}
say() {  # a line for the user, if anyone still reads (a `| tee` stopped by Ctrl-C does not)
  echo "$@" 2>/dev/null || true
}
groups_alive() {  # whether a process of the services' groups is left (not counting zombies)
  [ "${#children[@]}" -gt 0 ] || return 1
  ps -A -o pgid=,stat= | awk -v groups=" ${children[*]} " \
    'index(groups, " " $1 " ") && $2 !~ /^Z/ { alive = 1 } END { exit !alive }'
}
group_alive() {  # whether a process of the service group $1 is left (not counting zombies)
  ps -A -o pgid=,stat= | awk -v group="$1" '$1 == group && $2 !~ /^Z/ { alive = 1 } END { exit !alive }'
}
signal_group() {
  kill "-$1" -- "-$2" 2>/dev/null || kill "-$1" "$2" 2>/dev/null || true
}
signal_groups() {
  local pid
  for pid in "${children[@]}"; do
    signal_group "$1" "$pid"
  done
}
stop() {
  # Nothing may stop the stop: a write to a closed pipe, a second Ctrl-C (it only hurries it).
  trap '' PIPE
  trap 'hurry=1' INT TERM HUP
  trap - EXIT
  hurry=0
  # Each whole group, as Ctrl-C in a terminal would signal a `dagster dev` of its own: the
  # webserver, the daemon, the code servers and the runs' processes stop as Dagster intends.
  # The last started first: the runs Dagster interrupts record how they ended in its run
  # storage and the warehouse before PostgreSQL and S3 stop (its code servers wait for them).
  say
  say "Stopping..."
  local n deadline=$((SECONDS + 60))
  for ((n = ${#children[@]} - 1; n >= 0; n--)); do
    signal_group INT "${children[n]}"
    while group_alive "${children[n]}" && [ "$hurry" = 0 ] && [ "$SECONDS" -lt "$deadline" ]; do
      sleep 0.2
    done
  done
  exec 2>/dev/null  # no "Killed" notice for each service that had to be killed
  for _ in $(seq 1 50); do
    groups_alive || break
    signal_groups KILL
    sleep 0.2
  done
  say "Stopped."
}
trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM
trap 'stop; exit 129' HUP
trap stop EXIT

if [ "$local_aws" = 1 ]; then
  export AWS_ENDPOINT_URL=http://127.0.0.1:$aws_port
  export AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local
  unset AWS_PROFILE AWS_SESSION_TOKEN
  export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1}
  export METRICS_AWS_REGIONS=${METRICS_AWS_REGIONS:-us-east-1,eu-west-1}
  # Two accounts: this one and 222222222222, reached through its role metrics-reader.
  export METRICS_AWS_ROLE_ARNS=${METRICS_AWS_ROLE_ARNS:-arn:aws:iam::222222222222:role/metrics-reader}
  log=$DAGSTER_HOME/local_aws.log
  spawn .venv/bin/python -u -m metrics_pipeline.local_aws --port "$aws_port" --accounts 2 \
    --regions "$METRICS_AWS_REGIONS" ${LOCAL_AWS_ARGS:-} >"$log" 2>&1
  wait_for_banner "$log" "local AWS on"
  grep "^local AWS on" "$log"
fi

if [ "$scale_out" = 1 ]; then
  # A new stack each start: the local AWS keeps its S3 in memory, so a catalog kept from an
  # earlier start would name files that are gone.
  stack=${SCALE_OUT_DIR:-$project/.scale-out}
  pg_port=${POSTGRES_PORT:-5433}
  # Others may pass through it (PostgreSQL runs as another user when started as root).
  rm -rf "$stack" && mkdir -p -m 711 "$stack"
  spawn .venv/bin/python -u -m metrics_pipeline.local_postgres --folder "$stack/postgres" \
    --port "$pg_port" >"$DAGSTER_HOME/postgres.log" 2>&1
  wait_for_banner "$DAGSTER_HOME/postgres.log" "PostgreSQL on"
  # The lake's S3 checks credentials against IAM (the fleet's local AWS does not): the
  # pipeline's keys read and write the lake's prefix, the analysts' only read it.
  spawn .venv/bin/python -u -m metrics_pipeline.local_aws.lake_s3 --port "${LAKE_S3_PORT:-5056}" \
    --bucket metrics-lake --prefix warehouse --env-dir "$stack" >"$DAGSTER_HOME/lake_s3.log" 2>&1
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
  while IFS='=' read -r name value; do reader[$name]=$value; done <"$stack/analyst-s3.env"
  reader[AWS_DEFAULT_REGION]=$AWS_DEFAULT_REGION
  reader[PGPASSFILE]=$stack/postgres/metrics_reader.pgpass
  reader[METRICS_WAREHOUSE]="ducklake:postgres:$catalog user=metrics_reader"
  reader[METRICS_LAKE_DATA_PATH]=$METRICS_LAKE_DATA_PATH
  reader_note="; the lake's read-only database role and S3 keys"
  warehouse_line="Warehouse:   DuckLake $METRICS_WAREHOUSE, data in $METRICS_LAKE_DATA_PATH
  Dagster:     runs and event logs in $DAGSTER_PG_URL"
  history=0  # a new lake each start
else
  # The warehouse the settings name (docs/operations.md): by default a lake on this machine,
  # data/metrics.ducklake and its data folder; the DuckDB file when METRICS_DUCKDB_PATH is set.
  # Read as the pipeline reads them: kind, then the catalog or file, then the data folder.
  chosen=${METRICS_WAREHOUSE:-}${METRICS_DUCKDB_PATH:-}  # empty: the default
  mapfile -t where < <(.venv/bin/python -c 'from metrics_pipeline.settings import StorageSettings
s = StorageSettings.from_env()
print("\n".join([s.lake.attach_path, s.lake.data_path] if s.lake else ["", str(s.duckdb_path)]))')
  if [ -n "${where[0]}" ]; then
    export METRICS_WAREHOUSE=${where[0]} METRICS_LAKE_DATA_PATH=${where[1]}
    catalog=${METRICS_WAREHOUSE#ducklake:}
    warehouse_line="Warehouse:   DuckLake catalog $catalog, data in $METRICS_LAKE_DATA_PATH"
    if [ -e "$catalog" ]; then history=1; else history=0; fi
    earlier=$project/data/metrics.duckdb  # where every warehouse was before the lake
    if [ "$history" = 0 ] && [ -z "$chosen" ] && [ -e "$earlier" ]; then
      echo "Moving the DuckDB warehouse $earlier into the lake (once; the file stays):"
      .venv/bin/metrics-pipeline migrate-to-lake --warehouse "$earlier"
      history=1
    fi
    reader[METRICS_WAREHOUSE]=$METRICS_WAREHOUSE
    reader[METRICS_LAKE_DATA_PATH]=$METRICS_LAKE_DATA_PATH
  else
    warehouse_line="DuckDB file: $METRICS_DUCKDB_PATH"
    if [ -e "$METRICS_DUCKDB_PATH" ]; then history=1; else history=0; fi
    reader[METRICS_DUCKDB_PATH]=$METRICS_DUCKDB_PATH
  fi
fi
# What a reader in another shell needs, to read this stack's warehouse and no other.
reader_env=$DAGSTER_HOME/reader.env
{
  echo "# Read the warehouse of the stack bash scripts/start.sh runs: . $reader_env"
  echo "unset METRICS_WAREHOUSE METRICS_LAKE_DATA_PATH AWS_PROFILE AWS_SESSION_TOKEN \\"
  echo "  AWS_ENDPOINT_URL AWS_ENDPOINT_URL_S3 PGPASSFILE"
  for name in "${!reader[@]}"; do printf 'export %s=%q\n' "$name" "${reader[$name]}"; done
} >"$reader_env"

spawn .venv/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p "$ui_port" >"$DAGSTER_HOME/dagster.log" 2>&1
for _ in $(seq 1 300); do
  curl -sf "http://127.0.0.1:$ui_port/server_info" >/dev/null 2>&1 && break
  kill -0 "${children[-1]}" 2>/dev/null || { tail -50 "$DAGSTER_HOME/dagster.log" >&2; exit 1; }
  sleep 0.5
done

# The dashboard reads as an analyst in another shell would: with this stack's reader settings
# (the read-only role and keys of the scale-out stack), on loopback, without login.
dashboard_port=${DASHBOARD_PORT:-8050}
# Dagster's run records tell it the hours being healed; the scale-out stack's database has no
# read-only role to read them with, so there it does without.
spawn bash -c '. "$0" || exit; if [ "$2" = 1 ]; then unset DAGSTER_HOME; fi
exec .venv/bin/python -u -m metrics_pipeline.dashboard --port "$1"' \
  "$reader_env" "$dashboard_port" "$scale_out" >"$DAGSTER_HOME/dashboard.log" 2>&1
wait_for_banner "$DAGSTER_HOME/dashboard.log" "dashboard on"

interval=${METRICS_FRESH_INTERVAL_MINUTES:-15}
if [ "$interval" = 1 ]; then every="every minute"; else every="every $interval minutes"; fi
cat <<EOT
metrics_pipeline is running.
  Dagster UI:  http://127.0.0.1:$ui_port
  Dashboard:   http://127.0.0.1:$dashboard_port (charts; this machine only, no login)
  $warehouse_line
  Read it:     . $(printf %q "$reader_env") && $(printf %q "$project")/.venv/bin/metrics-pipeline instances
               (from any shell; never blocks collection${reader_note:-})
  Logs:        $DAGSTER_HOME/dagster.log
EOT
if [ "$history" = 1 ]; then
  echo "Collection resumes now: the gap sensor collects the hours missed while it was stopped"
  echo "within minutes; then the fresh schedule collects $every."
else
  echo "The first collection starts now and the gap sensor backfills the last days within minutes;"
  echo "then the fresh schedule collects $every."
fi
echo "Press Ctrl-C to stop."
services=("${children[@]}")  # the stack stops when one of them does
# How much of the look-back window has arrived, on this terminal until it is complete
# (metrics_pipeline/healing/progress.py); stopped with the rest.
spawn .venv/bin/python -u -m metrics_pipeline.healing.progress --while-pid "${children[-1]}"
wait -n "${services[@]}"
