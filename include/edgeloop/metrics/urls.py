"""Addresses of the Pushgateway and Prometheus as a spec or connection gives them (``host:port`` or a URL)."""

from __future__ import annotations


def http_url(address: str) -> str:
    """`address` as a URL: ``http://`` is added when it names no scheme."""
    return address if "://" in address else f"http://{address}"
