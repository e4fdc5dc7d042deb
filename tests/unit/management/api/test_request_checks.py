"""What every request goes through before its command: credentials, signature encoding, secrets."""

from urllib.parse import quote

import pytest
from cryptography.fernet import Fernet, InvalidToken

from stackwright.management.api.execute import credentials
from stackwright.management.api.signing import encode_value, sign, verify
from stackwright.management.persistence.crypto import SecretBox


def test_credentials_are_found_in_any_case_and_the_first_spelling_counts():
    raw = {"command": "listZones", "apiKey": "k1", "APIKEY": "k2", "Signature": "s", "signatureVersion": "3",
           "expires": "2030-01-01T00:00:00+0000", "name": "z"}
    assert credentials(raw) == {"apikey": "k1", "signature": "s", "signatureversion": "3",
                                "expires": "2030-01-01T00:00:00+0000"}
    assert credentials({"sessionKey": "abc", "command": "listZones"}) == {"sessionkey": "abc"}
    assert credentials({"command": "listZones"}) == {}


def _reference(value, tilde_raw=False, star_raw=True):
    """Java's URLEncoder with the clients' two variants, without any shortcut."""
    safe = "-_." + ("*" if star_raw else "") + ("~" if tilde_raw else "")
    encoded = quote(value, safe=safe)
    return encoded if tilde_raw else encoded.replace("~", "%7E")


@pytest.mark.parametrize("value", [
    "", "listZones", "0b7e2c4e-9d57-4f5e-8c4b-3b1b2f6f6a10", "2030-01-01T00:00:00+0000", "a b", "a*b", "a~b",
    "x.y-z_1", "é", "a/b", "a+b", "100%", "\u00a0", "Z", "a\nb",
])
@pytest.mark.parametrize("tilde_raw", [False, True])
@pytest.mark.parametrize("star_raw", [False, True])
def test_values_encode_as_the_clients_encode_them(value, tilde_raw, star_raw):
    assert encode_value(value, tilde_raw, star_raw) == _reference(value, tilde_raw, star_raw)


def test_a_signature_over_encoded_values_verifies():
    params = {"command": "createZone", "name": "a b*c~d", "apiKey": "k", "dns1": "10.0.0.1"}
    signature = sign(params, "secret")
    assert verify(dict(params, signature=signature), "secret", signature)
    assert not verify(dict(params, name="other", signature=signature), "secret", signature)


def test_a_secret_decrypts_the_same_every_time_and_a_wrong_token_is_refused():
    box = SecretBox(Fernet.generate_key())
    token = box.encrypt("s3cr3t")
    assert box.decrypt(token) == "s3cr3t"
    assert box.decrypt(token) == "s3cr3t"
    other = SecretBox(Fernet.generate_key())
    with pytest.raises(InvalidToken):
        other.decrypt(token)
    with pytest.raises(InvalidToken):
        box.decrypt(token[:-4] + "AAAA")
