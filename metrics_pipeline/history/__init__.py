"""Long history: CloudWatch's own hourly statistics, kept after CloudWatch forgets them."""
