"""CSV cells that stay text: OWASP CSV injection.

A spreadsheet reads a cell that begins with `=`, `+`, `-` or `@` (or a tab or carriage return
before one) as a formula, so an answer quoting a web page's `=HYPERLINK(...)` would become a
live link in the customer's Excel. Every cell written from an answer goes through
`safe_cell`; columns copied from the customer's own file are written as read (they are theirs,
and a round trip must not change them). `enrichment-client` keeps its own copy of this
function (it does not depend on this package): change both together.
"""

from __future__ import annotations

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: object) -> str:
    """`value` as a cell's text, prefixed with `'` if a spreadsheet would read it as a
    formula."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text
