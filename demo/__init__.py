"""``make demo``: the import DAG end to end on embedded defaults (no Docker, no cloud)."""
