"""AMI adapter: the live link to Asterisk's manager interface.

``protocol`` frames bytes into messages, ``client`` owns one TCP session (login, actions,
heartbeat), and ``link`` supervises it (reconnect with backoff, re-sync after a gap), feeds
each event to the call tracker (agent.outcomes.calls) and hands the facts to the handler the
app gives it (agent.outcomes.intake); the AstDB actions it runs are planned by
agent.outbound.astdb. This package translates; it stores nothing and decides nothing.
"""

from agent.ami.link import AmiLink

__all__ = ["AmiLink"]
