"""What a metric source is (`source.py`), the subjects its series belong to (`subjects.py`),
its fetch log (`fetch_log.py`), and the sources this deployment collects (`registry.py`)."""
