"""Stream layer: the faust application, its topics, tables and agents (thin wrappers over the domain core)."""
