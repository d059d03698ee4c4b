"""Upstream faults end to end: the web API and the CLI over real adapters and fake upstreams."""
