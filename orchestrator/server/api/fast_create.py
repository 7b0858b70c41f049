"""The fast way's first name, kept for its importers: ``api/fast_routes.py`` serves the create-run
route and the run path's other routes of its table."""

from orchestrator.server.api.fast_routes import FastRoutes as FastCreate
from orchestrator.server.api.fast_routes import Hop

__all__ = ["FastCreate", "Hop"]
