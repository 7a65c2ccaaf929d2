"""Tables of the theory demos: one list of row dicts → ``<stem>.md`` and ``<stem>.csv``."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path


def _cell(value: object) -> str:
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return text.replace("|", "\\|")


def markdown_table(rows: Sequence[Mapping[str, object]]) -> str:
    """A GitHub-flavoured Markdown table with the keys of the first row as columns."""
    columns = list(rows[0])
    lines = ["| " + " | ".join(map(_cell, columns)) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_table(
    rows: Sequence[Mapping[str, object]],
    stem: Path,
    title: str,
    notes: Iterable[str] = (),
) -> None:
    """Write ``stem.md`` (title, table, notes) and ``stem.csv`` (full precision)."""
    if not rows:
        raise ValueError(f"no rows to write to {stem}")
    text = [f"# {title}", "", markdown_table(rows), ""]
    text += [f"- {note}" for note in notes]
    stem.with_suffix(".md").write_text("\n".join(text).rstrip() + "\n")
    with stem.with_suffix(".csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
