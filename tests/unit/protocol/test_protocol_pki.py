import asyncio
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from stackwright.protocol.pki import (
    CertificateAuthority,
    CertificateError,
    EnrollmentRefused,
    EnrollmentTokens,
    FileTokenStore,
    MemoryTokenStore,
    load_cert,
    new_key_and_csr,
    split_token,
    token_digest,
)


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def ca(tmp_path):
    return CertificateAuthority.load_or_create(tmp_path / "ca")


def test_ca_is_created_once_with_a_private_key(tmp_path, ca):
    assert mode(tmp_path / "ca" / "ca.key") == 0o600
    assert mode(tmp_path / "ca") == 0o700
    again = CertificateAuthority.load_or_create(tmp_path / "ca")
    assert again.fingerprint == ca.fingerprint
    constraints = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca


def test_ca_refuses_half_a_pair(tmp_path, ca):
    (tmp_path / "ca" / "ca.key").unlink()
    with pytest.raises(CertificateError, match="holds only one of ca.key and ca.crt"):
        CertificateAuthority.load_or_create(tmp_path / "ca")
    with pytest.raises(CertificateError, match="holds no complete CA"):
        CertificateAuthority.load(tmp_path / "ca")


def test_ca_refuses_a_key_that_does_not_match(tmp_path, ca):
    other = CertificateAuthority.load_or_create(tmp_path / "other")
    (tmp_path / "ca" / "ca.key").write_bytes((tmp_path / "other" / "ca.key").read_bytes())
    with pytest.raises(CertificateError, match="does not belong to"):
        CertificateAuthority.load(tmp_path / "ca")
    assert other.fingerprint != ca.fingerprint


def test_client_certificate_from_csr(ca):
    key_pem, csr_pem = new_key_and_csr("ignored-subject")
    cert_pem = ca.sign_csr(csr_pem, "host-guid-1")
    assert ca.verify(cert_pem) == "host-guid-1"
    cert = load_cert(cert_pem)
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert [u.dotted_string for u in usage] == ["1.3.6.1.5.5.7.3.2"]  # clientAuth only


def test_foreign_certificate_does_not_verify(tmp_path, ca):
    other = CertificateAuthority.load_or_create(tmp_path / "other")
    _key_pem, cert_pem = other.issue_client_cert("intruder")
    with pytest.raises(CertificateError, match="was not issued by CA"):
        ca.verify(cert_pem)


def test_bad_csrs_are_refused(ca):
    with pytest.raises(CertificateError, match="not a valid PEM certificate signing request"):
        ca.sign_csr("garbage", "g")
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(weak, hashes.SHA256())
    with pytest.raises(CertificateError, match="RSA of 2048"):
        ca.sign_csr(csr.public_bytes(serialization.Encoding.PEM), "g")


def test_server_certificate_is_reused_until_names_change(tmp_path, ca):
    cert_path, key_path = ca.ensure_server_cert(["engine.example"])
    first = cert_path.read_bytes()
    assert mode(key_path) == 0o600
    assert ca.ensure_server_cert(["engine.example"])[0].read_bytes() == first
    assert ca.ensure_server_cert(["engine.example", "10.1.1.1"])[0].read_bytes() != first
    san = load_cert(cert_path.read_bytes()).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "engine.example" in san.get_values_for_type(x509.DNSName)


def test_tokens_are_single_use_and_pin_the_ca(ca):
    tokens = EnrollmentTokens(MemoryTokenStore(), ca)

    async def scenario():
        token = await tokens.issue(ttl=60)
        secret, fp = split_token(token)
        assert fp == ca.fingerprint
        await tokens.redeem(secret, "g1")
        with pytest.raises(EnrollmentRefused, match="unknown or was already used"):
            await tokens.redeem(secret, "g1")
        with pytest.raises(EnrollmentRefused, match="unknown or was already used"):
            await tokens.redeem("made-up", "g1")

    asyncio.run(scenario())


def test_expired_and_host_bound_tokens(ca):
    now = [1000.0]
    tokens = EnrollmentTokens(MemoryTokenStore(), ca, clock=lambda: now[0])

    async def scenario():
        expired, _ca_fingerprint = split_token(await tokens.issue(ttl=10))
        now[0] += 11
        with pytest.raises(EnrollmentRefused, match="has expired"):
            await tokens.redeem(expired, "g1")
        bound, _ca_fingerprint = split_token(await tokens.issue(ttl=10, guid="g2"))
        with pytest.raises(EnrollmentRefused, match="issued for host guid g2, not g1"):
            await tokens.redeem(bound, "g1")

    asyncio.run(scenario())


def test_file_store_keeps_only_digests(tmp_path, ca):
    path = tmp_path / "tokens.json"
    tokens = EnrollmentTokens(FileTokenStore(path), ca)

    async def scenario():
        secret, _ca_fingerprint = split_token(await tokens.issue(ttl=60, note="kvm1"))
        text = path.read_text()
        assert secret not in text and token_digest(secret) in text
        assert mode(path) == 0o600
        # a second store on the same file sees the token, and consuming it is final
        record = await EnrollmentTokens(FileTokenStore(path), ca).redeem(secret, "g")
        assert record.note == "kvm1"
        with pytest.raises(EnrollmentRefused):
            await tokens.redeem(secret, "g")

    asyncio.run(scenario())


@pytest.mark.parametrize("token", ["", "abc", "abc.def", "abc." + "g" * 64, "." + "a" * 64])
def test_malformed_tokens(token):
    with pytest.raises(ValueError, match="enrollment token is malformed"):
        split_token(token)


def test_small_tls_buffers_carry_large_messages_intact(tmp_path, ca, monkeypatch):
    """With 32 KiB read buffers, a message many times that size crosses a TLS connection whole."""
    import asyncio.sslproto
    import os

    from stackwright.protocol.pki import TLS_READ_BUFFER, client_context, server_context, use_small_tls_buffers

    monkeypatch.setattr(asyncio.sslproto.SSLProtocol, "max_size", asyncio.sslproto.SSLProtocol.max_size)
    use_small_tls_buffers()
    assert asyncio.sslproto.SSLProtocol.max_size == TLS_READ_BUFFER
    cert, key = ca.ensure_server_cert(["127.0.0.1"])
    agent_key, agent_cert = ca.issue_client_cert("host-1")
    (tmp_path / "agent.key").write_bytes(agent_key)
    (tmp_path / "agent.pem").write_bytes(agent_cert)
    payload = os.urandom(3 * 1024 * 1024 + 17)

    async def exchange():
        async def echo(reader, writer):
            writer.write(await reader.readexactly(len(payload)))
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server_context(cert, key, ca.cert_path))
        port = server.sockets[0].getsockname()[1]
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=client_context(ca.cert_path, tmp_path / "agent.pem", tmp_path / "agent.key"))
            writer.write(payload)
            await writer.drain()
            echoed = await reader.readexactly(len(payload))
            writer.close()
            return echoed
        finally:
            server.close()
            await server.wait_closed()

    assert asyncio.run(exchange()) == payload
