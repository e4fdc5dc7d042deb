"""The strict value parsers shared by API parameters and settings, and secret redaction."""

import logging
import os
import stat

import pytest

from stackwright.management import redaction, values
from stackwright.management.errors import InvalidParameterValue
from stackwright.management.services.configuration import key


@pytest.mark.parametrize("text", ["1_000", "１０", "١٢", "1e3", " ", "", "+", "0x10", "10\u00a0", "²"])
def test_integers_are_ascii_digits_only(text):
    with pytest.raises(ValueError):
        values.parse_int(text)


def test_integers_and_their_ranges():
    assert values.parse_int("-42") == -42 and values.parse_int("+7") == 7 and values.parse_int(" 8\n") == 8
    assert values.parse_int(str(values.INT64[1])) == values.INT64[1]
    with pytest.raises(ValueError):
        values.parse_int(str(values.INT64[1] + 1))
    with pytest.raises(ValueError):
        values.parse_int(str(1 << 31), *values.INT32)


@pytest.mark.parametrize("text", ["１_０", "1_000", "1_0.5", "nan", "inf", "Infinity", "1e39", "0x1p3", "1.2.3", "٣"])
def test_decimals_refuse_pythons_extras(text):
    with pytest.raises(ValueError):
        values.parse_decimal(text)


def test_decimals():
    assert values.parse_decimal("1.5") == 1.5 and values.parse_decimal(".5") == 0.5
    assert values.parse_decimal("2E3") == 2000.0 and values.parse_decimal("-3.") == -3.0


def test_booleans_sizes_cidrs():
    assert values.parse_bool("TRUE") is True and values.parse_bool("false") is False
    for bad in ("yes", "1", "ｔｒｕｅ", ""):
        with pytest.raises(ValueError):
            values.parse_bool(bad)
    assert values.parse_size("20", 1024 ** 3) == 20
    for bad in ("-1", str((1 << 63) // 1024 ** 3 + 1)):
        with pytest.raises(ValueError):
            values.parse_size(bad, 1024 ** 3)
    assert str(values.parse_cidr("10.1.1.1/24")) == "10.1.1.0/24"
    for bad in ("10.1.1.0/33", "１0.1.1.0/24", "10.1.1.0", "010.1.1.0/24", "::1/64"):
        with pytest.raises(ValueError):
            values.parse_cidr(bad)


@pytest.mark.parametrize("value", ["１_０", "1_000", "1_0", "NaN"])
def test_settings_use_the_same_parsers(value):
    with pytest.raises(InvalidParameterValue):
        key("mem.overprovisioning.factor").validate(value)
    with pytest.raises(InvalidParameterValue):
        key("cluster.threshold.enabled").validate("yes")
    key("mem.overprovisioning.factor").validate("1.5")


def test_secrets_are_masked_in_text():
    text = ("command=login&password=hunter2&username=u apikey: AbC secretkey=\"s3\" "
            "mysql+pymysql://cloud:dbpass@db/cloud signature=xyz== "
            "{'sessionkey': 'k1'} gAAAAA" + "x" * 60)
    out = redaction.redact_text(text)
    for secret in ("hunter2", "AbC", "s3", "dbpass", "xyz==", "k1", "x" * 60):
        assert secret not in out
    assert "username=u" in out and "command=login" in out
    assert redaction.redacted_value("Password", "p\x01") == redaction.MASK
    assert redaction.redacted_value("name", "n") == "n"


def test_log_files_are_0640_and_redacted(tmp_path):
    path = tmp_path / "management.log"
    old = os.umask(0)
    try:
        handler = redaction.PrivateFileHandler(str(path))
    finally:
        os.umask(old)
    handler.setFormatter(redaction.RedactingFormatter("%(message)s"))
    logger = logging.getLogger("test.redaction")
    logger.addHandler(handler)
    try:
        logger.warning("refused password=%s", "hunter2")
        try:
            raise ValueError("secretkey=abcdef")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    text = path.read_text()
    assert "hunter2" not in text and "abcdef" not in text and "password=******" in text
