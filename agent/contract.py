"""The dialplan contract: every route, argument and channel variable shared with Asterisk.

This module is the single source of truth. ``dialplan/*.conf`` must use exactly these names
(tests/test_dialplan_contract.py checks it). Names here never change once landed.
"""

from __future__ import annotations

# FastAGI routes (the path of agi://host:port/<route>).
ROUTE_OUTBOUND = "outbound"
ROUTE_INBOUND = "inbound"

# Channel variables the agent sets for the outbound route.
CALLERID_NUM = "CALLERID(num)"
CALLERID_NAME = "CALLERID(name)"
VAR_STATUS = "TRUSTLINE_STATUS"
VAR_POOL = "TRUSTLINE_POOL"
VAR_REASON = "TRUSTLINE_REASON"

# TRUSTLINE_STATUS values.
STATUS_OK = "ok"
STATUS_FALLBACK = "fallback"
STATUS_EXHAUSTED = "exhausted"
STATUS_REFUSED = "refused"
STATUS_ERROR = "error"
# Compliance refusals: the call must not be dialled (agent/compliance).
STATUS_OUTSIDE_WINDOW = "outside_window"
STATUS_ATTEMPTS_EXCEEDED = "attempts_exceeded"
STATUS_OPTED_OUT = "opted_out"
VAR_NEXT_WINDOW = "TRUSTLINE_NEXT_WINDOW"  # ISO 8601 in the callee's zone, with outside_window
# AMI UserEvent the IVR raises when a patient opts out: UserEvent(OptOut,Number: ...,Purpose: ...)
USEREVENT_OPTOUT = "OptOut"

# Channel variables the agent sets for the inbound route.
VAR_VERDICT = "TRUSTLINE_VERDICT"
VAR_SCORE = "TRUSTLINE_SCORE"
VAR_REASONS = "TRUSTLINE_REASONS"

VERDICT_ALLOW = "allow"
VERDICT_CHALLENGE = "challenge"
VERDICT_VOICEMAIL = "voicemail"
VERDICT_BLOCK = "block"
VERDICTS = (VERDICT_ALLOW, VERDICT_CHALLENGE, VERDICT_VOICEMAIL, VERDICT_BLOCK)

# One round trip instead of five: when the script path asks ``?answer=one``, the agent sets
# only TRUSTLINE_ANSWER, these fields joined by ANSWER_SEPARATOR, and the subroutine splits
# it with ${CUT(TRUSTLINE_ANSWER,|,N)}. The caller name is last (read as field "5-"), so a
# '|' in it is kept; the other fields are code words, E.164 numbers or pool names (no '|').
# One SET VARIABLE with a quoted value is parsed by Asterisk like every other (res_agi.c
# parse_args): no comma or quote in a value is read as syntax, unlike EXEC MSet's arguments.
VAR_ANSWER = "TRUSTLINE_ANSWER"
ANSWER_SEPARATOR = "|"
QUERY_ANSWER, QUERY_ANSWER_ONE = "answer", "one"
OUTBOUND_ANSWER_FIELDS = (VAR_STATUS, VAR_POOL, VAR_REASON, CALLERID_NUM, CALLERID_NAME)
INBOUND_ANSWER_FIELDS = (VAR_VERDICT, VAR_SCORE, VAR_REASONS)

# Variables the dialplan owns and the agent only documents (set by the dialplan itself).
DIALPLAN_GLOBAL_FALLBACK_CID = "TRUSTLINE_FALLBACK_CID"
# [globals] the admin may set; each subroutine has the documented default.
DIALPLAN_GLOBAL_AGI_URL = "TRUSTLINE_AGI_URL"  # agi://127.0.0.1:4573
DIALPLAN_GLOBAL_BIN = "TRUSTLINE_BIN"  # /usr/bin/trustline
DIALPLAN_GLOBAL_DATA_DIR = "TRUSTLINE_DATA_DIR"  # /var/lib/trustline
DIALPLAN_DEFAULT_AGI_URL = "agi://127.0.0.1:4573"
DIALPLAN_OWNED = frozenset(
    {
        DIALPLAN_GLOBAL_FALLBACK_CID,
        DIALPLAN_GLOBAL_AGI_URL,
        DIALPLAN_GLOBAL_BIN,
        DIALPLAN_GLOBAL_DATA_DIR,
    }
)

ROUTES = frozenset({ROUTE_OUTBOUND, ROUTE_INBOUND})

# AstDB family/key the agent writes (AMI DBPut) so the dialplan has a fallback caller ID
# per purpose while the agent is unreachable: ${DB(trustline/fallback/<purpose>)}.
ASTDB_FAMILY = "trustline"
ASTDB_FALLBACK_PREFIX = "fallback"

# Variables the agent SETS for each route: the dialplan may read only these (plus its own).
OUTBOUND_SETS = (CALLERID_NUM, CALLERID_NAME, VAR_STATUS, VAR_POOL, VAR_REASON)
INBOUND_SETS = (VAR_VERDICT, VAR_SCORE, VAR_REASONS)
AGENT_SET_VARIABLES = frozenset(
    {
        VAR_NEXT_WINDOW,
        VAR_ANSWER,
        CALLERID_NUM,
        CALLERID_NAME,
        VAR_STATUS,
        VAR_POOL,
        VAR_REASON,
        VAR_VERDICT,
        VAR_SCORE,
        VAR_REASONS,
    }
)
