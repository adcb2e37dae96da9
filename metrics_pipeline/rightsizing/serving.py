"""Which instances a rightsizing report judges: those the latest discovery listed (a deleted
one keeps an older last_seen) and that serve something (a stopped one has no load to size it
by). Shared by the 3-day report and its longer windows."""

from metrics_pipeline.warehouse.schema import INSTANCES_TABLE

# Statuses of an instance that serves nothing: there is no load to size it by.
NOT_SERVING = ("stopped", "stopping", "deleting")

# A query's `serving` CTE (parameter $not_serving: list(NOT_SERVING)).
SERVING_CTE = f"""
        serving AS (
            SELECT account_id, region, instance_id, instance_class, engine, cluster_id,
                   cluster_role
            FROM {INSTANCES_TABLE}
            WHERE last_seen = (SELECT max(last_seen) FROM {INSTANCES_TABLE})
              AND coalesce(status, '') NOT IN (SELECT unnest($not_serving))
        )"""
