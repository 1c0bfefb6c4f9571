"""The suite's one polling helper: it returns what it waited for, or fails saying what and how
long."""

import itertools

import pytest

from tests.polling import wait_until


def test_wait_until_returns_the_first_truthy_value_of_the_predicate():
    answers = iter([None, 0, "", "ready", "later"])

    assert wait_until(lambda: next(answers), timeout=5, interval=0, message="ready") == "ready"


def test_wait_until_fails_the_test_naming_what_it_waited_for_and_how_long():
    calls = itertools.count()

    with pytest.raises(pytest.fail.Exception) as failure:
        wait_until(lambda: next(calls) < 0, timeout=0.05, interval=0.01, message="never")

    assert str(failure.value) == "timed out after 0.05s waiting until never"
    assert next(calls) > 1


def test_wait_until_builds_a_callable_message_only_when_it_fails():
    built = []

    def message() -> str:
        built.append(True)
        return "the log says done"

    assert wait_until(lambda: True, timeout=1, message=message)
    assert built == []
    with pytest.raises(pytest.fail.Exception, match="waiting until the log says done"):
        wait_until(lambda: False, timeout=0, interval=0, message=message)
