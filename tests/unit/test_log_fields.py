"""No log call names a field the logging module keeps for itself: `extra={"name": ...}` raises
KeyError when the record is made, that is only when the level lets the line through (a
production INFO, never a test at WARNING)."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[2] / "src" / "reporun"
RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def extra_keys() -> list[tuple[str, int, str]]:
    found = []
    for path in SOURCE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            for keyword in node.keywords:
                if keyword.arg == "extra" and isinstance(keyword.value, ast.Dict):
                    for key in keyword.value.keys:
                        if isinstance(key, ast.Constant) and isinstance(key.value, str):
                            found.append((str(path.relative_to(SOURCE)), node.lineno, key.value))
    return found


def test_log_calls_use_fields_of_their_own() -> None:
    keys = extra_keys()
    assert len(keys) > 50  # the walk finds the log calls
    clashes = [entry for entry in keys if entry[2] in RESERVED]
    assert clashes == []
