"""Container health check: exit 0 when the agent's /healthz answers 200, else 1.

Run by the image's HEALTHCHECK with the image's Python (the slim base has no curl). It reads
the same TRUSTLINE_HTTP_LISTEN as the agent; a wildcard address is asked on loopback. Standard
library only: it starts in a few milliseconds every interval.
"""

import os
import sys
import urllib.request

host, _, port = os.environ.get("TRUSTLINE_HTTP_LISTEN", "127.0.0.1:8080").rpartition(":")
host = host.strip("[]")
host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
url = f"http://[{host}]:{port}/healthz" if ":" in host else f"http://{host}:{port}/healthz"
try:
    with urllib.request.urlopen(url, timeout=2) as resp:
        ok = resp.status == 200
except OSError as exc:
    print(f"trustline health check: {url}: {exc}", file=sys.stderr)
    sys.exit(1)
sys.exit(0 if ok else 1)
