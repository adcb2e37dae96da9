from metrics_pipeline.local_aws.server import main

main()
