"""The owner resource of automations a deployment owns (``schemas.automations``), apart from the
automations' models: a deployment's writes ask whether it owns any without loading them."""

import uuid


def deployment_owner(deployment_id: uuid.UUID) -> str:
    """The owner resource of a deployment's automations."""
    return f"orchestrator.deployment.{deployment_id}"
