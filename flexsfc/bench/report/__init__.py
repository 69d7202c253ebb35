"""What a run's JSON results become for readers: Markdown tables and PNG plots."""
