"""End-to-end demonstrations of the pipeline."""
