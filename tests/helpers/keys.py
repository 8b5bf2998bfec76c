"""Keys for tests: an operator key that signs orders and enrolments, the keyring devices trust, device keys."""

from __future__ import annotations

from edgeloop.contract.keys import Keyring, Signer

OPERATOR = Signer.from_seed(b"edgeloop tests: operator")
TRUSTED = Keyring.of([OPERATOR.public])
INTRUDER = Signer.from_seed(b"edgeloop tests: someone else")  # a valid Ed25519 key nobody trusts


def device_key(pipeline: str, device_id: str) -> Signer:
    """The key the fleet harness gives a device of `pipeline` under OPERATOR (see FleetSimulator)."""
    return OPERATOR.derive(f"{pipeline}/{device_id}")
