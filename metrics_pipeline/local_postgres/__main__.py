from metrics_pipeline.local_postgres.server import main

main()
