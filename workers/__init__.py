"""Workers: the base worker (claims, heartbeats, state reports) and one module per kind."""
