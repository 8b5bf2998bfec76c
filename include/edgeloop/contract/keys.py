"""Ed25519 keys of the control path: who may order devices, and which device said what.

- The **signing key** (private) signs assignments and device-registry records. It lives
  with the publishers only: an Airflow connection (`edgeloop_signing`, the key in its
  password), a Kubernetes Secret mounted as `EDGELOOP_SIGNING_KEY`, or a file.
- **Trusted keys** (public) are what devices hold: one or more, so a new key can be
  added to every device before orders are signed with it, and the old key retired after.
- A **device key** (private) is created on the device at enrolment and never leaves it;
  its public half is registered in the pipeline's device registry. Heartbeats, error
  reports and twin updates carry the device's signature in a Kafka header.

A key is written as PEM (PKCS#8 private, SubjectPublicKeyInfo public) or as 64 hex
digits of its raw 32 bytes. A key id is the first 16 hex digits of the SHA-256 of the
raw public key, so nobody has to keep ids and keys in step by hand.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIGNATURE_PREFIX = "ed25519:"
SIGNING_KEY_ENV = "EDGELOOP_SIGNING_KEY"
TRUSTED_KEYS_ENV = "EDGELOOP_TRUSTED_KEYS"
SIGNATURE_HEADER = "edgeloop-signature"  # on device reports: "<key id>:<base64 signature>"

_HEX_KEY = re.compile(r"^[0-9a-fA-F]{64}$")
_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z ]+)-----.+?-----END \1-----", re.S)
KEY_ID_RE = re.compile(r"^[0-9a-f]{16}$")
# Signatures that verified, by (key id, SHA-256 of signature + signed bytes): a gate that re-reads a window of
# 10,000 devices' heartbeats every few seconds checks each once (~95 us an Ed25519 verification, ~1 us a lookup).
_VERIFIED: dict[tuple[str, bytes], None] = {}
_VERIFIED_MAX = 200_000


class BadKey(ValueError):
    """A key that cannot be read; the message says where it came from."""


class BadSignature(ValueError):
    """A signature that does not verify, or names a key that is not trusted; `reason` says which."""


def _raw_public(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id_of(public: Ed25519PublicKey) -> str:
    return hashlib.sha256(_raw_public(public)).hexdigest()[:16]


def public_hex(public: Ed25519PublicKey) -> str:
    return _raw_public(public).hex()


def public_from_hex(text: str) -> Ed25519PublicKey:
    if not _HEX_KEY.match(text.strip()):
        raise BadKey("a public key must be 64 hex digits (its raw 32 bytes)")
    return Ed25519PublicKey.from_public_bytes(bytes.fromhex(text.strip()))


@dataclass(frozen=True)
class Signer:
    """A private Ed25519 key with its id."""

    private: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> Signer:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Signer:
        """A key derived from any bytes (the fleet harness gives each simulated device a stable key this way)."""
        return cls(Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed).digest()))

    @classmethod
    def from_text(cls, text: str, where: str) -> Signer:
        text = text.strip()
        if _HEX_KEY.match(text):
            return cls(Ed25519PrivateKey.from_private_bytes(bytes.fromhex(text)))
        try:
            key = serialization.load_pem_private_key(text.encode(), password=None)
        except (ValueError, TypeError) as exc:
            raise BadKey(f"{where}: not an Ed25519 private key in PEM or 64 hex digits ({exc})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise BadKey(f"{where}: the PEM key is not an Ed25519 key")
        return cls(key)

    def derive(self, label: str) -> Signer:
        """A key of its own for `label`, derived from this one (the fleet harness's devices: stable across runs,
        unknown to anyone without this key)."""
        raw = self.private.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        return Signer.from_seed(raw + b"/device/" + label.encode())

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    @property
    def key_id(self) -> str:
        return key_id_of(self.public)

    def sign(self, data: bytes) -> str:
        """`ed25519:<base64 signature>` of `data`."""
        return SIGNATURE_PREFIX + base64.b64encode(self.private.sign(data)).decode()

    def private_pem(self) -> bytes:
        return self.private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def public_pem(self) -> bytes:
        return self.public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True)
class Keyring:
    """The public keys a verifier trusts, by key id."""

    keys: Mapping[str, Ed25519PublicKey] = field(default_factory=dict)

    @classmethod
    def of(cls, publics: Iterable[Ed25519PublicKey]) -> Keyring:
        return cls({key_id_of(p): p for p in publics})

    @classmethod
    def from_text(cls, text: str, where: str) -> Keyring:
        """Keys from PEM public-key blocks and/or 64-hex raw keys separated by commas or whitespace."""
        publics: list[Ed25519PublicKey] = []
        for block in _PEM_BLOCK.finditer(text):
            try:
                key = serialization.load_pem_public_key(block.group(0).encode())
            except ValueError as exc:
                raise BadKey(f"{where}: a PEM block is not a public key ({exc})") from None
            if not isinstance(key, Ed25519PublicKey):
                raise BadKey(f"{where}: a PEM public key is not an Ed25519 key")
            publics.append(key)
        rest = _PEM_BLOCK.sub(" ", text)
        for word in re.split(r"[\s,]+", rest.strip()):
            if not word:
                continue
            try:
                publics.append(public_from_hex(word))
            except BadKey:
                raise BadKey(f"{where}: {word[:20]!r} is neither a PEM block nor 64 hex digits") from None
        if not publics:
            raise BadKey(f"{where}: no public key")
        return cls.of(publics)

    @property
    def ids(self) -> list[str]:
        return sorted(self.keys)

    def hex_keys(self) -> list[str]:
        """Every key as 64 hex digits, in key-id order (what `from_text` reads back; for task-to-trigger hand-offs)."""
        return [public_hex(self.keys[i]) for i in self.ids]

    def pem(self) -> bytes:
        """Every key as a PEM public-key block, in key-id order (a trusted-keys file)."""
        return b"".join(
            self.keys[i].public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            for i in self.ids
        )

    def verify(self, key_id: object, signature: object, data: bytes) -> None:
        """Raise BadSignature unless `signature` is `key_id`'s Ed25519 signature of `data`."""
        if not isinstance(key_id, str) or not key_id:
            raise BadSignature("key_id: missing")
        public = self.keys.get(key_id)
        if public is None:
            raise BadSignature(f"key_id: {key_id[:32]!r} is not a trusted key (trusted: {self.ids})")
        if not isinstance(signature, str) or not signature.startswith(SIGNATURE_PREFIX):
            raise BadSignature(f"signature: missing or not {SIGNATURE_PREFIX}<base64>")
        try:
            raw = base64.b64decode(signature[len(SIGNATURE_PREFIX) :], validate=True)
        except (binascii.Error, ValueError):
            raise BadSignature("signature: not base64") from None
        memo = (key_id, hashlib.sha256(raw + data).digest())
        if memo in _VERIFIED:  # a reader polling the same topic sees the same reports again and again
            return
        try:
            public.verify(raw, data)
        except InvalidSignature:
            raise BadSignature(f"signature: does not verify with key {key_id}") from None
        if len(_VERIFIED) >= _VERIFIED_MAX:
            for old in list(itertools.islice(_VERIFIED, _VERIFIED_MAX // 2)):
                del _VERIFIED[old]
        _VERIFIED[memo] = None


def read_key_text(*, env_name: str | None, file: str | None, environ: Mapping[str, str], what: str) -> tuple[str, str]:
    """The text of a key from a file (preferred) or an environment variable, and where it came from."""
    if file:
        try:
            return Path(file).read_text(), file
        except OSError as exc:
            raise BadKey(f"{what}: cannot read {file}: {exc.strerror}") from None
    if env_name and environ.get(env_name, "").strip():
        return environ[env_name], f"${env_name}"
    raise BadKey(f"{what}: neither a file nor ${env_name} gives one")


def signer_from_env(environ: Mapping[str, str]) -> Signer:
    """The signing key from $EDGELOOP_SIGNING_KEY (a Kubernetes Secret or the service's environment)."""
    text = environ.get(SIGNING_KEY_ENV, "").strip()
    if not text:
        raise BadKey(f"${SIGNING_KEY_ENV} is not set: orders cannot be signed without the signing key")
    return Signer.from_text(text, f"${SIGNING_KEY_ENV}")


def trusted_from_env(environ: Mapping[str, str], signer: Signer | None = None) -> Keyring:
    """The keys a cloud-side verifier trusts: $EDGELOOP_TRUSTED_KEYS, and the public half of the signing key
    (`signer`, or $EDGELOOP_SIGNING_KEY when set)."""
    keys: dict[str, Ed25519PublicKey] = {}
    text = environ.get(TRUSTED_KEYS_ENV, "").strip()
    if text:
        keys.update(Keyring.from_text(text, f"${TRUSTED_KEYS_ENV}").keys)
    if signer is None and environ.get(SIGNING_KEY_ENV, "").strip():
        signer = signer_from_env(environ)
    if signer is not None:
        keys[signer.key_id] = signer.public
    if not keys:
        raise BadKey(f"no trusted key: set ${TRUSTED_KEYS_ENV} (public keys) or ${SIGNING_KEY_ENV}")
    return Keyring(keys)
