"""The OpenAPI document as a readable HTML page (rendered on the server, no JavaScript)."""

from __future__ import annotations

import json
from typing import Any

from server.report.html import esc, page


def _schema_text(schema: dict[str, Any]) -> str:
    return esc(json.dumps(schema, indent=2))


def _operation(path: str, method: str, op: dict[str, Any]) -> str:
    params = "".join(
        f"<li><code>{esc(p['name'])}</code> ({esc(p['in'])}{', required' if p.get('required') else ''})"
        f"{' · ' + esc(p['description']) if p.get('description') else ''}</li>"
        for p in op.get("parameters", [])
    )
    body = ""
    if "requestBody" in op:
        kinds = ", ".join(f"<code>{esc(k)}</code>" for k in op["requestBody"]["content"])
        body = f"<p>Body: {kinds}</p>"
    responses = "".join(
        f"<tr><td><code>{esc(status)}</code></td><td>{esc(r.get('description'))}</td>"
        f"<td>{', '.join(f'<code>{esc(k)}</code>' for k in r.get('content', {}))}</td></tr>"
        for status, r in op.get("responses", {}).items()
    )
    return (
        f'<div class="op" id="{esc(op.get("operationId", ""))}">'
        f'<span class="method">{esc(method.upper())}</span> '
        f"<code>{esc(path)}</code> · {esc(op.get('summary', ''))}"
        f"{'<p>' + esc(op['description']) + '</p>' if op.get('description') else ''}"
        f"{'<ul>' + params + '</ul>' if params else ''}{body}"
        f"<table><thead><tr><th>status</th><th>meaning</th><th>content</th></tr></thead>"
        f"<tbody>{responses}</tbody></table></div>"
    )


def docs_page(doc: dict[str, Any]) -> str:
    """Every operation with its parameters and responses, then every schema."""
    info = doc["info"]
    ops = "".join(
        _operation(path, method, op) for path, item in doc["paths"].items() for method, op in item.items()
    )
    schemas = "".join(
        f'<details id="schema-{esc(name)}"><summary><code>{esc(name)}</code></summary>'
        f"<pre>{_schema_text(schema)}</pre></details>"
        for name, schema in doc["components"]["schemas"].items()
    )
    body = (
        f"<section><h1>{esc(info['title'])} API {esc(info['version'])}</h1>"
        f"<p>{esc(info.get('summary', ''))}</p>"
        f"<p>{esc(info.get('description', ''))}</p>"
        '<p>Machine-readable: <a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1).</p></section>'
        f"<section><h2>Operations</h2>{ops}</section><section><h2>Schemas</h2>{schemas}</section>"
    )
    return page(f"{info['title']} API reference", body, subtitle="API reference")
