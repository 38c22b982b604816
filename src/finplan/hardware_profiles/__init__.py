"""Profiles and model cards on disk: schemas, load, save, validate.

A hardware profile (``finplan.profile/1``) says what each block and exit of one model costs
on one device; a model card (``finplan.model/1``) says what the planner needs of a model,
independent of devices. Both are plain dicts once loaded; this package validates them once,
at the boundary, so that the planner and the runtime can trust them.
"""
from finplan.hardware_profiles.store import (
    card_from_profile,
    load_card,
    load_profile,
    save_card,
    save_profile,
    schema_document,
    validate_card,
    validate_plan_schema,
    validate_profile,
)

__all__ = [
    "card_from_profile", "load_card", "load_profile", "save_card", "save_profile",
    "schema_document", "validate_card", "validate_plan_schema", "validate_profile",
]
