"""The load balancers' DSNs as the Kubernetes API last gave them, kept in the user's cache.

`cluster status` reads the endpoints' addresses from their Services; while the API does not
answer (stopped, frozen, cut off), it still asks the coordinator at the address it had last:
a load balancer's address outlives the API server's hiccup. One small JSON file per API
server, namespace and scope; a cache that cannot be written is only a cache not kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from ... import settings

log = logging.getLogger(__name__)

KEYS = ("coordinator_dsn", "pooler_dsn", "read_dsn")


class AddressBook:
    def __init__(self, server: str, namespace: str, scope: str) -> None:
        tag = hashlib.sha256(server.encode()).hexdigest()[:12]
        self.path = settings.cache_dir() / "kubernetes" / f"{tag}-{namespace}-{scope}.json"

    def load(self) -> dict[str, str | None]:
        """The DSNs last saved (each None where none was)."""
        try:
            saved = json.loads(self.path.read_text())
        except (OSError, ValueError):
            saved = {}
        return {k: saved.get(k) if isinstance(saved.get(k), str) else None for k in KEYS}

    def save(self, dsns: dict[str, str | None]) -> None:
        """Keep ``dsns`` (those known; an unknown one keeps its last value)."""
        kept = self.load()
        merged = {**kept, **{k: v for k, v in dsns.items() if k in KEYS and v}}
        try:
            if merged == kept and self.path.exists():
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(f"{self.path}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(merged, indent=1) + "\n")
            tmp.replace(self.path)
        except OSError as e:
            log.debug("load balancer addresses not kept in %s: %s", self.path, e)


__all__ = ["AddressBook"]
