"""Running the collector: daemon state, status and metrics."""
