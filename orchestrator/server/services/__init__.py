"""Domain functions. Each takes a SQLAlchemy session and never commits: the caller owns the
transaction (an API request, a background service tick)."""
