from metrics_pipeline.local_aws import exit_without_local_extra

exit_without_local_extra("moto", "python -m metrics_pipeline.local_aws")

from metrics_pipeline.local_aws.server import main  # noqa: E402

main()
