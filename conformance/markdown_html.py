"""HTML for people from the conformance statements' markdown: exactly the constructs ``conformance.dicom``
emits (ATX headings, paragraphs, ``-`` lists, pipe tables, inline code and bold), every text escaped."""

from __future__ import annotations

import re
from html import escape

_INLINE = re.compile(r"`([^`]+)`|\*\*([^*]+)\*\*")


def inline(text: str) -> str:
    """Escaped text with ``code`` and **bold** spans."""
    out: list[str] = []
    last = 0
    for match in _INLINE.finditer(text):
        out.append(escape(text[last : match.start()]))
        code, bold = match.groups()
        out.append(f"<code>{escape(code)}</code>" if code is not None else f"<strong>{escape(bold)}</strong>")
        last = match.end()
    out.append(escape(text[last:]))
    return "".join(out)


def _cells(row: str) -> list[str]:
    return [cell.strip() for cell in row.strip().strip("|").split("|")]


def _table(rows: list[str]) -> str:
    head, body = _cells(rows[0]), [_cells(r) for r in rows[2:]]
    thead = "".join(f"<th>{inline(c)}</th>" for c in head)
    tbody = "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in body)
    return f"<table><thead><tr>{thead}</tr></thead><tbody>{tbody}</tbody></table>"


def _block(lines: list[str]) -> str:
    first = lines[0]
    if heading := re.match(r"(#{1,6}) (.*)", first):
        level = len(heading.group(1))
        return f"<h{level}>{inline(heading.group(2))}</h{level}>" + (_block(lines[1:]) if lines[1:] else "")
    if first.startswith("|") and len(lines) > 1 and lines[1].startswith("|---"):
        return _table(lines)
    if first.startswith("- "):
        items = "".join(f"<li>{inline(line[2:])}</li>" for line in lines if line.startswith("- "))
        return f"<ul>{items}</ul>"
    return f"<p>{inline(' '.join(lines))}</p>"


def to_html(markdown: str) -> str:
    """The body HTML of a markdown text; blocks are separated by blank lines."""
    blocks: list[list[str]] = [[]]
    for line in markdown.splitlines():
        if line.strip():
            blocks[-1].append(line)
        elif blocks[-1]:
            blocks.append([])
    return "\n".join(_block(block) for block in blocks if block)
