"""What AstDB must hold for the dialplan's fallback caller IDs, planned without a socket."""

from __future__ import annotations

from agent.contract import ASTDB_FALLBACK_FAMILY, ASTDB_FALLBACK_INDEX_KEY, ASTDB_FAMILY
from agent.outbound.astdb import AstDbAction, FallbackSync, plan_fallbacks

INDEX = (ASTDB_FAMILY, ASTDB_FALLBACK_INDEX_KEY)


def test_first_run_writes_the_index_around_the_fallbacks() -> None:
    plan = plan_fallbacks({"reminder": "+33142000001", "recall": "+33142000002"}, None)
    assert plan.actions == [
        AstDbAction("DBPut", *INDEX, "recall,reminder"),
        AstDbAction("DBPut", ASTDB_FALLBACK_FAMILY, "recall", "+33142000002"),
        AstDbAction("DBPut", ASTDB_FALLBACK_FAMILY, "reminder", "+33142000001"),
        AstDbAction("DBPut", *INDEX, "recall,reminder"),
    ]
    assert plan.summary == "AstDB fallbacks written for 2 purposes, 0 stale removed"


def test_stale_purposes_are_deleted_after_the_index_lists_them() -> None:
    plan = plan_fallbacks({"reminder": "+33142000001"}, "reminder,retired,")
    assert [(a.name, a.key, a.value) for a in plan.actions] == [
        ("DBPut", ASTDB_FALLBACK_INDEX_KEY, "reminder,retired"),  # a crash here still knows
        ("DBPut", "reminder", "+33142000001"),
        ("DBDel", "retired", None),
        ("DBPut", ASTDB_FALLBACK_INDEX_KEY, "reminder"),
    ]
    assert [a.required for a in plan.actions] == [True, True, False, True]
    assert plan.actions[2].fields() == {"Family": ASTDB_FALLBACK_FAMILY, "Key": "retired"}


def test_a_purpose_that_is_not_a_plain_key_is_never_written() -> None:
    sync = FallbackSync(lambda: {"re minder": "+33142000001", "a/b": "+33142000002"})
    plan = sync.plan("")
    assert [(a.name, a.key, a.value) for a in plan.actions] == [
        ("DBPut", ASTDB_FALLBACK_INDEX_KEY, ""),
        ("DBPut", ASTDB_FALLBACK_INDEX_KEY, ""),
    ]
    assert sync.index == INDEX
