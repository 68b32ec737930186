"""The change model, without AWS: tag diffs and what `up` applies from them, how sensitive
values are hidden, long values shortened, and what a plan counts as changed, destructive or
blocked."""

from __future__ import annotations

import json

from mlflow_ecs.changes import (
    CREATE,
    DELETE,
    NOOP,
    REPLACE,
    SENSITIVE,
    UPDATE,
    Change,
    Diff,
    Plan,
    change,
    short_diff,
    tag_diffs,
    tags_of,
    text,
)


def test_tag_diffs_name_each_tag_to_set_change_or_remove_and_ignore_aws_keys() -> None:
    want = {"team": "ml", "env": "prod", "mlflow-ecs:stack": "s"}
    have = {"team": "data", "mlflow-ecs:stack": "s", "old": "x", "aws:cloudformation:stack": "y"}

    diffs = tag_diffs(want, have)

    assert diffs == [
        Diff("tag env", None, "prod"),
        Diff("tag team", "data", "ml"),
        Diff("tag old", "x", None),
    ]


def test_what_up_applies_is_read_back_from_the_tag_diffs() -> None:
    c = change(
        "log group", "g", [Diff("retention days", 7, 30), *tag_diffs({"a": "1"}, {"b": "2"})]
    )

    assert tags_of(c) == ({"a": "1"}, ["b"])
    assert c.action == UPDATE
    assert c.summary() == "retention days, tag a, tag b"


def test_no_diff_is_unchanged_and_created_wins_over_diffs() -> None:
    assert change("x", "n", []).action == NOOP
    assert not change("x", "n", []).changed
    assert change("x", "n", [Diff("a", 1, 2)], created=True).action == CREATE


def test_a_sensitive_value_is_never_in_the_json_or_the_text() -> None:
    d = Diff("value", "old-secret-value", "new-secret-value", sensitive=True)
    c = Change("secret", "s/x", UPDATE, (d,))

    dumped = json.dumps(c.to_dict())

    assert "secret-value" not in dumped
    assert d.to_dict()["old"] == d.to_dict()["new"] == SENSITIVE
    assert d.shown(d.old) == SENSITIVE
    assert Diff("value", None, "v", sensitive=True).to_dict()["old"] is None


def test_short_diff_keeps_only_the_words_that_differ_with_context() -> None:
    old = "exec mlflow server --host 127.0.0.1 --port 5000 " + "--a b " * 20 + "--workers 2"
    new = old.replace("--workers 2", "--workers 4")

    shown_old, shown_new = short_diff(old, new)

    assert shown_old == "--workers 2"
    assert shown_new == "--workers 4"
    assert short_diff("a b", "a c") == ("a b", "a c")  # short values stay whole


def test_text_renders_none_bools_lists_and_documents_on_one_line() -> None:
    assert text(None) == "(none)"
    assert text(True) == "true"
    assert text(["b", "a"]) == "b, a"
    assert text({"b": 1, "a": [1]}) == '{"a": [1], "b": 1}'


def _plan(*changes: Change) -> Plan:
    return Plan("s", "eu-west-1", list(changes))


def test_a_plan_of_unchanged_resources_is_not_changed_and_says_so() -> None:
    found = _plan(Change("vpc", "v"), Change("bucket", "b"))

    assert not found.changed
    assert found.exists
    assert "No changes" in found.summary()


def test_a_plan_of_creations_only_is_a_stack_that_does_not_exist() -> None:
    found = _plan(Change("vpc", "v", CREATE), Change("bucket", "b", CREATE))

    assert found.changed and not found.exists
    assert found.summary() == "Plan: 2 to create; 0 unchanged."


def test_only_replacements_and_deletions_need_a_confirmation_and_blocked_ones_are_counted() -> None:
    blocked = Change("vpc", "v", REPLACE, blocked="put the old cidr back")
    found = _plan(
        Change("log group", "g", UPDATE),
        Change("load balancer", "a", REPLACE),
        Change("listener", "443", DELETE),
        blocked,
    )

    assert [c.name for c in found.destructive] == ["a", "443"]
    assert found.blocked == [blocked]
    assert "1 cannot be made by `up`" in found.summary()
    doc = found.to_dict()
    assert doc["summary"] == {"create": 0, "update": 1, "replace": 2, "delete": 1, "unchanged": 0}
    assert doc["blocked"] == 1
