"""``kafka.security``: the settings' checks and redaction, and the one builder of every client's TLS and SASL
settings (aiokafka keyword arguments, faust's broker credentials), without a broker. The same settings
against the broker's SASL_SSL listener are in ``tests/integration/test_kafka_security.py``."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka.errors import SaslAuthenticationFailed
from click.testing import CliRunner

from lazystream.cli import main
from lazystream.config import ConfigError, ConfigWarning, KafkaSettings, env_var_names, load_config
from lazystream.kafka.security import (
    check_access,
    client_kwargs,
    client_security,
    describe_failure,
)
from tests.fixtures.servers import free_port

pytestmark = pytest.mark.filterwarnings("error::lazystream.config.ConfigWarning")

P = "LAZYSTREAM_KAFKA_SECURITY_"
SASL_SSL = {f"{P}PROTOCOL": "SASL_SSL", f"{P}USERNAME": "lazystream"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, a client certificate it signs with its key, a key of something else, a password file."""
    d = tmp_path_factory.mktemp("pki")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
            "-keyout", "ca.key", "-out", "ca.crt")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=client", "-keyout", "client.key",
            "-out", "client.csr")  # fmt: skip
    openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "1", "-out", "client.crt")  # fmt: skip
    openssl("genrsa", "-out", "other.key", "2048")
    (d / "password").write_text("from-the-file\n")
    (d / "empty").write_text("\n")
    (d / "not-pem").write_text("hello\n")
    names = ("ca.crt", "client.crt", "client.key", "other.key", "password", "empty", "not-pem")
    return {name.replace(".crt", "").replace(".", "-"): d / name for name in names}


def load(env: dict[str, str], text: str | None = None, tmp_path: Path | None = None) -> KafkaSettings:
    path = None
    if text is not None:
        assert tmp_path is not None
        path = tmp_path / "lazystream.yaml"
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    return load_config(path, env).kafka


# --- the settings ------------------------------------------------------------------------------------------


def test_the_default_is_plaintext_and_every_setting_has_its_variable() -> None:
    security = load({}).security
    assert (security.protocol, security.sasl, security.tls) == ("PLAINTEXT", False, False)
    assert security.sasl_mechanism == "SCRAM-SHA-512"
    names = env_var_names()
    for key, var in {
        "protocol": "PROTOCOL",
        "caFile": "CA_FILE",
        "certFile": "CERT_FILE",
        "keyFile": "KEY_FILE",
        "checkHostname": "CHECK_HOSTNAME",
        "saslMechanism": "SASL_MECHANISM",
        "username": "USERNAME",
        "password": "PASSWORD",
        "passwordFile": "PASSWORD_FILE",
    }.items():
        assert names[f"kafka.security.{key}"] == f"LAZYSTREAM_KAFKA_SECURITY_{var}"


def test_settings_from_the_file(tmp_path: Path, pki: dict[str, Path]) -> None:
    kafka = load(
        {},
        f"""
        kafka:
          bootstrap: kafka-0:9093
          security:
            protocol: SASL_SSL
            caFile: {pki["ca"]}
            saslMechanism: SCRAM-SHA-256
            username: lazystream
            passwordFile: {pki["password"]}
        """,
        tmp_path,
    )
    security = kafka.security
    assert (security.protocol, security.sasl, security.tls) == ("SASL_SSL", True, True)
    assert (security.ca_file, security.password_file) == (pki["ca"], pki["password"])
    assert security.sasl_mechanism == "SCRAM-SHA-256"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {f"{P}PROTOCOL": "SASL_SSL"},
            "kafka.security.username: is required with protocol SASL_SSL",
        ),
        (
            {**SASL_SSL, f"{P}PROTOCOL": "SASL_PLAINTEXT"},
            "kafka.security.passwordFile: a password (password or passwordFile) is required with protocol "
            "SASL_PLAINTEXT",
        ),
        (
            {f"{P}PROTOCOL": "TLS"},
            "LAZYSTREAM_KAFKA_SECURITY_PROTOCOL: must be one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL, "
            "got string 'TLS'",
        ),
        (
            {
                **SASL_SSL,
                f"{P}PASSWORD": "x",
                f"{P}SASL_MECHANISM": "MD5",
            },
            "LAZYSTREAM_KAFKA_SECURITY_SASL_MECHANISM: must be one of SCRAM-SHA-256, SCRAM-SHA-512, PLAIN",
        ),
        (
            {f"{P}PROTOCOL": "SSL", f"{P}KEY_FILE": "/k.pem"},
            "kafka.security.certFile: is required with keyFile",
        ),
        (
            {f"{P}CHECK_HOSTNAME": "perhaps"},
            "LAZYSTREAM_KAFKA_SECURITY_CHECK_HOSTNAME: 'perhaps' is not a boolean",
        ),
    ],
)
def test_invalid_combinations_fail_naming_the_setting(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(env)
    assert str(caught.value).startswith(message), str(caught.value)


def test_a_file_error_names_the_file_and_line(tmp_path: Path) -> None:
    text = """
    kafka:
      security:
        protocol: SASL_SSL
        passwordFile: /run/secrets/kafka
    """
    with pytest.raises(ConfigError, match=r"^kafka.security.username: is required .*lazystream.yaml:2\)$"):
        load({}, text, tmp_path)


@pytest.mark.parametrize(
    ("env", "warning"),
    [
        (
            {f"{P}USERNAME": "u"},
            "LAZYSTREAM_KAFKA_SECURITY_USERNAME: has no effect with protocol PLAINTEXT (no SASL)",
        ),
        (
            {f"{P}PASSWORD_FILE": "/p"},
            "LAZYSTREAM_KAFKA_SECURITY_PASSWORD_FILE: has no effect with protocol PLAINTEXT (no SASL)",
        ),
        (
            {**SASL_SSL, f"{P}PROTOCOL": "SASL_PLAINTEXT",
             f"{P}PASSWORD": "p", f"{P}CA_FILE": "/ca.pem"},
            "LAZYSTREAM_KAFKA_SECURITY_CA_FILE: has no effect with protocol SASL_PLAINTEXT (no TLS)",
        ),
        (
            {**SASL_SSL, f"{P}PASSWORD": "p", f"{P}PASSWORD_FILE": "/p"},
            "LAZYSTREAM_KAFKA_SECURITY_PASSWORD_FILE: ignored: password is set as well, and wins",
        ),
    ],
)  # fmt: skip
def test_settings_that_do_nothing_are_warned_about(env: dict[str, str], warning: str) -> None:
    with pytest.warns(ConfigWarning) as caught:
        load(env)
    assert [str(w.message) for w in caught] == [warning]


# --- the password is never shown ---------------------------------------------------------------------------

SECRET = "pa55-w0rd-in-the-env"  # noqa: S105 - a made-up password that must not be shown
DIRECT = "direct"


def test_config_show_redacts_the_password(tmp_path: Path, pki: dict[str, Path]) -> None:
    env = {
        **SASL_SSL,
        f"{P}PASSWORD": SECRET,
        f"{P}CA_FILE": str(pki["ca"]),
    }
    result = CliRunner().invoke(main, ["config", "show"], env=env)
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output
    shown = yaml.safe_load(result.stdout)["kafka"]["security"]
    assert shown == {
        "protocol": "SASL_SSL",
        "caFile": str(pki["ca"]),
        "certFile": None,
        "keyFile": None,
        "checkHostname": True,
        "saslMechanism": "SCRAM-SHA-512",
        "username": "lazystream",
        "password": "<redacted>",
        "passwordFile": None,
    }
    config = load_config(None, env)
    assert SECRET not in repr(config)
    assert config.to_dict(secrets=True)["kafka"]["security"]["password"] == SECRET
    # with the secret, the dict loads back to the same configuration
    path = tmp_path / "shown.yaml"
    path.write_text(yaml.safe_dump(config.to_dict(secrets=True)))
    assert load_config(path, {}) == config
    # an unset password stays empty, not "<redacted>"
    assert load_config(None, {}).to_dict()["kafka"]["security"]["password"] == ""


# --- the builder -------------------------------------------------------------------------------------------


def settings(**security: Any) -> KafkaSettings:
    return load_config(None, {}, {f"kafka.security.{k}": v for k, v in security.items()}).kafka


def test_plaintext_clients() -> None:
    built = client_security(settings())
    assert built.aiokafka_kwargs() == {"security_protocol": "PLAINTEXT"}
    assert built.faust_credentials() is None
    assert client_kwargs(load_config(None, {"LAZYSTREAM_KAFKA_BOOTSTRAP": "a:1, b:2"}).kafka) == {
        "bootstrap_servers": ["a:1", "b:2"],
        "security_protocol": "PLAINTEXT",
    }


def test_sasl_ssl_clients(pki: dict[str, Path]) -> None:
    kafka = settings(
        protocol="SASL_SSL",
        caFile=pki["ca"],
        certFile=pki["client"],
        keyFile=pki["client-key"],
        username="lazystream",
        passwordFile=pki["password"],
    )
    built = client_security(kafka)
    kwargs = built.aiokafka_kwargs()
    context = kwargs.pop("ssl_context")
    assert kwargs == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "lazystream",
        "sasl_plain_password": "from-the-file",  # one trailing newline dropped
    }
    assert isinstance(context, ssl.SSLContext)
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, True)
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "test-ca"),),)]
    assert "from-the-file" not in repr(built)

    from faust.auth import SASLCredentials
    from faust.types.auth import AuthProtocol

    credentials = built.faust_credentials()
    assert isinstance(credentials, SASLCredentials)
    assert (credentials.protocol, credentials.mechanism.value) == (AuthProtocol.SASL_SSL, "SCRAM-SHA-512")
    assert (credentials.username, credentials.password) == ("lazystream", "from-the-file")
    assert credentials.ssl_context is context


def test_the_password_setting_wins_over_the_file(pki: dict[str, Path]) -> None:
    with pytest.warns(ConfigWarning, match="ignored: password is set as well"):
        kafka = settings(
            protocol="SASL_PLAINTEXT",
            username="u",
            password=DIRECT,
            passwordFile=pki["password"],
        )
    kwargs = client_security(kafka).aiokafka_kwargs()
    assert kwargs["sasl_plain_password"] == DIRECT
    assert kwargs["security_protocol"] == "SASL_PLAINTEXT"
    assert "ssl_context" not in kwargs


def test_ssl_only_clients(pki: dict[str, Path]) -> None:
    from faust.auth import SSLCredentials

    built = client_security(settings(protocol="SSL", caFile=pki["ca"], checkHostname=False))
    assert built.ssl_context is not None
    assert built.ssl_context.check_hostname is False
    assert built.aiokafka_kwargs() == {"security_protocol": "SSL", "ssl_context": built.ssl_context}
    credentials = built.faust_credentials()
    assert isinstance(credentials, SSLCredentials)
    assert credentials.context is built.ssl_context
    # without caFile: the system's trusted CAs
    assert client_security(settings(protocol="SSL")).ssl_context is not None


@pytest.mark.parametrize(
    ("security", "message"),
    [
        ({"protocol": "SSL", "caFile": "/nowhere/ca.crt"},
         "kafka.security.caFile: cannot read /nowhere/ca.crt"),
        ({"protocol": "SSL", "caFile": "not-pem"},
         "kafka.security.caFile: {not-pem}: not PEM CA certificates"),
        ({"protocol": "SSL", "certFile": "client", "keyFile": "other-key"},
         "kafka.security.keyFile: the client certificate and key do not load"),
        ({"protocol": "SSL", "certFile": "client"},
         "kafka.security.certFile: the client certificate and key"),
        ({"protocol": "SASL_SSL", "username": "u", "passwordFile": "empty"},
         "kafka.security.passwordFile: {empty} is empty"),
        ({"protocol": "SASL_SSL", "username": "u", "passwordFile": "/nowhere/p"},
         "kafka.security.passwordFile: cannot read /nowhere/p: No such file or directory"),
    ],
)  # fmt: skip
def test_unusable_files_fail_naming_the_setting(
    pki: dict[str, Path], security: dict[str, str], message: str
) -> None:
    resolved = {k: pki.get(v, v) for k, v in security.items()}
    kafka = settings(**resolved)
    with pytest.raises(ConfigError) as caught:
        client_security(kafka)
    assert str(caught.value).startswith(message.format_map({k: str(v) for k, v in pki.items()}))


def test_faust_hands_the_credentials_to_its_consumer_and_producer(tmp_path: Path) -> None:
    """faust creates its topics with its consumer's or producer's client, so these two are all its clients."""
    from lazystream.stream.app import create_app

    config = load_config(
        None,
        {**SASL_SSL, f"{P}PROTOCOL": "SASL_PLAINTEXT",
         f"{P}PASSWORD": "p", "LAZYSTREAM_TABLES_DATA_DIR": str(tmp_path)},
    )  # fmt: skip
    app = create_app(config)

    async def clients() -> list[Any]:
        consumer = app.consumer._thread._create_worker_consumer(app.transport)
        producer = app.producer._new_producer()
        try:
            return [consumer._client, producer.client]
        finally:
            await consumer.stop()
            await producer.stop()

    for client in asyncio.run(clients()):
        assert client._security_protocol == "SASL_PLAINTEXT"
        assert (client._sasl_mechanism, client._sasl_plain_username) == ("SCRAM-SHA-512", "lazystream")
        assert client._sasl_plain_password == "p"  # noqa: S105 - the made-up one above


# --- checking access at start -----------------------------------------------------------------------------


def test_refusals_are_told_apart_from_outages() -> None:
    kafka = load({**SASL_SSL, f"{P}PASSWORD": "p"})
    reason, refused = describe_failure(kafka, SaslAuthenticationFailed("invalid credentials"))
    assert refused
    assert reason.startswith("SASL authentication failed for user 'lazystream' with SCRAM-SHA-512")
    assert "kafka.security.password" in reason
    untrusted = ssl.SSLCertVerificationError("certificate verify failed")
    untrusted.verify_message = "unable to get local issuer certificate"
    reason, refused = describe_failure(kafka, untrusted)
    assert refused
    assert reason.startswith("TLS: the broker's certificate is not trusted (unable to get local issuer")
    assert describe_failure(kafka, ConnectionRefusedError(111, "Connection refused")) == (
        "Connection refused",
        False,
    )
    assert describe_failure(kafka, TimeoutError()) == ("timed out", False)


def test_an_unreachable_broker_is_an_outage_not_a_refusal() -> None:
    port = free_port()
    kafka = load(
        {
            **SASL_SSL,
            f"{P}PASSWORD": "p",
            "LAZYSTREAM_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}",
        }
    )
    assert asyncio.run(check_access(kafka, timeout=5)) == [f"127.0.0.1:{port}: Connect call failed"
                                                          f" ('127.0.0.1', {port})"]  # fmt: skip
