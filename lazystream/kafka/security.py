"""How lazystream's Kafka clients connect: the one place that turns ``kafka.security`` into client settings.

Every Kafka client — the worker's faust app (its consumer, producer and the topic creation they do), the
ingest stage's consumer and producer, the operations commands' admin clients, readers and producers, and the
testing kit — gets its TLS and SASL settings from :func:`client_security`, so no client can be left on
``PLAINTEXT`` by mistake. faust takes them as ``broker_credentials``
(:meth:`ClientSecurity.faust_credentials`) and hands the same settings to each aiokafka client it makes;
aiokafka clients take :meth:`ClientSecurity.aiokafka_kwargs` (or :func:`client_kwargs`, with the brokers).

A client that the brokers refuse (a wrong password, an untrusted certificate) does not say why: aiokafka
logs the reason on a line of its own and raises "Unable to bootstrap", and faust's worker stops on that with
a traceback. :func:`check_access` connects once as the clients will and raises :class:`KafkaAccessError` with
the reason and the settings to look at, so a worker or a command fails at start with one clear message.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiokafka.conn import create_conn
from aiokafka.errors import (
    IllegalSaslStateError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from aiokafka.protocol.metadata import MetadataRequest

from lazystream.config import ConfigError, KafkaSecuritySettings, KafkaSettings

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT

__all__ = [
    "ClientSecurity",
    "KafkaAccessError",
    "check_access",
    "client_kwargs",
    "client_security",
    "describe_failure",
]

PREFIX = "kafka.security."
PROBE_TIMEOUT_S = 10.0
"""How long :func:`check_access` waits for one broker (connection, TLS handshake, SASL exchange)."""

_AUTH_ERRORS = (SaslAuthenticationFailed, UnsupportedSaslMechanismError, IllegalSaslStateError)


class KafkaAccessError(Exception):
    """The brokers refused this client's TLS handshake or SASL authentication; the message says which
    settings to check. Retrying does not help, unlike a broker that is down."""


@dataclass(frozen=True)
class ClientSecurity:
    """The security of a Kafka client, resolved: files read, the TLS context built, the password known."""

    protocol: str
    ssl_context: ssl.SSLContext | None = None
    sasl_mechanism: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def aiokafka_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``AIOKafkaConsumer``, ``AIOKafkaProducer`` and ``AIOKafkaAdminClient``."""
        kwargs: dict[str, Any] = {"security_protocol": self.protocol}
        if self.ssl_context is not None:
            kwargs["ssl_context"] = self.ssl_context
        if self.sasl_mechanism is not None:
            kwargs.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.username,
                sasl_plain_password=self.password,
            )
        return kwargs

    def faust_credentials(self) -> CredentialsT | None:
        """faust's ``broker_credentials``: faust passes them to its consumer and its producer (which also
        create the app's topics); None for ``PLAINTEXT``."""
        from faust.auth import SASLCredentials, SSLCredentials

        if self.sasl_mechanism is not None:
            return SASLCredentials(
                username=self.username,
                password=self.password,
                ssl_context=self.ssl_context,  # with a context, faust's protocol is SASL_SSL
                mechanism=self.sasl_mechanism,
            )
        if self.ssl_context is not None:
            return SSLCredentials(self.ssl_context)
        return None


def client_security(settings: KafkaSettings | KafkaSecuritySettings) -> ClientSecurity:
    """Resolve ``kafka.security``: read the certificate and password files and build the TLS context.

    Raises :class:`~lazystream.config.ConfigError` naming the setting whose file is missing, unreadable or
    not what it should be.
    """
    security = settings.security if isinstance(settings, KafkaSettings) else settings
    context = _ssl_context(security) if security.tls else None
    if not security.sasl:
        return ClientSecurity(protocol=security.protocol, ssl_context=context)
    return ClientSecurity(
        protocol=security.protocol,
        ssl_context=context,
        sasl_mechanism=security.sasl_mechanism,
        username=security.username,
        password=security.password or _read_password(security),
    )


def client_kwargs(settings: KafkaSettings) -> dict[str, Any]:
    """``bootstrap_servers`` and the security keyword arguments of an aiokafka client."""
    return {"bootstrap_servers": list(settings.servers), **client_security(settings).aiokafka_kwargs()}


def _ssl_context(security: KafkaSecuritySettings) -> ssl.SSLContext:
    ca_file = _readable(security.ca_file, "caFile")
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    except ssl.SSLError as exc:
        raise ConfigError(PREFIX + "caFile", f"{ca_file}: not PEM CA certificates ({exc})") from None
    if not security.check_hostname:
        context.check_hostname = False
    cert_file = _readable(security.cert_file, "certFile")
    if cert_file is not None:
        key_file = _readable(security.key_file, "keyFile")
        try:
            context.load_cert_chain(cert_file, key_file)
        except ssl.SSLError as exc:
            raise ConfigError(
                PREFIX + ("keyFile" if key_file else "certFile"),
                f"the client certificate and key do not load: {exc}",
            ) from None
    return context


def _readable(path: Path | None, key: str) -> str | None:
    if path is None:
        return None
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ConfigError(PREFIX + key, f"cannot read {path}: {exc.strerror or exc}") from None
    return str(path)


def _read_password(security: KafkaSecuritySettings) -> str:
    path = security.password_file
    assert path is not None  # noqa: S101 - KafkaSecuritySettings requires password or passwordFile with SASL
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(PREFIX + "passwordFile", f"cannot read {path}: {reason}") from None
    password = text.removesuffix("\n").removesuffix("\r")
    if not password:
        raise ConfigError(PREFIX + "passwordFile", f"{path} is empty")
    return password


def describe_failure(settings: KafkaSettings, exc: BaseException) -> tuple[str, bool]:
    """What a failed connection attempt means, and whether it is the brokers refusing this client (TLS or
    SASL: retrying cannot help) rather than a broker being unreachable."""
    security = settings.security
    if isinstance(exc, _AUTH_ERRORS):
        return (
            f"SASL authentication failed for user {security.username!r} with {security.sasl_mechanism} "
            f"({exc}); check {PREFIX}username, {PREFIX}password / passwordFile and {PREFIX}saslMechanism",
            True,
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"TLS: the broker's certificate is not trusted ({exc.verify_message or exc}); check "
            f"{PREFIX}caFile (and {PREFIX}checkHostname)",
            True,
        )
    if isinstance(exc, ssl.SSLError):
        return (
            f"TLS handshake failed ({exc}); check that the brokers listen with protocol "
            f"{security.protocol} on these ports ({PREFIX}protocol), and {PREFIX}certFile / keyFile",
            True,
        )
    if isinstance(exc, TimeoutError):
        return "timed out", False
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror, False
    if isinstance(exc, KafkaError) and not security.tls:
        return f"{exc} (a TLS listener? {PREFIX}protocol is {security.protocol})", False
    return f"{type(exc).__name__}: {exc}", False


async def check_access(settings: KafkaSettings, timeout: float = PROBE_TIMEOUT_S) -> list[str]:
    """Connect to the bootstrap brokers one at a time as lazystream's clients do (TLS handshake, SASL
    authentication), until one accepts.

    Raises :class:`KafkaAccessError` when a broker refuses the client (TLS or SASL), and
    :class:`~lazystream.config.ConfigError` when a file of ``kafka.security`` cannot be used. Returns the
    problems of the brokers it could not reach when none answered (an outage, not a matter of settings),
    else an empty list.
    """
    kwargs = client_security(settings).aiokafka_kwargs()
    problems: list[str] = []
    for server in settings.servers:
        host, _, port = server.rpartition(":")
        try:
            conn = await create_conn(
                host.strip("[]"),
                int(port),
                client_id="lazystream-check",
                request_timeout_ms=int(timeout * 1000),
                **kwargs,
            )
        except (TimeoutError, OSError, KafkaError) as exc:
            reason, refused = describe_failure(settings, exc)
            if refused:
                raise KafkaAccessError(f"Kafka broker {server} refused the connection: {reason}") from None
            problems.append(f"{server}: {reason}")
            continue
        try:  # brokers that want SASL answer ApiVersions, then close on the first real request
            await conn.send(MetadataRequest([]))
        except (TimeoutError, KafkaError) as exc:
            if not settings.security.sasl:
                raise KafkaAccessError(
                    f"Kafka broker {server} closed the connection when asked for metadata ({exc}): it may "
                    f"require SASL ({PREFIX}protocol is {settings.security.protocol})"
                ) from None
            problems.append(f"{server}: {describe_failure(settings, exc)[0]}")
            continue
        finally:
            conn.close()
        return []
    return problems
