"""Template and ISO downloads onto secondary storage, run in the background by the agent.

The engine starts a download with ``DownloadTemplate`` and follows it with ``QueryDownload``;
both answer at once with a `DownloadStatus`. The image is streamed from its http(s) URL
straight to the zone's image store (no copy on the host's disk), hashed and counted on the
way: a body larger than the limit the engine gives stops the download. Then the checksum
is compared, ``qemu-img info`` must find the declared format (an ISO also needs its ISO
9660 signature; a qcow2 with a backing file is refused), and only then is
``template.properties`` written beside the image: a template without it is not complete.
Any failure removes what was written and leaves the reason in the status.

What is under way lives in this process only: after a restart of the agent a template is
either complete on the store (its template.properties says so) or absent, and the engine
starts it again. The URL's host name is resolved again when the download starts and each
address judged with the engine's rules (protocol.sites: loopback, link-local and the
management networks are refused unless `secstorage.allowed.internal.sites` allows them), so a
name whose DNS answer changed since registration cannot lead inside the cloud; the
connection goes to the address judged, not to a later answer. Redirects are not followed,
for the same reason.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import queue
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from stackwright import properties as props
from stackwright.agent.errors import AgentError, InvalidSpec
from stackwright.protocol import messages as m
from stackwright.protocol import sites

if TYPE_CHECKING:
    from http.client import HTTPResponse

    from stackwright.agent.storage.base import StorageDriver

log = logging.getLogger(__name__)

CHUNK = 1 << 20
USER_AGENT = "stackwright-agent"
# CloudStack's checksum prefixes; a bare hex digest is MD5.
ALGORITHMS = {"MD5": "md5", "SHA-1": "sha1", "SHA-224": "sha224", "SHA-256": "sha256", "SHA-384": "sha384",
              "SHA-512": "sha512"}
ISO_SIGNATURE_OFFSET = 0x8001
HEADER_BYTES = ISO_SIGNATURE_OFFSET + 5

ABSENT, DOWNLOADING, COMPLETE, FAILED = "absent", "downloading", "complete", "failed"


class DownloadFailed(Exception):
    """The download cannot succeed; the message says why."""


class Cancelled(Exception):
    """The template was deleted while it downloaded."""


def parse_checksum(text: str) -> tuple[str, str] | None:
    """(hashlib name, lower-case hex digest) of CloudStack's ``{ALGO}hex`` or bare MD5, or None."""
    text = (text or "").strip()
    if not text:
        return None
    algorithm = "MD5"
    if text.startswith("{"):
        algorithm, _unused, text = text[1:].partition("}")
        algorithm = algorithm.upper()
    if algorithm not in ALGORITHMS:
        raise InvalidSpec(f"checksum algorithm {algorithm!r} is not one of {', '.join(ALGORITHMS)}")
    name = ALGORITHMS[algorithm]
    digest = text.strip().lower()
    if len(digest) != hashlib.new(name).digest_size * 2 or any(c not in "0123456789abcdef" for c in digest):
        raise InvalidSpec(f"checksum {text!r} is not a {algorithm} digest in hex")
    return name, digest


@dataclass
class _Download:
    location: m.TemplateLocation
    state: str = DOWNLOADING
    downloaded: int = 0
    total: int = 0
    physical: int = 0
    virtual: int = 0
    error: str = ""
    error_code: str = ""
    cancel: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def status(self) -> m.DownloadStatus:
        return m.DownloadStatus(state=self.state, downloaded_bytes=self.downloaded, total_bytes=self.total,
                                physical_size=self.physical, virtual_size=self.virtual, error=self.error,
                                error_code=self.error_code)


class _Counted:
    """The response body as a file: counts, hashes, keeps the first bytes, stops past the limit."""

    def __init__(self, response: HTTPResponse, download: _Download, hasher: hashlib._Hash | None,
                 max_bytes: int) -> None:
        self.response, self.download, self.hasher, self.max_bytes = response, download, hasher, max_bytes
        self.header = b""

    def read(self, size: int = CHUNK) -> bytes:
        if self.download.cancel.is_set():
            raise Cancelled()
        data = self.response.read(min(size, CHUNK) if size and size > 0 else CHUNK)
        if not data:
            return data
        self.download.downloaded += len(data)
        if self.max_bytes and self.download.downloaded > self.max_bytes:
            raise DownloadFailed(f"the file is larger than max.template.iso.size ({self.max_bytes} bytes)")
        if self.hasher is not None:
            self.hasher.update(data)
        if len(self.header) < HEADER_BYTES:
            self.header += data[:HEADER_BYTES - len(self.header)]
        return data


class _Prefetched:
    """`source` read ahead by a thread of its own, at most `depth` chunks: the next chunks of the
    HTTP body arrive while the last ones are written to the image store, instead of the two
    taking turns. An error of the reader is raised to the writer; `close` stops the reader."""

    def __init__(self, source: _Counted, depth: int = 4) -> None:
        self.source = source
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._ended = False
        self._thread = threading.Thread(target=self._run, daemon=True, name="download-reader")
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                data = self.source.read(CHUNK)
                self._put(data)
                if not data:
                    return
        except BaseException as exc:  # handed to the writer, which raises it
            self._put(exc)

    def _put(self, item: bytes | BaseException) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def read(self, size: int = CHUNK) -> bytes:
        if self._ended:
            return b""
        item = self._queue.get()
        if isinstance(item, BaseException):
            self._ended = True
            raise item
        if not item:
            self._ended = True
        return item

    def close(self) -> None:
        self._stop.set()


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, ANN201
        raise DownloadFailed(f"the server answered HTTP {code} with a redirect to {newurl}; redirects are not "
                             f"followed, register that URL instead")


def _connect(addresses: list[str], port: int, *rest) -> socket.socket:  # noqa: ANN002
    """A connection to the first of `addresses` that answers on `port`."""
    error: OSError = OSError(f"no address to connect to on port {port}")
    for address in addresses:
        try:
            return socket.create_connection((address, port), *rest)
        except OSError as exc:
            error = exc
    raise error


def _pinned(base: type[http.client.HTTPConnection], addresses: list[str]) -> type[http.client.HTTPConnection]:
    """`base` connecting to one of `addresses` whatever its host name resolves to now (the Host
    header, TLS server name and certificate check still use the name)."""

    class Pinned(base):  # type: ignore[misc,valid-type]
        def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
            super().__init__(*args, **kwargs)
            self._create_connection = lambda where, *rest: _connect(addresses, where[1], *rest)

    return Pinned


class _PinnedHttp(urllib.request.HTTPHandler):
    def __init__(self, addresses: list[str]) -> None:
        super().__init__()
        self.addresses = addresses

    def http_open(self, req):  # noqa: ANN001, ANN201
        return self.do_open(_pinned(http.client.HTTPConnection, self.addresses), req)


class _PinnedHttps(urllib.request.HTTPSHandler):
    def __init__(self, addresses: list[str]) -> None:
        super().__init__()
        self.addresses = addresses

    def https_open(self, req):  # noqa: ANN001, ANN201
        return self.do_open(_pinned(http.client.HTTPSConnection, self.addresses), req, context=self._context)


def judged_addresses(command: m.DownloadTemplate) -> list[str]:
    """The addresses to fetch `command.url` from, its host name resolved now and every address
    judged by the engine's rules; raises DownloadFailed naming why it is refused."""
    management = []
    for cidr, name in command.management_networks.items():
        management += [(network, name) for network in sites.networks([cidr])]
    try:
        _host, _port, addresses = sites.resolve(command.url, sites.networks(command.allowed_sites), management)
    except sites.Refused as e:
        raise DownloadFailed(f"refused when the download started: {e}") from None
    return [str(address) for address in addresses]


class Downloads:
    """The downloads of one agent, by (image store URL, template directory)."""

    def __init__(self, storage: Callable[[], StorageDriver], timeout: float = 30.0) -> None:
        self._storage = storage
        self.timeout = timeout
        self._lock = threading.Lock()
        self._downloads: dict[tuple[str, str], _Download] = {}

    def start(self, command: m.DownloadTemplate) -> m.DownloadStatus:
        location = command.location
        parse_checksum(command.checksum)
        if command.url.split(":", 1)[0].lower() not in ("http", "https"):
            raise InvalidSpec(f"template URL {command.url!r} is not http or https")
        key = (location.store_url, location.directory)
        with self._lock:
            current = self._downloads.get(key)
            if current is not None and current.state in (DOWNLOADING, COMPLETE):
                return current.status()
        stored = self._stored(location)
        if stored is not None:
            return stored
        with self._lock:
            current = self._downloads.get(key)
            if current is not None and current.state in (DOWNLOADING, COMPLETE):
                return current.status()
            download = self._downloads[key] = _Download(location=location)
            download.thread = threading.Thread(target=self._run, args=(download, command), daemon=True,
                                               name=f"download-{location.directory.rsplit('/', 1)[-1]}")
            download.thread.start()
            return download.status()

    def query(self, location: m.TemplateLocation) -> m.DownloadStatus:
        with self._lock:
            current = self._downloads.get((location.store_url, location.directory))
        if current is not None:
            return current.status()
        return self._stored(location) or m.DownloadStatus(state=ABSENT)

    def delete(self, location: m.TemplateLocation) -> None:
        with self._lock:
            current = self._downloads.pop((location.store_url, location.directory), None)
        if current is not None and current.thread is not None:
            current.cancel.set()
            current.thread.join(60)
        self._storage().delete_template(location)

    def _stored(self, location: m.TemplateLocation) -> m.DownloadStatus | None:
        """The status of a template complete on its store (from its template.properties), or None."""
        text = self._storage().template_properties(location)
        if text is None:
            return None
        values = props.parse(text)
        size = int(values.get("size") or 0)
        return m.DownloadStatus(state=COMPLETE, downloaded_bytes=size, total_bytes=size, physical_size=size,
                                virtual_size=int(values.get("virtualsize") or size))

    def _run(self, download: _Download, command: m.DownloadTemplate) -> None:
        location = command.location
        storage = self._storage()
        try:
            self._fetch(download, command, storage)
        except Exception as exc:
            reason = _reason(exc, command.url)
            try:
                storage.delete_template(location)
            except AgentError as cleanup:
                log.warning("could not remove the failed download of %s: %s", location.directory, cleanup)
            if isinstance(exc, Cancelled):
                log.info("download of %s into %s stopped: the template was deleted", command.url, location.directory)
                return
            download.error, download.state = reason, FAILED
            download.error_code = exc.code if isinstance(exc, AgentError) else ""
            log.warning("download of %s into %s failed: %s", command.url, location.directory, reason)

    def _fetch(self, download: _Download, command: m.DownloadTemplate, storage: StorageDriver) -> None:
        location = command.location
        checksum = parse_checksum(command.checksum)
        hasher = hashlib.new(checksum[0]) if checksum else None
        log.info("downloading %s into %s on %s", command.url, location.directory, location.store_url)
        addresses = judged_addresses(command)
        opener = urllib.request.build_opener(_NoRedirects(), _PinnedHttp(addresses), _PinnedHttps(addresses))
        request = urllib.request.Request(command.url, headers={"User-Agent": USER_AGENT})
        with opener.open(request, timeout=self.timeout) as response:
            length = int(response.headers.get("Content-Length") or 0)
            if command.max_bytes and length > command.max_bytes:
                raise DownloadFailed(f"the file is {length} bytes, larger than max.template.iso.size "
                                     f"({command.max_bytes} bytes)")
            download.total = length
            body = _Counted(response, download, hasher, command.max_bytes)
            ahead = _Prefetched(body)
            try:
                written = storage.write_template(location, ahead)
            finally:
                ahead.close()
        if length and written != length:
            raise DownloadFailed(f"the server sent {written} of {length} bytes")
        if checksum is not None:
            actual = hasher.hexdigest()
            if actual != checksum[1]:
                raise DownloadFailed(f"checksum mismatch: expected {checksum[1]}, the file has {actual}")
        info = storage.inspect_template(location)
        _check_format(location.format, info, body.header)
        if download.cancel.is_set():
            raise Cancelled()
        virtual = int(info.get("virtual-size") or written)
        storage.finish_template(location, _properties(command, written, virtual))
        download.physical, download.virtual, download.total = written, virtual, written
        download.state = COMPLETE
        log.info("downloaded %s into %s: %d bytes, virtual size %d", command.url, location.directory, written,
                 virtual)


def _check_format(declared: str, info: dict, header: bytes) -> None:
    found = str(info.get("format") or "unknown")
    declared = declared.lower()
    expected = "qcow2" if declared == "qcow2" else "raw"
    if found != expected:
        raise DownloadFailed(f"the file is {found}, not {declared.upper()} as registered (qemu-img info)")
    if info.get("backing-filename"):
        raise DownloadFailed(f"the qcow2 image has a backing file ({info['backing-filename']}); upload a "
                             f"self-contained image (qemu-img convert)")
    if declared == "iso" and header[ISO_SIGNATURE_OFFSET:ISO_SIGNATURE_OFFSET + 5] != b"CD001":
        raise DownloadFailed("the file is not an ISO 9660 image (no CD001 signature)")


def _properties(command: m.DownloadTemplate, physical: int, virtual: int) -> str:
    location = command.location
    extension = location.format.lower()
    values = dict(command.properties)
    values.update({
        "filename": location.file_name, "checksum": command.checksum, extension: "true",
        f"{extension}.filename": location.file_name, f"{extension}.size": str(physical),
        f"{extension}.virtualsize": str(virtual), "size": str(physical), "virtualsize": str(virtual),
    })
    return "".join(props.entry_line(key, value) + "\n" for key, value in values.items())


def _reason(exc: BaseException, url: str) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP error {exc.code} {exc.reason} from {url}"
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        if isinstance(reason, DownloadFailed):
            return str(reason)
        return f"cannot reach {url}: {getattr(reason, 'strerror', None) or reason}"
    if isinstance(exc, (DownloadFailed, AgentError)):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return f"timed out reading {url}"
    if isinstance(exc, OSError):
        return f"reading {url} failed: {exc.strerror or exc}"
    log.exception("download of %s failed unexpectedly", url)
    return f"the download failed unexpectedly ({type(exc).__name__}); see the agent log"
