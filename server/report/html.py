"""The page shell, escaping and the security headers of every server-rendered page."""

from __future__ import annotations

import html
from functools import cache
from pathlib import Path
from string import Template

HERE = Path(__file__).resolve().parent

# No scripts, no external anything: images are data: URIs or same-origin, styles inline.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def esc(value: object) -> str:
    """HTML-escape anything (quotes included); None becomes an empty string."""
    return "" if value is None else html.escape(str(value), quote=True)


@cache
def _shell() -> tuple[Template, str]:
    return (
        Template((HERE / "page.html").read_text(encoding="utf-8")),
        (HERE / "style.css").read_text(encoding="utf-8"),
    )


def page(title: str, body: str, *, subtitle: str = "", footer: str = "", refresh_s: int | None = None) -> str:
    """A whole HTML document; ``body`` and ``footer`` are already-escaped HTML, the rest is text."""
    template, style = _shell()
    refresh = f'<meta http-equiv="refresh" content="{int(refresh_s)}">\n' if refresh_s else ""
    return template.substitute(
        title=esc(title), subtitle=esc(subtitle), style=style, body=body, footer=footer, refresh=refresh
    )
