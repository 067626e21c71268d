"""The built-in tools: `calculator` and `current_time`. Nothing to install, nothing on the network,
so an agent that acts works offline (`make run`).

`calculator` parses arithmetic with simpleeval (a maintained AST-walking evaluator, never `eval`)
restricted to numbers and arithmetic operators: no names, no functions, no attribute access.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import simpleeval

from ..vocabulary import ToolStatus
from . import ToolOutcome, ToolSpec

ARITHMETIC = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: simpleeval.safe_power,  # refuses exponents that would take forever
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}
MAX_EXPRESSION = 500


def calculator(arguments: dict[str, Any]) -> ToolOutcome:
    expression = str(arguments["expression"]).strip()
    if len(expression) > MAX_EXPRESSION:
        return ToolOutcome(ToolStatus.ERROR, f"The expression is longer than {MAX_EXPRESSION} characters.")
    evaluator = simpleeval.SimpleEval(operators=ARITHMETIC, functions={}, names={})
    try:
        value = evaluator.eval(expression)
    except ZeroDivisionError:
        return ToolOutcome(ToolStatus.ERROR, f"{expression} divides by zero.")
    except (simpleeval.InvalidExpression, SyntaxError, TypeError, ValueError, OverflowError) as exc:
        return ToolOutcome(ToolStatus.ERROR, f"Cannot calculate {expression!r}: {exc}")
    if not isinstance(value, int | float) or isinstance(value, bool):
        return ToolOutcome(ToolStatus.ERROR, f"Cannot calculate {expression!r}: only arithmetic on numbers.")
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = int(value)
    return ToolOutcome(ToolStatus.OK, f"{value:g}" if isinstance(value, float) else str(value))


def current_time(arguments: dict[str, Any]) -> ToolOutcome:
    name = arguments.get("timezone") or "UTC"
    try:
        zone = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ToolOutcome(ToolStatus.ERROR, f"Unknown time zone {name!r}; use an IANA name such as Europe/Paris.")
    now = datetime.now(UTC).astimezone(zone)
    return ToolOutcome(ToolStatus.OK, f"{now.isoformat(timespec='seconds')} ({name}, {now:%A})")


BUILTIN_TOOLS: dict[str, tuple[ToolSpec, Callable[[dict[str, Any]], ToolOutcome]]] = {
    "calculator": (
        ToolSpec(
            "calculator",
            "Evaluate an arithmetic expression exactly: numbers, + - * / // % ** and parentheses.",
            {
                "type": "object",
                "properties": {"expression": {"type": "string", "description": "For example (2 + 3) * 4.5"}},
                "required": ["expression"],
                "additionalProperties": False,
            },
        ),
        calculator,
    ),
    "current_time": (
        ToolSpec(
            "current_time",
            "The current date and time, in a time zone (UTC when none is given).",
            {
                "type": "object",
                "properties": {"timezone": {"type": "string", "description": "An IANA name such as Europe/Paris"}},
                "additionalProperties": False,
            },
        ),
        current_time,
    ),
}
