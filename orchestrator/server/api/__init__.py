"""The REST API (FastAPI). Build it with ``create_app(settings)``."""
