"""Declarative automation of the derived assets: the rollups follow their source hours, the
reports run on their crons and after every healing run, and the sensor that evaluates it all
is on from the start."""

from dagster import (
    AssetSelection,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
)

from metrics_pipeline.dagster_runs import HEALING_RUN_TAGS

# Eager, but for every partition, not only the latest: the gap sensor heals old days too.
ON_SOURCE_PARTITIONS_CHANGE = (
    AutomationCondition.eager()
    .without(AutomationCondition.in_latest_time_window())
    .with_label("eager, every partition")
)


# A healing run brings hours a report computed earlier did not see: a new deployment's first
# report is computed from its first minutes, long before its look-back arrives. After each
# healing run the report is computed again (once the report's own run in progress, if any, has
# ended: the condition holds until then), so the last one leaves a report of the whole
# look-back. It does not wait for the fresh runs, which may always be queued or running.
# Only a request of the report settles it, not an update: a report run that started before
# the healing run wrote, and ends in the same tick as that write, did not see it.
AFTER_HEALING_RUNS = (
    AutomationCondition.any_deps_match(
        AutomationCondition.newly_updated()
        & AutomationCondition.executed_with_tags(tag_values=HEALING_RUN_TAGS)
    )
    .since(
        (
            AutomationCondition.newly_requested() | AutomationCondition.initial_evaluation()
        ).with_label("requested")
    )
    .with_label("a healing run updated its inputs")
    & ~AutomationCondition.in_progress()
).with_label("after healing runs")


def on_cron_and_once_inputs_exist(
    cron: str, only_after_input_updates: bool = True, slow_inputs: AssetSelection | None = None
) -> AutomationCondition:
    """On its cron (after its inputs have updated since the previous tick, unless
    `only_after_input_updates` is off), and also as soon as its inputs first exist, so a new
    deployment shows a first report within minutes instead of at the next cron tick, and again
    after healing runs brought history. A first run that failed is not retried before the
    cron. `slow_inputs` (a tier written a day at a time) neither hold back the first run nor
    the cron, though a healing run that updated them still counts."""
    inputs_exist = AutomationCondition.all_deps_match(~AutomationCondition.missing())
    if slow_inputs is not None:
        inputs_exist = inputs_exist.ignore(slow_inputs)
    first_run = (
        AutomationCondition.missing()
        & inputs_exist
        & ~AutomationCondition.in_progress()
        & ~AutomationCondition.execution_failed()
    ).with_label("never materialized, inputs exist")
    on_cron: AutomationCondition
    if only_after_input_updates:
        after_updates = AutomationCondition.on_cron(cron, cron_timezone="UTC")
        on_cron = after_updates if slow_inputs is None else after_updates.ignore(slow_inputs)
    else:
        # Two steps: inferred inside the chain, the tick's key type would be the asset's only,
        # which since_last_handled() (typed for assets and checks) does not accept.
        on_cron = AutomationCondition.cron_tick_passed(cron, cron_timezone="UTC")
        on_cron = on_cron.since_last_handled()
    when = "after input updates" if only_after_input_updates else "whatever happened"
    return (on_cron | first_run | AFTER_HEALING_RUNS).with_label(
        f"on cron {cron} ({when}), once inputs exist, and after healing runs"
    )


derived_assets_automation = AutomationConditionSensorDefinition(
    "derived_assets_automation",
    target=AssetSelection.all(),
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Recomputes the daily tier whenever its days of the hourly tier change, "
        "and runs pipeline_health and rightsizing_report on their crons, once as soon as "
        "their inputs exist, and again after healing runs brought history. Several partitions "
        "of one asset become one backfill run."
    ),
)
