"""Webhooks against a real HTTP receiver on loopback (engine/automations/webhook.py).

The receiver is allow-listed where a test means to reach it; every SSRF variant points at
it too, without the allow-list, and the test asserts it saw nothing. DNS is simulated by
replacing socket.getaddrinfo for made-up names (`*.test`), the only thing not real here.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from engine.automations import webhook
from engine.automations.webhook import (
    ALLOW_ENV,
    DeliveryFailed,
    TargetRefused,
    allowed_from_env,
    check_target,
    post,
    sign,
    verify,
)
from engine.errors import KartotekaError, SettingsError

SECRET = b"s3cr3t-\xd0\xba\xd0\xbb\xd1\x8e\xd1\x87"
BODY = json.dumps({"entity": "sale", "record": {"id": 7, "client": "ООО Ромашка",
                   "note": "قرارداد امضا شد", "city": "上海"}}, ensure_ascii=False).encode()


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An HTTP server on loopback that records requests and answers from a script."""

    server: ThreadingHTTPServer
    requests: list[Received] = field(default_factory=list)
    answers: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)

    @property
    def host(self) -> str:
        return str(self.server.server_address[0])

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def url(self, path: str = "/hook") -> str:
        return f"http://{self.host}:{self.port}{path}"


def _start(host: str, port: int = 0, tls: ssl.SSLContext | None = None) -> Receiver:
    receiver: Receiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            receiver.requests.append(Received("POST", self.path, dict(self.headers.items()),
                                              self.rfile.read(length)))
            status, headers, body = receiver.answers.pop(0) if receiver.answers else (200, {}, b"ok")
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except ConnectionError:
                pass  # the client stopped reading (a huge answer): expected

        do_GET = do_POST

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    receiver = Receiver(server)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = _start("127.0.0.1")
    yield running
    running.server.shutdown()
    running.server.server_close()


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[list[str]]]:
    """Made-up names → a list of answers; each lookup takes the next answer (the last one
    repeats). Lookups are recorded under `calls`."""
    table: dict[str, list[list[str]]] = {"calls": []}
    real = socket.getaddrinfo

    def fake(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host in table:
            table["calls"].append([host])
            answers = table[host]
            answer = answers.pop(0) if len(answers) > 1 else answers[0]
            return [(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM,
                     socket.IPPROTO_TCP, "", (ip, port)) for ip in answer]
        if isinstance(host, str) and host.endswith(".test"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return table


@pytest.fixture
def no_connection(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Fails the test if post opens any connection."""
    opened: list[Any] = []
    real = webhook._open_socket

    def spy(addresses: Any, *args: Any) -> socket.socket:
        opened.append(addresses)
        return real(addresses, *args)

    monkeypatch.setattr(webhook, "_open_socket", spy)
    return opened


# --- delivery -----------------------------------------------------------------------------

def test_the_body_arrives_signed_with_the_event_id(receiver: Receiver) -> None:
    before = int(time.time())
    status = post(receiver.url("/hook?team=7"), BODY, secret=SECRET, event_id="evt-1",
                  allowed=["127.0.0.1"])
    assert status == 200
    [got] = receiver.requests
    assert got.path == "/hook?team=7"
    assert got.body == BODY
    assert json.loads(got.body)["record"]["city"] == "上海"
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["User-Agent"] == "Kartoteka"
    assert got.headers["X-Kartoteka-Event"] == "evt-1"
    assert got.headers["Host"] == f"127.0.0.1:{receiver.port}"
    signature = got.headers["X-Kartoteka-Signature"]
    assert verify(SECRET, signature, got.body, now=time.time())
    timestamp = int(signature.split(",")[0].removeprefix("t="))
    assert before <= timestamp <= time.time()


def test_without_a_secret_no_signature_is_sent(receiver: Receiver) -> None:
    assert post(receiver.url(), b"{}", secret=None, event_id="e", allowed=["127.0.0.0/8"]) == 200
    assert "X-Kartoteka-Signature" not in receiver.requests[0].headers


def test_a_receiver_failing_three_times_gets_the_fourth(receiver: Receiver) -> None:
    receiver.answers = [(500, {}, b"database down")] * 3
    failures = []
    for _attempt in range(4):  # the worker's retry loop, without its backoff
        try:
            status = post(receiver.url(), BODY, secret=SECRET, event_id="evt-2", allowed=["127.0.0.1"])
        except DeliveryFailed as error:
            failures.append(error)
    assert [(f.retryable, f.status) for f in failures] == [(True, 500)] * 3
    assert "database down" in str(failures[0])
    assert status == 200
    assert [r.headers["X-Kartoteka-Event"] for r in receiver.requests] == ["evt-2"] * 4


@pytest.mark.parametrize(("status", "retryable"), [
    (400, False), (401, False), (404, False), (410, False), (422, False),
    (408, True), (429, True), (500, True), (502, True), (503, True),
])
def test_which_answers_are_worth_a_retry(receiver: Receiver, status: int, retryable: bool) -> None:
    receiver.answers = [(status, {"Retry-After": "7"}, b"{\"error\": \"\xd0\xbd\xd0\xb5\xd1\x82\"}")]
    with pytest.raises(DeliveryFailed) as caught:
        post(receiver.url(), BODY, secret=SECRET, event_id="e", allowed=["127.0.0.1"])
    assert caught.value.retryable is retryable
    assert caught.value.status == status
    assert caught.value.retry_after == 7.0
    assert "нет" in str(caught.value)  # what the receiver said, for the dead-letter list
    assert isinstance(caught.value, KartotekaError)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_not_followed(receiver: Receiver, status: int) -> None:
    receiver.answers = [(status, {"Location": f"http://127.0.0.1:{receiver.port}/elsewhere"}, b"")]
    with pytest.raises(DeliveryFailed) as caught:
        post(receiver.url(), BODY, secret=SECRET, event_id="e", allowed=["127.0.0.1"])
    assert not caught.value.retryable
    assert caught.value.status == status
    assert "/elsewhere" in str(caught.value) and "not followed" in str(caught.value)
    assert [r.path for r in receiver.requests] == ["/hook"]


def test_a_huge_answer_is_read_only_in_part(receiver: Receiver) -> None:
    receiver.answers = [(200, {}, b"x" * (8 * 1024 * 1024))]
    assert post(receiver.url(), BODY, secret=None, event_id="e", allowed=["127.0.0.1"]) == 200
    receiver.answers = [(400, {}, b"y" * (8 * 1024 * 1024))]
    with pytest.raises(DeliveryFailed) as caught:
        post(receiver.url(), BODY, secret=None, event_id="e", allowed=["127.0.0.1"])
    assert len(str(caught.value)) < 500


def test_a_closed_port_is_retryable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DeliveryFailed) as caught:
        post(f"http://127.0.0.1:{port}/", BODY, secret=None, event_id="e", allowed=["127.0.0.1"])
    assert caught.value.retryable and caught.value.status is None
    assert not isinstance(caught.value, TargetRefused)


def test_a_receiver_that_never_answers_times_out_retryably() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        started = time.monotonic()
        with pytest.raises(DeliveryFailed) as caught:
            post(f"http://127.0.0.1:{silent.getsockname()[1]}/", BODY, secret=None, event_id="e",
                 allowed=["127.0.0.1"], timeout=0.3)
    assert caught.value.retryable
    assert time.monotonic() - started < 5


def test_a_receiver_trickling_its_answer_is_cut_off_at_the_deadline() -> None:
    """Each byte comes well within the per-step timeout; the whole answer never does."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        stop = threading.Event()

        def trickle() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"z" * 10_000:
                    if stop.wait(0.05):
                        return
                    try:
                        conn.sendall(bytes([byte]))
                    except OSError:
                        return

        thread = threading.Thread(target=trickle, daemon=True)
        thread.start()
        started = time.monotonic()
        try:
            with pytest.raises(DeliveryFailed) as caught:
                post(f"http://127.0.0.1:{listener.getsockname()[1]}/", BODY, secret=None, event_id="e",
                     allowed=["127.0.0.1"], timeout=1.0, deadline=0.6)
        finally:
            stop.set()
            thread.join(5)
    assert caught.value.retryable
    assert 0.5 < time.monotonic() - started < 3


def test_a_path_in_any_script_is_sent_percent_encoded(receiver: Receiver) -> None:
    url = f"http://127.0.0.1:{receiver.port}/هوک/钩子?клиент=Ромашка&a=1%202"
    assert post(url, BODY, secret=None, event_id="e", allowed=["127.0.0.1"]) == 200
    assert receiver.requests[0].path == (
        "/%D9%87%D9%88%DA%A9/%E9%92%A9%E5%AD%90?%D0%BA%D0%BB%D0%B8%D0%B5%D0%BD%D1%82="
        "%D0%A0%D0%BE%D0%BC%D0%B0%D1%88%D0%BA%D0%B0&a=1%202")


def test_a_line_break_in_the_event_id_is_refused(receiver: Receiver) -> None:
    with pytest.raises(ValueError):
        post(receiver.url(), BODY, secret=None, event_id="e\r\nX-Evil: 1", allowed=["127.0.0.1"])
    assert receiver.requests == []


# --- SSRF ------------------------------------------------------------------------------------

LOOPBACK_SPELLINGS = [
    "http://127.0.0.1:{port}/hook",
    "http://127.0.0.1.:{port}/hook",          # trailing dot
    "http://2130706433:{port}/hook",          # decimal
    "http://0x7f000001:{port}/hook",          # hex
    "http://0x7f.1:{port}/hook",              # hex, two parts
    "http://0177.0.0.1:{port}/hook",          # octal
    "http://127.1:{port}/hook",               # short form
    "http://a@127.0.0.1:{port}/hook",         # userinfo
    "http://user:pass@127.0.0.1:{port}/hook",
    "http://example.com@127.0.0.1:{port}/hook",
    "http://example.com\\@127.0.0.1:{port}/hook",
    "http://localhost:{port}/hook",
    "http://LocalHost.:{port}/hook",
    "http://api.localhost:{port}/hook",
    "http://localhost.localdomain:{port}/hook",
    "http://[::1]:{port}/hook",
    "http://[0:0:0:0:0:0:0:1]:{port}/hook",
    "http://[::ffff:127.0.0.1]:{port}/hook",  # IPv4-mapped
    "http://[::ffff:7f00:1]:{port}/hook",
    "http://[::127.0.0.1]:{port}/hook",       # IPv4-compatible
    "http://[64:ff9b::7f00:1]:{port}/hook",   # NAT64
    "http://[2002:7f00:1::]:{port}/hook",     # 6to4
    "http://0.0.0.0:{port}/hook",             # unspecified: Linux connects it to loopback
    "http://0:{port}/hook",
    "http://[::]:{port}/hook",
    "https://127.0.0.1:{port}/hook",
    "ftp://127.0.0.1:{port}/hook",
    "file:///etc/passwd",
    "gopher://127.0.0.1:{port}/_hook",
    "//127.0.0.1:{port}/hook",
    "http:///hook",
    " http://127.0.0.1:{port}/hook",
    "http://127.0.0.1:{port}/hook\r\nX-Injected: 1",
    "http://127.0.0.1:99999/hook",
    "http://999.0.0.1:{port}/hook",
    "http://1.2.3.4.5:{port}/hook",
    "http://[fe80::1%25lo]:{port}/hook",
]

NON_PUBLIC = [
    "http://10.0.0.1/", "http://172.16.5.4/", "http://192.168.1.1/",
    "http://169.254.169.254/latest/meta-data/",   # cloud metadata
    "http://100.64.0.1/",                          # shared (carrier-grade NAT)
    "http://224.0.0.1/", "http://239.255.255.250/", "http://255.255.255.255/",
    "http://240.0.0.1/", "http://198.18.0.1/", "http://192.0.0.8/", "http://192.0.2.1/",
    "http://[fd12:3456::1]/", "http://[fc00::1]/",  # unique-local
    "http://[fe80::1]/", "http://[fec0::1]/", "http://[ff02::1]/",
    "http://[2001:0:4136:e378::1]/",               # Teredo
    "http://[2001:db8::1]/",
    "http://[::ffff:10.0.0.1]/", "http://[::ffff:169.254.169.254]/",
    "http://[64:ff9b::a9fe:a9fe]/", "http://[2002:a9fe:a9fe::1]/", "http://[2002:c0a8:101::]/",
    "http://[64:ff9b:1::a00:1]/",
]


@pytest.mark.parametrize("template", LOOPBACK_SPELLINGS)
def test_every_spelling_of_this_machine_is_refused_before_connecting(
        receiver: Receiver, no_connection: list[Any], template: str) -> None:
    url = template.format(port=receiver.port)
    with pytest.raises(TargetRefused) as caught:
        check_target(url)
    assert not caught.value.retryable
    with pytest.raises(TargetRefused):
        post(url, BODY, secret=SECRET, event_id="e")
    assert no_connection == [] and receiver.requests == []


@pytest.mark.parametrize("url", NON_PUBLIC)
def test_every_non_public_address_is_refused_before_connecting(no_connection: list[Any], url: str) -> None:
    with pytest.raises(TargetRefused) as caught:
        post(url, BODY, secret=SECRET, event_id="e")
    assert ALLOW_ENV in str(caught.value)  # the message names the way out
    assert no_connection == []


@pytest.mark.parametrize("url", [
    "http://8.8.8.8/", "https://1.1.1.1:8443/x", "http://[2606:4700:4700::1111]/",
    "http://[::ffff:8.8.8.8]/", "http://[64:ff9b::808:808]/", "http://[2002:808:808::]/",
])
def test_public_addresses_pass(url: str) -> None:
    assert check_target(url)


def test_a_name_resolving_to_loopback_is_refused(receiver: Receiver, dns: dict[str, Any],
                                                 no_connection: list[Any]) -> None:
    dns["evil.test"] = [["127.0.0.1"]]
    with pytest.raises(TargetRefused) as caught:
        post(f"http://evil.test:{receiver.port}/hook", BODY, secret=SECRET, event_id="e")
    assert "evil.test" in str(caught.value) and "127.0.0.1" in str(caught.value)
    assert "loopback" in str(caught.value)
    assert receiver.requests == [] and no_connection == []


def test_one_bad_address_among_good_ones_refuses_the_name(dns: dict[str, Any]) -> None:
    dns["mixed.test"] = [["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c", "10.1.2.3"]]
    with pytest.raises(TargetRefused, match=r"10\.1\.2\.3, private"):
        check_target("https://mixed.test/hook")
    dns["mapped.test"] = [["93.184.215.14", "::ffff:192.168.0.1"]]
    with pytest.raises(TargetRefused, match=r"192\.168\.0\.1"):
        check_target("https://mapped.test/hook")


def test_a_name_that_does_not_resolve_is_a_retryable_failure(dns: dict[str, Any]) -> None:
    with pytest.raises(DeliveryFailed) as caught:
        check_target("https://gone.test/hook")
    assert caught.value.retryable and not isinstance(caught.value, TargetRefused)


def test_an_international_host_is_looked_up_in_punycode(dns: dict[str, Any]) -> None:
    dns["xn--e1afmkfd.xn--80akhbyknj4f"] = [["93.184.215.14"]]
    assert [str(a) for a in check_target("https://пример.испытание/hook")] == ["93.184.215.14"]


def test_the_address_connected_to_is_the_one_checked(dns: dict[str, Any], receiver: Receiver) -> None:
    """DNS rebinding: the first answer passes the check, the next points inside. post must
    not ask again."""
    try:
        internal = _start("127.0.0.2", receiver.port)
    except OSError:
        pytest.skip("127.0.0.2 is not usable on this machine")
    try:
        dns["hooks.test"] = [["127.0.0.1"], ["127.0.0.2"]]
        status = post(f"http://hooks.test:{receiver.port}/hook", BODY, secret=SECRET, event_id="e",
                      allowed=["127.0.0.1/32"])
        assert status == 200
        assert len(receiver.requests) == 1 and internal.requests == []
        assert receiver.requests[0].headers["Host"] == f"hooks.test:{receiver.port}"
        assert dns["calls"] == [["hooks.test"]]
        # the next answer, 127.0.0.2, is not allowed: refused, and still not connected
        with pytest.raises(TargetRefused, match=r"127\.0\.0\.2"):
            post(f"http://hooks.test:{receiver.port}/hook", BODY, secret=SECRET, event_id="e",
                 allowed=["127.0.0.1/32"])
        assert internal.requests == []
    finally:
        internal.server.shutdown()
        internal.server.server_close()


# --- the allow-list -----------------------------------------------------------------------

def test_the_allow_list_takes_names_addresses_and_networks(dns: dict[str, Any], receiver: Receiver) -> None:
    dns["crm-hooks.test"] = [["127.0.0.1"]]
    url = f"http://crm-hooks.test:{receiver.port}/hook"
    for allowed in (["crm-hooks.test"], ["CRM-Hooks.test."], ["127.0.0.1"], ["127.0.0.0/8"],
                    ["::ffff:127.0.0.1"]):
        assert post(url, BODY, secret=None, event_id="e", allowed=allowed) == 200
    for allowed in (["other.test"], ["10.0.0.0/8"], ["127.0.0.2"], ["hooks.test"]):
        with pytest.raises(TargetRefused):
            check_target(url, allowed)
    dns["xn--e1afmkfd.test"] = [["127.0.0.1"]]
    assert check_target("https://пример.test/", ["Пример.test"]) == check_target(
        "https://xn--e1afmkfd.test/", ["xn--e1afmkfd.test"])


def test_the_allow_list_allows_only_what_it_names(receiver: Receiver) -> None:
    with pytest.raises(TargetRefused, match="scheme"):
        check_target(f"ftp://127.0.0.1:{receiver.port}/", ["127.0.0.1"])
    with pytest.raises(TargetRefused, match="user name"):
        check_target(f"http://a@127.0.0.1:{receiver.port}/", ["127.0.0.1"])
    with pytest.raises(TargetRefused, match="private"):
        check_target("http://192.168.0.1/", ["127.0.0.1", "10.0.0.0/8"])


def test_the_allow_list_comes_from_the_environment() -> None:
    assert allowed_from_env({}) == ()
    assert allowed_from_env({ALLOW_ENV: " hooks.internal , 10.20.0.0/16,,127.0.0.1 "}) == (
        "hooks.internal", "10.20.0.0/16", "127.0.0.1")
    for bad in ("10.0.0.0/33", "hooks internal", "http://hooks.internal/", "10.0.0.1/x"):
        with pytest.raises(SettingsError, match=ALLOW_ENV):
            allowed_from_env({ALLOW_ENV: bad})


# --- signatures ---------------------------------------------------------------------------

def test_the_signature_recipe() -> None:
    header = sign(b"key", 1700000000, b'{"a":1}')
    import hashlib
    import hmac
    expected = hmac.new(b"key", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"


@pytest.mark.parametrize(("mutate", "ok"), [
    (lambda h, b, s, now: (h, b, s, now), True),
    (lambda h, b, s, now: (h, b, s, now + 300), True),
    (lambda h, b, s, now: (h, b, s, now + 301), False),          # replayed later
    (lambda h, b, s, now: (h, b, s, now - 301), False),          # from the future
    (lambda h, b, s, now: (h, b + b" ", s, now), False),         # body changed
    (lambda h, b, s, now: (h, b, b"other", now), False),         # wrong secret
    (lambda h, b, s, now: (h.replace("t=", "t=1"), b, s, now), False),
    (lambda h, b, s, now: ("", b, s, now), False),
    (lambda h, b, s, now: ("garbage", b, s, now), False),
    (lambda h, b, s, now: (h.split(",")[1], b, s, now), False),  # no timestamp
    (lambda h, b, s, now: (h.split(",")[0], b, s, now), False),  # no signature
    (lambda h, b, s, now: (h + ",v1=ايران,v1=中国", b, s, now), True),
    (lambda h, b, s, now: ("t=١٧٠٠٠٠٠٠٠٠," + h.split(",")[1], b, s, now), False),  # Arabic digits
    (lambda h, b, s, now: ("v1=00," + h, b, s, now), True),      # rotated secrets: any v1
])
def test_verify(mutate: Callable[..., tuple[str, bytes, bytes, float]], ok: bool) -> None:
    header, body, secret, now = mutate(sign(SECRET, 1700000000, BODY), BODY, SECRET, 1700000000)
    assert verify(secret, header, body, now=now) is ok


# --- TLS ----------------------------------------------------------------------------------

@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=hooks.test", "-addext", "subjectAltName=DNS:hooks.test",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def test_https_sends_the_host_as_sni_and_verifies_the_certificate(
        certificate: tuple[Path, Path], dns: dict[str, Any]) -> None:
    cert, key = certificate
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    names: list[str | None] = []
    server_context.sni_callback = lambda sock, name, ctx: names.append(name)  # type: ignore[assignment,misc,return-value]
    secure = _start("127.0.0.1", tls=server_context)
    try:
        dns["hooks.test"] = [["127.0.0.1"]]
        url = f"https://hooks.test:{secure.port}/hook"
        trusting = ssl.create_default_context(cafile=str(cert))
        assert post(url, BODY, secret=SECRET, event_id="e", allowed=["hooks.test"], context=trusting) == 200
        assert names == ["hooks.test"]
        assert secure.requests[0].headers["Host"] == f"hooks.test:{secure.port}"
        with pytest.raises(DeliveryFailed, match="CERTIFICATE_VERIFY_FAILED"):
            post(url, BODY, secret=SECRET, event_id="e", allowed=["hooks.test"])
        assert len(secure.requests) == 1
    finally:
        secure.server.shutdown()
        secure.server.server_close()


def test_the_receivers_recipe_in_the_docs_verifies_our_signatures() -> None:
    """docs/automations.md shows receivers a stdlib-only check; it must accept what we sign
    and refuse what `verify` refuses."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "automations.md").read_text(encoding="utf-8")
    section = text.split("## Webhooks", 1)[1].split("\n## ", 1)[0]
    snippet = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(compile(snippet, "docs/automations.md", "exec"), namespace)
    check = namespace["kartoteka_signature_ok"]
    now = int(time.time())
    header = sign(SECRET, now, BODY)
    assert check(SECRET, header, BODY)
    assert check(SECRET, header + ",v1=ايران", BODY)
    assert not check(SECRET, header, BODY + b" ")
    assert not check(b"other", header, BODY)
    assert not check(SECRET, sign(SECRET, now - 301, BODY), BODY)
    assert not check(SECRET, "garbage", BODY)
    assert not check(SECRET, "t=١٧," + header.split(",")[1], BODY)
