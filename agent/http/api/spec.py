"""The endpoint table, in the order /api/v1/openapi.json lists it, and the OpenAPI document
generated from it (the routes are built from the same table, so the two cannot drift)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from agent.http.api import admin, alerts, contact, numbers, pools, recordings, screening, stats
from agent.http.api.base import PREFIX, Endpoint, ErrorOut

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("GET", "/numbers", "read", "Numbers: state, used today / cap", numbers.NumbersOut,
             numbers.numbers),
    Endpoint("GET", "/pools", "read", "Pools with capacity and answer rates", pools.PoolsOut,
             pools.pools),
    Endpoint(
        "GET", "/stats", "read", "Answer rates per day, as `trustline stats`", stats.StatsOut,
        stats.stats, query=("days", "from", "to", "pool", "by_number"),
    ),
    Endpoint("GET", "/alerts", "read", "Alert incidents", alerts.AlertsOut, alerts.alerts,
             query=("open",)),
    Endpoint("POST", "/alerts/{id}/ack", "act", "Acknowledge an alert", alerts.AckOut,
             alerts.ack),
    Endpoint("POST", "/reports", "act", "Report spam against a caller ID", numbers.ReportOut,
             numbers.report, body=numbers.ReportIn),
    Endpoint("POST", "/announce", "act",
             "Pin the caller ID of a coming call to its callee; optionally queue the SMS",
             contact.AnnounceOut, contact.announce, body=contact.AnnounceIn),
    Endpoint("POST", "/numbers/{number}/reinstate", "act", "End a quarantine or rest now",
             numbers.ReinstateOut, numbers.reinstate),
    Endpoint("GET", "/screening/lists/{kind}", "read", "A block or allow list",
             screening.ListOut, screening.show),
    Endpoint("POST", "/screening/lists/{kind}", "act", "Add to a block or allow list",
             screening.ListEditOut, screening.add, body=screening.ListAddIn),
    Endpoint("DELETE", "/screening/lists/{kind}/{id}", "act", "Remove a list entry by id",
             screening.ListEditOut, screening.remove),
    Endpoint("GET", "/recordings", "recordings", "Sealed recordings", recordings.RecordingsOut,
             recordings.recordings),
    Endpoint("POST", "/recordings/{id}/verify", "recordings", "Authenticate one recording",
             recordings.VerifyOut, recordings.verify),
    Endpoint("POST", "/recordings/{id}/decrypt", "recordings",
             "Stream one recording's audio (audited, with a reason)", None, recordings.decrypt,
             body=recordings.DecryptIn),
    Endpoint("GET", "/audit", "audit", "Export the admin audit", admin.AuditOut, admin.audit,
             query=("since",)),
    Endpoint("GET", "/tokens", "tokens", "Tokens (no secrets)", admin.TokensOut, admin.tokens),
    Endpoint("POST", "/tokens", "tokens", "Create a token (the secret is shown once)",
             admin.TokenCreatedOut, admin.token_create, body=admin.TokenCreateIn),
    Endpoint("POST", "/tokens/{name}/revoke", "tokens", "Revoke a name's live token",
             admin.RevokeOut, admin.token_revoke),
)  # fmt: skip


def _operation(ep: Endpoint) -> dict[str, Any]:
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}
    ok: dict[str, Any] = (
        {"content": {"audio/wav": {"schema": {"type": "string", "format": "binary"}}}}
        if ep.response is None
        else {"content": {"application/json": {"schema": _ref(ep.response)}}}
    )
    op: dict[str, Any] = {
        "summary": ep.summary,
        "description": f"Needs a token whose role has the {ep.permission!r} permission.",
        "security": [{"bearer": []}],
        "responses": {
            "200": {"description": "OK", **ok},
            "400": {"description": "Bad request", "content": error},
            "401": {"description": "No valid token", "content": error},
            "403": {"description": "The token's role may not do this", "content": error},
        },
    }
    params = [
        {"name": p[1:-1], "in": "path", "required": True, "schema": {"type": "string"}}
        for p in ep.path.split("/")
        if p.startswith("{")
    ] + [{"name": q, "in": "query", "schema": {"type": "string"}} for q in ep.query]
    if params:
        op["parameters"] = params
    if ep.body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(ep.body)}},
        }
    return op


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def openapi() -> dict[str, Any]:
    models: set[type[BaseModel]] = {ErrorOut}
    for ep in ENDPOINTS:
        models |= {m for m in (ep.body, ep.response) if m is not None}
    ordered = sorted(models, key=lambda m: m.__name__)
    _, schema = models_json_schema(
        [(m, "validation" if m.__name__.endswith("In") else "serialization") for m in ordered],
        ref_template="#/components/schemas/{model}",
    )
    paths: dict[str, dict[str, Any]] = {}
    for ep in ENDPOINTS:
        paths.setdefault(PREFIX + ep.path, {})[ep.method.lower()] = _operation(ep)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Trustline admin API", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": schema.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
