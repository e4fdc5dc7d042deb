"""The agent's download plumbing that the engine-level template tests do not isolate: the body
read ahead of the writer, and the address a URL is fetched from."""

from __future__ import annotations


import pytest

from stackwright.agent import downloads
from stackwright.protocol import messages as m


class Source:
    """Chunks, then an error or the end; counts the reads."""

    def __init__(self, chunks, error=None):
        self.chunks, self.error, self.reads = list(chunks), error, 0

    def read(self, size):
        self.reads += 1
        if self.chunks:
            return self.chunks.pop(0)
        if self.error is not None:
            raise self.error
        return b""


def test_the_body_is_read_ahead_in_order_and_ends_once():
    ahead = downloads._Prefetched(Source([b"a" * 10, b"b" * 10, b"c"]), depth=2)
    assert [ahead.read(), ahead.read(), ahead.read()] == [b"a" * 10, b"b" * 10, b"c"]
    assert ahead.read() == b"" and ahead.read() == b""


def test_an_error_of_the_reader_reaches_the_writer():
    ahead = downloads._Prefetched(Source([b"x"], downloads.DownloadFailed("the file is larger than allowed")))
    assert ahead.read() == b"x"
    with pytest.raises(downloads.DownloadFailed, match="larger than allowed"):
        ahead.read()
    assert ahead.read() == b""


def test_closing_stops_a_reader_the_writer_left():
    source = Source([b"y"] * 1000)
    ahead = downloads._Prefetched(source, depth=2)
    assert ahead.read() == b"y"
    ahead.close()
    ahead._thread.join(5)
    assert not ahead._thread.is_alive()
    assert source.reads < 10


def test_the_url_is_fetched_from_the_addresses_judged_now():
    command = m.DownloadTemplate(location=m.TemplateLocation(store_url="nfs://nfs/s", directory="d", file_name="f",
                                                             format="raw"),
                                 url="http://localhost:8/x.raw", allowed_sites=["127.0.0.0/8", "::1/128"])
    assert set(downloads.judged_addresses(command)) <= {"127.0.0.1", "::1"}
    refused = m.DownloadTemplate(location=command.location, url="http://127.0.0.1:8/x.raw",
                                 allowed_sites=["10.0.0.0/8"], management_networks={"127.0.0.0/8": "pod-1"})
    with pytest.raises(downloads.DownloadFailed, match="refused when the download started: 127.0.0.1 resolves to "
                                                       "127.0.0.1, a loopback address"):
        downloads.judged_addresses(refused)
