"""Stage 5: Plan -> DNS. Knows nothing of probes."""
