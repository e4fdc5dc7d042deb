# -*- coding: utf-8 -*-
# Copyright (c) Stackwright maintainers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

"""Signed client for the CloudStack HTTP API.

Requests are signed as CloudStack verifies them: parameters sorted by name,
values encoded like Java's URLEncoder, the whole string lower-cased, HMAC-SHA1
with the secret key, standard Base64.  Asynchronous commands are followed
through queryAsyncJobResult with a bounded wait.  HTTP and TLS (certificate
validation, a CA bundle, proxies) are ansible-core's `open_url`.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import os
import socket
import time

from configparser import ConfigParser, Error as ConfigParserError
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlencode

from ansible.module_utils.parsing.convert_bool import boolean
from ansible.module_utils.urls import ConnectionError as UrlsConnectionError, open_url

DEFAULT_TIMEOUT = 10
DEFAULT_METHOD = "get"
DEFAULT_REGION = "cloudstack"
DEFAULT_CONFIG_FILES = ("cloudstack.ini", "~/.cloudstack.ini")
SIGNATURE_EXPIRY_SECONDS = 600
PAGE_SIZE = 500
JOB_PENDING = 0
JOB_SUCCEEDED = 1
JOB_STATUS_NAMES = {2: "failed", 3: "was cancelled"}

# Keys read from a cloudstack.ini section (the cs library's names).
CONFIG_KEYS = ("endpoint", "key", "secret", "timeout", "method", "verify", "dangerous_no_tls_verify")

# Characters java.net.URLEncoder leaves alone; everything else is %XX of UTF-8.
_JAVA_URLENCODER_SAFE = "-_.*"


# Added to the message of a 401 answer: what makes CloudStack refuse a signature.
AUTH_HINT = ("; the API at %s refused the request's credentials: check that api_key and api_secret belong to the "
             "same enabled user of this cloud, and that this machine's clock is within the signature's validity "
             "(requests expire 10 minutes after signing; a clock that is off by more is refused)")


class CloudStackError(Exception):
    """A failed API call; carries CloudStack's error codes when the API sent them."""

    def __init__(self, message, command=None, errorcode=None, cserrorcode=None, errortext=None):
        super().__init__(message)
        self.command = command
        self.errorcode = errorcode
        self.cserrorcode = cserrorcode
        self.errortext = errortext

    def details(self):
        """Error fields worth returning to the user, without empty ones."""
        fields = {"command": self.command, "errorcode": self.errorcode,
                  "cserrorcode": self.cserrorcode, "errortext": self.errortext}
        return dict((key, value) for key, value in fields.items() if value is not None)


def encode_value(value):
    """Encode one parameter value the way CloudStack does before verifying a signature."""
    # Python's quote() always leaves "~" alone; URLEncoder encodes it.
    return quote(value, safe=_JAVA_URLENCODER_SAFE).replace("~", "%7E")


def flatten_params(params):
    """Turn Python values into CloudStack request strings.

    None and empty lists are dropped, booleans become ``true``/``false``, lists are
    comma-joined and dicts (or lists of dicts) become ``name[i].key=value`` maps.
    """
    flat = {}
    for name, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            flat[name] = "true" if value else "false"
        elif isinstance(value, dict):
            flat.update(_flatten_map(name, [value]))
        elif isinstance(value, (list, tuple)):
            if not value:
                continue
            if isinstance(value[0], dict):
                flat.update(_flatten_map(name, value))
            else:
                flat[name] = ",".join(str(item) for item in value)
        else:
            flat[name] = str(value)
    return flat


def _flatten_map(name, entries):
    flat = {}
    for index, entry in enumerate(entries):
        for key, value in entry.items():
            flat["%s[%d].%s" % (name, index, key)] = str(value)
    return flat


def sign(params, secret):
    """Signature of a flat parameter dict (``signature`` itself excluded)."""
    query = "&".join(
        "%s=%s" % (name, encode_value(params[name]))
        for name in sorted(params)
        if name.lower() != "signature"
    )
    digest = hmac.new(secret.encode("utf-8"), query.lower().encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def expires_at(seconds, now=None):
    """The ``expires`` value of signature version 3, in the form CloudStack parses."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return (now + datetime.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S+0000")


def read_config_file(path, region=DEFAULT_REGION):
    """Read endpoint/key/secret (and optional timeout/method/verify/dangerous_no_tls_verify) of one
    section of a cloudstack.ini."""
    parser = ConfigParser()
    try:
        with open(os.path.expanduser(path)) as handle:
            parser.read_file(handle)
    except (OSError, ConfigParserError) as exc:
        raise CloudStackError("cannot read CloudStack config file %s: %s" % (path, exc))
    if not parser.has_section(region):
        raise CloudStackError("CloudStack config file %s has no [%s] section" % (path, region))
    section = parser[region]
    return dict((key, section[key]) for key in CONFIG_KEYS if key in section)


def resolve_connection(options):
    """Connection settings from module options, falling back to a cloudstack.ini.

    ``options`` holds api_url, api_key, api_secret, api_timeout, api_http_method,
    api_verify_ssl_cert, validate_certs, api_config_file and api_region
    (environment fallbacks already applied).  Explicit values win over the file;
    the file is read when a value is missing or when api_config_file is set.
    The file's ``verify`` names a CA bundle; ``dangerous_no_tls_verify = true``
    turns certificate validation off unless validate_certs says otherwise.
    """
    settings = {
        "endpoint": options.get("api_url"),
        "key": options.get("api_key"),
        "secret": options.get("api_secret"),
        "timeout": options.get("api_timeout"),
        "method": options.get("api_http_method"),
        "verify": options.get("api_verify_ssl_cert"),
    }
    no_tls_verify = None
    config_file = options.get("api_config_file")
    missing = [name for name in ("endpoint", "key", "secret") if not settings[name]]
    if missing and not config_file:
        config_file = next((path for path in DEFAULT_CONFIG_FILES if os.path.exists(os.path.expanduser(path))), None)
    if config_file and (missing or options.get("api_config_file")):
        from_file = read_config_file(config_file, options.get("api_region") or DEFAULT_REGION)
        no_tls_verify = from_file.pop("dangerous_no_tls_verify", None)
        for name, value in from_file.items():
            if not settings.get(name):
                settings[name] = value
    missing = [name for name in ("endpoint", "key", "secret") if not settings[name]]
    if missing:
        option_names = {"endpoint": "api_url", "key": "api_key", "secret": "api_secret"}
        raise CloudStackError(
            "missing CloudStack connection settings: %s; set the options, the CLOUDSTACK_ENDPOINT/KEY/SECRET "
            "environment variables or a cloudstack.ini (api_config_file)" % ", ".join(option_names[m] for m in missing))
    try:
        settings["timeout"] = int(settings["timeout"] or DEFAULT_TIMEOUT)
    except ValueError:
        raise CloudStackError("api_timeout must be a whole number of seconds, got %r" % settings["timeout"])
    validate_certs = options.get("validate_certs")
    if validate_certs is None or (validate_certs is True and no_tls_verify is not None):
        validate_certs = not boolean(no_tls_verify or "false", strict=False)
    settings["validate_certs"] = validate_certs
    settings["method"] = (settings["method"] or DEFAULT_METHOD).lower()
    if settings["method"] not in ("get", "post"):
        raise CloudStackError("api_http_method must be get or post, got %r" % settings["method"])
    return settings


class CloudStackClient(object):
    """Signed requests to one endpoint, with job polling and paged listing."""

    def __init__(self, endpoint, key, secret, timeout=DEFAULT_TIMEOUT, method=DEFAULT_METHOD,
                 validate_certs=True, ca_path=None, signature_version=3, poll_interval=2.0):
        self.endpoint = endpoint
        self.key = key
        self.secret = secret
        self.timeout = timeout
        self.method = method.lower()
        self.validate_certs = validate_certs
        self.ca_path = ca_path
        self.signature_version = signature_version
        self.poll_interval = poll_interval

    def signed_params(self, command, params):
        """The full, signed parameter set of one request."""
        flat = flatten_params(params)
        flat.update(command=command, response="json", apiKey=self.key)
        if self.signature_version == 3:
            flat.update(signatureVersion="3", expires=expires_at(SIGNATURE_EXPIRY_SECONDS))
        flat["signature"] = sign(flat, self.secret)
        return flat

    def request(self, command, **params):
        """Run one command and return the body under its single ``<cmd>response`` key."""
        body = urlencode(self.signed_params(command, params), quote_via=quote)
        if self.method == "post":
            url, data, headers = self.endpoint, body.encode("ascii"), {"Content-Type": "application/x-www-form-urlencoded"}
        else:
            url, data, headers = "%s?%s" % (self.endpoint, body), None, None
        try:
            response = open_url(url, data=data, headers=headers, method=self.method.upper(), timeout=self.timeout,
                                validate_certs=self.validate_certs, ca_path=self.ca_path)
            status, content_type, raw = response.status, response.headers.get("Content-Type", ""), response.read()
        except HTTPError as exc:
            status, content_type, raw = exc.code, exc.headers.get("Content-Type", ""), exc.read()
        except (socket.timeout, TimeoutError):
            raise CloudStackError("%s: no answer from the CloudStack API at %s within %s seconds (api_timeout)"
                                  % (command, self.endpoint, self.timeout), command=command)
        except (URLError, OSError, ValueError, UrlsConnectionError) as exc:
            # TLS validation failures come as URLError or as ansible's own ConnectionError.
            reason = getattr(exc, "reason", exc)
            raise CloudStackError("%s: cannot reach the CloudStack API at %s: %s" % (command, self.endpoint, reason),
                                  command=command)
        return self._unwrap(command, status, content_type, raw)

    def _unwrap(self, command, status, content_type, raw):
        try:
            document = json.loads(raw.decode("utf-8"))
        except ValueError:
            raise CloudStackError(
                "%s: the API at %s answered HTTP %s with %s instead of JSON; is it a CloudStack endpoint?"
                % (command, self.endpoint, status, content_type or "no content type"), command=command)
        if not isinstance(document, dict) or len(document) != 1:
            raise CloudStackError("%s: unexpected answer from %s: %s" % (command, self.endpoint, raw[:200]),
                                  command=command)
        value = list(document.values())[0]
        if not isinstance(value, dict):
            value = {}
        if status != 200 or "errortext" in value:
            errortext = value.get("errortext") or "HTTP %s" % status
            message = "%s failed: %s" % (command, errortext)
            if status == 401:
                message += AUTH_HINT % self.endpoint
            raise CloudStackError(message, command=command,
                                  errorcode=value.get("errorcode", status),
                                  cserrorcode=value.get("cserrorcode"), errortext=errortext)
        return value

    def list(self, command, item_key, **params):
        """All items of a list command, fetched page by page."""
        items = []
        page = 1
        while True:
            value = self.request(command, page=page, pagesize=PAGE_SIZE, **params)
            chunk = value.get(item_key) or []
            items.extend(chunk)
            if len(chunk) < PAGE_SIZE or len(items) >= value.get("count", 0):
                return items
            page += 1

    def wait_for_job(self, jobid, timeout, command=None):
        """Poll an async job until it ends; return its ``jobresult`` or raise on failure/timeout."""
        deadline = time.monotonic() + timeout
        label = command or "job"
        # Most jobs finish within a second: start polling fast, back off to poll_interval.
        delay = min(0.25, self.poll_interval)
        while True:
            job = self.request("queryAsyncJobResult", jobid=jobid)
            status = job.get("jobstatus", JOB_PENDING)
            if status == JOB_SUCCEEDED:
                return job.get("jobresult") or {}
            if status != JOB_PENDING:
                result = job.get("jobresult") or {}
                errortext = result.get("errortext") or "job %s" % JOB_STATUS_NAMES.get(status, "ended with status %s" % status)
                raise CloudStackError("%s failed: %s" % (label, errortext), command=command,
                                      errorcode=result.get("errorcode", job.get("jobresultcode")),
                                      cserrorcode=result.get("cserrorcode"), errortext=errortext)
            if time.monotonic() >= deadline:
                raise CloudStackError("%s: job %s did not finish within %s seconds" % (label, jobid, timeout),
                                      command=command)
            time.sleep(min(delay, max(deadline - time.monotonic(), 0)))
            delay = min(delay * 2, self.poll_interval)

    def run(self, command, wait_timeout, **params):
        """Run a command; when the API answers with a job id, wait for the job and return its result."""
        value = self.request(command, **params)
        if "jobid" in value:
            return self.wait_for_job(value["jobid"], wait_timeout, command)
        return value
