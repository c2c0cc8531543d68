"""The fault matrix of docs/reliability.md, declared next to the tests that prove each row.

A test decorated with ``@scenario(...)`` adds its row; ``test_reliability_doc`` renders the
table and fails if docs/reliability.md differs, so the document cannot drift from the tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

F = TypeVar("F", bound=Callable)


@dataclass(frozen=True)
class Scenario:
    number: str
    situation: str
    expected: str
    asserts: str
    test: str


SCENARIOS: dict[str, Scenario] = {}


def scenario(number: str, situation: str, expected: str, asserts: str) -> Callable[[F], F]:
    def mark(func: F) -> F:
        test = f"tests/{func.__module__}.py::{func.__name__}"
        SCENARIOS[test] = Scenario(number, situation, expected, asserts, test)
        return func

    return mark


def _order(s: Scenario) -> tuple[int, str, str]:
    return (int(s.number) if s.number.isdigit() else 99, s.number, s.test)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render(hostile_inputs: list[str]) -> str:
    rows = [
        "# Reliability: the fault matrix",
        "",
        "Every row is proved by the test named in it, against real files and a real HTTP server on",
        "127.0.0.1 that the test controls. This file is generated from the tests: `make test` fails",
        "when it is out of date, and `THRESHER_WRITE_DOCS=1 make test` rewrites it.",
        "",
        "| # | scenario | expected | the test asserts | test |",
        "|---|---|---|---|---|",
    ]
    for s in sorted(SCENARIOS.values(), key=_order):
        rows.append(f"| {s.number} | {_cell(s.situation)} | {_cell(s.expected)} | {_cell(s.asserts)} | `{s.test}` |")
    rows += ["", "## Hostile inputs tried", ""]
    rows += [f"- {_cell(item)}" for item in hostile_inputs]
    return "\n".join(rows) + "\n"
