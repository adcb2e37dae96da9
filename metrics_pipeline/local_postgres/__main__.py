from metrics_pipeline.local_aws import exit_without_local_extra

exit_without_local_extra("pgserver", "python -m metrics_pipeline.local_postgres")

from metrics_pipeline.local_postgres.server import main  # noqa: E402

main()
