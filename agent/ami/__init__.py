"""AMI adapter: the live link to Asterisk's manager interface.

``protocol`` frames bytes into messages, ``client`` owns one TCP session (login, actions,
heartbeat), ``calls`` turns events into call outcomes, recording hand-offs and spam reports
without I/O, ``repo`` holds the SQL for outcomes and answer rates, and ``link`` supervises it
all (reconnect, re-sync, AstDB fallbacks). This package translates; policy stays in services.
"""

from agent.ami.link import AmiLink

__all__ = ["AmiLink"]
