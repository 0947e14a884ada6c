"""Who may call the chief: a shared token on every call, TLS on untrusted networks, a private bind address.

Whoever holds the token may draw trials, report metrics and end trials, so it is the sweep's one
secret: `LORA_KERAS_ORACLE_TOKEN`, else `LOGDIR/NAME/oracle.token`, which the chief makes (mode
0600) on its first start and workers read from the shared run directory. The chief checks it on
every call (`TokenInterceptor`); a worker sends it on every call (`authenticated_channel`).

Example:
```python
token = chief_token(run_dir)                   # the chief: the env's, the file's, or a new one
check_bind_address("10.0.0.5", allow_public=False)
server = grpc.server(executor, interceptors=[TokenInterceptor(token)])
channel = authenticated_channel("10.0.0.5:8000", worker_token(run_dir), TlsFiles(ca="ca.pem"))
```
"""

import collections
import dataclasses
import hmac
import ipaddress
import os
import pathlib
import secrets
import socket
import time

import grpc

from lora_keras.errors import InputError

TOKEN_ENV = "LORA_KERAS_ORACLE_TOKEN"
TOKEN_FILE = "oracle.token"
AUTHORIZATION = "authorization"
_BEARER = "Bearer "
_PARTIAL_READ_S = 1.0  # how long a reader waits for a token file another chief is writing
_REFUSED = (f"no valid oracle token: set {TOKEN_ENV} to the chief's, or give this worker the chief's "
            f"run directory with its {TOKEN_FILE}")


def chief_token(run_dir: str | os.PathLike) -> str:
    """The chief's token: `LORA_KERAS_ORACLE_TOKEN`, else `run_dir/oracle.token`, made (0600) if missing.

    The file is created with `O_EXCL` and mode 0600 from the start: never readable by others, and of
    two chiefs starting at once, one writes it and the other reads it.

    Example: `chief_token("logs/study")` -> a 43-character token, the same on every later call.
    """
    token = _env_token()
    if token is not None:
        return token
    path = pathlib.Path(run_dir) / TOKEN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _file_token(path)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token


def worker_token(run_dir: str | os.PathLike) -> str:
    """A worker's token: `LORA_KERAS_ORACLE_TOKEN`, else the chief's `run_dir/oracle.token`.

    A token file is read whatever its mode (an administrator may share one with a group);
    the chief's own is always 0600. Neither there: `InputError` naming both and the fix.

    Example: `worker_token("/shared/logs/study")` -> the chief's token.
    """
    token = _env_token()
    if token is not None:
        return token
    path = pathlib.Path(run_dir) / TOKEN_FILE
    if not path.is_file():
        raise InputError(
            f"no oracle token: {TOKEN_ENV} is not set and {path} does not exist; start the chief first "
            f"on this run directory (it writes {TOKEN_FILE}), or set {TOKEN_ENV} to the chief's token"
        )
    return _file_token(path)


def token_refused(address: str) -> InputError:
    """The one-line `InputError` of a worker whose token the chief at `address` refused (UNAUTHENTICATED).

    Example: `raise token_refused("10.0.0.5:8000")`.
    """
    return InputError(
        f"the chief at {address} refused this worker's oracle token: set {TOKEN_ENV} to the chief's, "
        f"or give workers the chief's run directory with its {TOKEN_FILE}"
    )


class TokenInterceptor(grpc.ServerInterceptor):
    """The chief's check of every call: `authorization: Bearer <token>`, compared in constant time.

    A call without it, or with another token, is answered UNAUTHENTICATED and never reaches its
    handler, so it changes nothing. Works for every kind of handler (keras-tuner's are unary-unary).

    Example: `grpc.server(executor, interceptors=[TokenInterceptor(chief_token(run_dir))])`.
    """

    def __init__(self, token: str):
        self._expected = (_BEARER + token).encode()

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or self._authorized(handler_call_details.invocation_metadata or ()):
            return handler
        return _refusing(handler)

    def _authorized(self, metadata) -> bool:
        given = [value for key, value in metadata if key == AUTHORIZATION]
        if len(given) != 1 or not isinstance(given[0], str):
            return False
        try:
            presented = given[0].encode("ascii")
        except UnicodeEncodeError:
            return False
        return hmac.compare_digest(presented, self._expected)


def _refusing(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of `handler`'s kind that answers UNAUTHENTICATED and reads nothing."""

    def refuse(request_or_iterator, context):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, _REFUSED)

    def refuse_stream(request_or_iterator, context):
        refuse(request_or_iterator, context)
        yield  # a generator, as a streaming handler must be; never reached

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse_stream)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse_stream)
    return grpc.unary_unary_rpc_method_handler(refuse)


@dataclasses.dataclass
class TlsFiles:
    """PEM files for TLS between the chief and its workers.

    For the chief, `cert` and `key` are its server certificate, and `ca` (optional) makes it
    require client certificates signed by that CA. For a worker, `ca` verifies the chief's
    certificate (None: the system's roots), and `cert` and `key` (optional) are its client
    certificate. The certificate must name the host the workers dial (its subjectAltName).
    A missing or unreadable file, or one that is not PEM, is an `InputError` naming its flag.

    Example:
    ```python
    server.add_secure_port("10.0.0.5:8000", TlsFiles("chief.pem", "chief.key").server_credentials())
    channel = authenticated_channel("10.0.0.5:8000", token, TlsFiles(ca="ca.pem"))
    ```
    """

    cert: str | None = None
    key: str | None = None
    ca: str | None = None
    _pem: dict = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        if bool(self.cert) != bool(self.key):
            given, missing = ("tls_cert", "tls_key") if self.cert else ("tls_key", "tls_cert")
            raise InputError(f"{given} needs `{missing}` too: a certificate and its private key", parameter=given)
        for name in ("cert", "key", "ca"):
            if getattr(self, name):
                self._pem[name] = _read_pem(getattr(self, name), f"tls_{name}")

    def server_credentials(self) -> grpc.ServerCredentials:
        """The chief's credentials: its certificate; client certificates required when `ca` is given."""
        if not self.cert:
            raise InputError("tls_cert: the chief serves TLS with its own certificate; pass `tls_cert` and "
                             "`tls_key`", parameter="tls_cert")
        return grpc.ssl_server_credentials(
            [(self._pem["key"], self._pem["cert"])], root_certificates=self._pem.get("ca"),
            require_client_auth="ca" in self._pem,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """A worker's credentials: the chief checked against `ca` (else the system's roots), its own cert if any."""
        return grpc.ssl_channel_credentials(
            root_certificates=self._pem.get("ca"), private_key=self._pem.get("key"),
            certificate_chain=self._pem.get("cert"),
        )


def open_channel(address: str, tls: TlsFiles | None = None) -> grpc.Channel:
    """A channel to `address`, TLS when `tls` is given, without a token (enough to wait for the chief).

    Example: `grpc.channel_ready_future(open_channel("10.0.0.5:8000")).result(timeout=5)`.
    """
    if tls is None:
        return grpc.insecure_channel(address)
    return grpc.secure_channel(address, tls.channel_credentials())


def authenticated_channel(
    address: str, token: str, tls: TlsFiles | None = None, metadata: tuple = (),
) -> grpc.Channel:
    """A channel to the chief at `address` that sends the token and `metadata` on every call.

    Each call carries `authorization: Bearer <token>` and `metadata` (lowercase keys), merged with
    the call's own metadata, whose keys win. `grpc.channel_ready_future` works on it.

    Example:
    ```python
    channel = authenticated_channel("10.0.0.5:8000", token, metadata=(("worker-id", "w1"),))
    stub = protos.get_service_grpc().OracleStub(channel)
    ```
    """
    added = ((AUTHORIZATION, _BEARER + token), *metadata)
    return grpc.intercept_channel(open_channel(address, tls), _MetadataInterceptor(added))


def check_bind_address(host: str, allow_public: bool) -> None:
    """Refuse a chief's listening address that is a wildcard or public, unless `allow_public`.

    Loopback, private and link-local addresses pass; a host name passes when every address it
    resolves to does. Otherwise an `InputError` (`oracle_address`) says why and the fix.

    Example: `check_bind_address("10.0.0.5", False)` passes; `check_bind_address("0.0.0.0", False)` raises.
    """
    if allow_public:
        return
    name = host.strip("[]")
    advice = ("or pass `allow_public_bind` to listen there, with TLS (`tls_cert`, `tls_key`) on networks "
              "you do not trust")
    wildcard = (f"oracle_address {host or '(empty)'}: listens on every interface, public ones too; give this "
                f"machine's private address (e.g. 10.0.0.5) or 127.0.0.1, {advice}")
    if name in ("", "*"):
        raise InputError(wildcard, parameter="oracle_address")
    for address in _addresses(name, host):
        if address.is_unspecified:
            raise InputError(wildcard, parameter="oracle_address")
        if not (address.is_loopback or address.is_private or address.is_link_local):
            shown = host if str(address) == name else f"{host} ({address})"
            raise InputError(
                f"oracle_address {shown}: a public address, reachable from beyond your network; give a "
                f"private one (10.x, 172.16-31.x, 192.168.x) or 127.0.0.1, {advice}", parameter="oracle_address",
            )


def _addresses(name, host):
    """The IP addresses `name` is or resolves to; IPv4 for IPv4-mapped IPv6 (Python 3.11 calls them private)."""
    try:
        found = [ipaddress.ip_address(name)]
    except ValueError:
        try:
            found = [ipaddress.ip_address(info[4][0]) for info in socket.getaddrinfo(name, None)]
        except (socket.gaierror, UnicodeError) as error:
            raise InputError(f"oracle_address {host}: cannot resolve it ({error}); give an IP address of this "
                             "machine", parameter="oracle_address") from None
    return [a.ipv4_mapped if a.version == 6 and a.ipv4_mapped else a for a in found]


def _env_token():
    token = os.environ.get(TOKEN_ENV, "").strip()
    return _checked(token, TOKEN_ENV) if token else None


def _file_token(path):
    """The token in `path`; an empty file is waited for briefly (another chief writing it), then refused."""
    deadline = time.monotonic() + _PARTIAL_READ_S
    while True:
        try:
            token = path.read_text().strip()
        except (OSError, UnicodeDecodeError) as error:
            raise InputError(f"{path}: cannot read the oracle token ({error}); make it readable, or set "
                             f"{TOKEN_ENV}") from None
        if token:
            return _checked(token, str(path))
        if time.monotonic() > deadline:
            raise InputError(f"{path} is empty; delete it and restart the chief (it writes a new "
                             f"{TOKEN_FILE}), or set {TOKEN_ENV}")
        time.sleep(0.05)


def _checked(token, source):
    """`token`, unless gRPC could not send it: metadata values are printable ASCII."""
    if not all(33 <= ord(c) < 127 for c in token):
        raise InputError(f"{source}: the oracle token must be printable ASCII without spaces; e.g. "
                         "python -c 'import secrets; print(secrets.token_urlsafe(32))'")
    return token


def _read_pem(path, parameter):
    try:
        data = pathlib.Path(path).read_bytes()
    except OSError as error:
        raise InputError(f"{parameter} {path}: cannot read it ({error.strerror}); give a PEM file this "
                         "process can read", parameter=parameter) from None
    if b"-----BEGIN " not in data:
        raise InputError(f"{parameter} {path}: not a PEM file (no -----BEGIN line)", parameter=parameter)
    return data


class _CallDetails(
    collections.namedtuple("_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready",
                                            "compression")),
    grpc.ClientCallDetails,
):
    """A call's details with other metadata (gRPC's `ClientCallDetails` cannot be copied otherwise)."""


class _MetadataInterceptor(
    grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor,
):
    """Adds fixed metadata to every call; the call's own keys win."""

    def __init__(self, metadata):
        self._metadata = tuple(metadata)

    def _details(self, details):
        own = tuple(details.metadata or ())
        keys = {key for key, _ in own}
        metadata = tuple((k, v) for k, v in self._metadata if k not in keys) + own
        return _CallDetails(details.method, details.timeout, metadata, details.credentials,
                            details.wait_for_ready, details.compression)

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    intercept_unary_stream = intercept_unary_unary

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)

    intercept_stream_stream = intercept_stream_unary
