"""Backend connectors: one module per AI voice backend."""
