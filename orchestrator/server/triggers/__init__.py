"""Triggers fire: automations evaluated against events (``evaluation`` the pure rules,
``buckets`` / ``cursor`` their state in the database, ``evaluator`` one pass, ``firing`` and
``actions`` what a firing does, ``calls`` outgoing webhooks, ``service`` the loop)."""
