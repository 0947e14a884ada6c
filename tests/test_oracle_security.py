"""Who may call the chief: the token on every call, TLS, the bind address, and their flags."""

import datetime
import ipaddress
import json
import stat
from concurrent import futures

import grpc
import keras_tuner
import pytest
from keras_tuner.engine.trial import TrialStatus
from keras_tuner.src import protos
from keras_tuner.src.distribute.oracle_chief import OracleServicer

from conftest import require, run_script
from lora_keras.cli import flag_message
from lora_keras.errors import InputError
from test_tune_errors import assert_one_line_exit_2, load_tune
from tuners.cluster import Cluster
from tuners.oracle_security import (
    TOKEN_ENV, TOKEN_FILE, TlsFiles, TokenInterceptor, authenticated_channel, check_bind_address, chief_token,
    worker_token,
)
from tuners.roles import chief_error
from tuners.search_space import SearchSpace
from tuners.strategies import make_oracle
from tuners.tuner import LoraTuner

TOKEN = "the-right-token"
ECHO = "/lora_keras.test.Echo/Metadata"  # a generic unary-unary handler, as the chief's heartbeat is
SERVICE = protos.get_service()


@pytest.fixture(autouse=True)
def no_token_env(monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)


def one_line(error):
    text = str(error)
    assert "\n" not in text
    return text


# -- the token -------------------------------------------------------------------------------------
def test_chief_makes_a_private_token_file_once_and_the_env_wins(tmp_path, monkeypatch):
    run_dir = tmp_path / "logs" / "study"  # not there yet: the chief makes it
    token = chief_token(run_dir)
    path = run_dir / TOKEN_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(token) >= 40
    assert path.read_text().strip() == token
    assert chief_token(run_dir) == token and worker_token(run_dir) == token  # reused, and read by workers
    monkeypatch.setenv(TOKEN_ENV, "from-the-env")
    assert chief_token(run_dir) == worker_token(run_dir) == "from-the-env"
    assert path.read_text().strip() == token  # the file is left alone


def test_chief_token_ignores_an_empty_env_and_keeps_a_token_file_it_finds(tmp_path, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, "")
    (tmp_path / TOKEN_FILE).write_text("provisioned-token\n")
    assert chief_token(tmp_path) == "provisioned-token"


def test_worker_without_a_token_is_told_both_ways_to_get_one(tmp_path):
    with pytest.raises(InputError) as caught:
        worker_token(tmp_path)
    message = one_line(caught.value)
    assert TOKEN_ENV in message and str(tmp_path / TOKEN_FILE) in message and "start the chief" in message


def test_a_token_grpc_cannot_send_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv(TOKEN_ENV, "two words")
    with pytest.raises(InputError, match="printable ASCII"):
        worker_token(tmp_path)


# -- the chief's check, on every call of keras-tuner's protocol ---------------------------------------
@pytest.fixture
def chief(tmp_path):
    """keras-tuner's servicer around a real grid oracle, behind the token check; (oracle, address)."""
    space = SearchSpace(ranks=(1, 2, 3), batch_sizes=(8,))
    hp = keras_tuner.HyperParameters()
    space.declare(hp)
    oracle = make_oracle("grid", keras_tuner.Objective("val_loss", "min"), 3, hp, 0)
    # So that UpdateSpace would change the space: only the token check stops it.
    oracle.allow_new_entries = oracle.tune_new_entries = True
    LoraTuner(oracle, tmp_path, space, max_epochs=1, verbose=0)  # sets the oracle's directory
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1), interceptors=[TokenInterceptor(TOKEN)])
    protos.get_service_grpc().add_OracleServicer_to_server(OracleServicer(oracle), server)
    server.add_generic_rpc_handlers([echo_handler()])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield oracle, f"127.0.0.1:{port}"
    server.stop(0).wait()


def echo_handler():
    def echo(request, context):
        return json.dumps(sorted(context.invocation_metadata())).encode()

    handler = grpc.unary_unary_rpc_method_handler(echo)
    return grpc.method_handlers_generic_handler(ECHO.split("/")[1], {ECHO.split("/")[2]: handler})


def every_call(stub, oracle, trial_id):
    """Each of keras-tuner's calls, as a worker (or an intruder) makes them; name -> thunk."""
    injected = oracle.get_space().copy()
    injected.Fixed("injected", 1)
    trial = oracle.get_trial(trial_id).to_proto()
    trial.status = TrialStatus.to_proto(TrialStatus.COMPLETED)
    return {
        "GetSpace": lambda: stub.GetSpace(SERVICE.GetSpaceRequest(), timeout=10),
        "UpdateSpace": lambda: stub.UpdateSpace(
            SERVICE.UpdateSpaceRequest(hyperparameters=injected.to_proto()), timeout=10),
        "CreateTrial": lambda: stub.CreateTrial(SERVICE.CreateTrialRequest(tuner_id="intruder"), timeout=10),
        "UpdateTrial": lambda: stub.UpdateTrial(
            SERVICE.UpdateTrialRequest(trial_id=trial_id, metrics={"val_loss": 0.0}, step=0), timeout=10),
        "GetTrial": lambda: stub.GetTrial(SERVICE.GetTrialRequest(trial_id=trial_id), timeout=10),
        "GetBestTrials": lambda: stub.GetBestTrials(SERVICE.GetBestTrialsRequest(num_trials=1), timeout=10),
        "EndTrial": lambda: stub.EndTrial(SERVICE.EndTrialRequest(trial=trial), timeout=10),
    }


def oracle_state(oracle, directory):
    return json.dumps(oracle.get_state(), sort_keys=True), sorted(p.name for p in directory.rglob("*"))


@pytest.mark.parametrize("credentials", ["none", "wrong"])
def test_a_call_without_the_token_is_refused_and_changes_nothing(chief, tmp_path, credentials):
    oracle, address = chief
    with authenticated_channel(address, TOKEN) as worker:
        trial = protos.get_service_grpc().OracleStub(worker).CreateTrial(
            SERVICE.CreateTrialRequest(tuner_id="w"), timeout=10).trial
    before = oracle_state(oracle, tmp_path)
    channel = grpc.insecure_channel(address) if credentials == "none" else authenticated_channel(address, "wrong")
    with channel:
        calls = every_call(protos.get_service_grpc().OracleStub(channel), oracle, trial.trial_id)
        assert len(calls) == 7
        for name, call in calls.items():
            with pytest.raises(grpc.RpcError) as refused:
                call()
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, name
            detail = one_line(refused.value.details())
            assert TOKEN_ENV in detail and TOKEN_FILE in detail
    assert oracle_state(oracle, tmp_path) == before
    assert list(oracle.ongoing_trials) == ["w"] and "injected" not in oracle.get_space()
    metrics = oracle.get_trial(trial.trial_id).metrics
    assert not metrics.exists("val_loss") or metrics.get_history("val_loss") == []


def test_every_call_with_the_token_works(chief):
    oracle, address = chief
    with authenticated_channel(address, TOKEN) as channel:
        stub = protos.get_service_grpc().OracleStub(channel)
        trial = stub.CreateTrial(SERVICE.CreateTrialRequest(tuner_id="w"), timeout=10).trial
        for name, call in every_call(stub, oracle, trial.trial_id).items():
            if name != "CreateTrial":  # "w" holds a trial: its next one comes after EndTrial
                call()
    assert "injected" in oracle.get_space() and oracle.get_trial(trial.trial_id).status == "COMPLETED"
    assert oracle.get_trial(trial.trial_id).metrics.get_last_value("val_loss") == 0.0


def test_an_authenticated_channel_merges_metadata_and_waits_like_any_channel(chief):
    _, address = chief
    with authenticated_channel(address, TOKEN, metadata=(("worker-id", "w1"), ("session", "s"))) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        echo = channel.unary_unary(ECHO)
        sent = dict(json.loads(echo(b"", metadata=(("session", "mine"), ("attempt", "2")), timeout=10)))
    assert sent["authorization"] == f"Bearer {TOKEN}" and sent["worker-id"] == "w1"
    assert sent["session"] == "mine" and sent["attempt"] == "2"  # the call's own keys win
    with grpc.insecure_channel(address) as bare, pytest.raises(grpc.RpcError) as refused:
        bare.unary_unary(ECHO)(b"", timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED  # generic handlers are checked too


def test_a_worker_with_a_wrong_token_stops_at_once_with_one_line(chief):
    _, address = chief
    host, port = address.rsplit(":", 1)
    cluster = Cluster("worker", host, int(port), "w1", chief_timeout_s=10)
    cluster.wait_for_chief()  # the chief answers whoever knocks: the token is checked per call
    with pytest.raises(InputError) as caught:
        cluster.authenticate("wrong")
    message = one_line(caught.value)
    assert message.startswith(f"the chief at {address} refused this worker's oracle token") and TOKEN_ENV in message
    cluster.authenticate(TOKEN)
    assert cluster.token == TOKEN


def test_chief_error_names_the_token_when_the_chief_refuses_it():
    class Refused(grpc.RpcError):
        def code(self):
            return grpc.StatusCode.UNAUTHENTICATED

        def details(self):
            return "no valid oracle token"

    said = chief_error(Cluster("worker", "10.0.0.5", 8000, "w1"), Refused())
    assert isinstance(said, InputError) and TOKEN_ENV in one_line(said) and TOKEN_FILE in str(said)
    assert str(said).startswith("the chief at 10.0.0.5:8000 refused this worker's oracle token")


# -- TLS -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """A CA, the chief's certificate (127.0.0.1, localhost) and a worker's client certificate it signed."""
    require("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder = tmp_path_factory.mktemp("tls")
    now = datetime.datetime.now(datetime.timezone.utc)

    def issue(name, issuer=None, issuer_key=None, ca=False, sans=(), usage=None):
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer or subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        if usage:
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        cert = builder.sign(issuer_key or key, hashes.SHA256())
        (folder / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (folder / f"{name}.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        return subject, key

    ca_name, ca_key = issue("ca", ca=True)
    issue("chief", ca_name, ca_key, sans=(x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")),
          usage=ExtendedKeyUsageOID.SERVER_AUTH)
    issue("worker", ca_name, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    return {name: str(folder / name) for name in ("ca.pem", "chief.pem", "chief.key", "worker.pem", "worker.key")}


def tls_chief(tls):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1), interceptors=[TokenInterceptor(TOKEN)])
    server.add_generic_rpc_handlers([echo_handler()])
    port = server.add_secure_port("127.0.0.1:0", tls.server_credentials())
    server.start()
    return server, f"127.0.0.1:{port}"


def echo_over(address, tls):
    with authenticated_channel(address, TOKEN, tls) as channel:
        return channel.unary_unary(ECHO)(b"", timeout=5)


def test_tls_worker_trusts_the_chief_by_its_ca_and_plain_grpc_cannot_reach_it(certificates):
    server, address = tls_chief(TlsFiles(certificates["chief.pem"], certificates["chief.key"]))
    try:
        assert b"authorization" in echo_over(address, TlsFiles(ca=certificates["ca.pem"]))
        cluster = Cluster("worker", "127.0.0.1", int(address.rsplit(":")[1]), "w1", chief_timeout_s=5,
                          tls=TlsFiles(ca=certificates["ca.pem"]), token=TOKEN)
        cluster.wait_for_chief()
        with cluster.channel() as channel:
            channel.unary_unary(ECHO)(b"", timeout=5)
        for tls in (None, TlsFiles(ca=certificates["worker.pem"])):  # no TLS; a CA that did not sign it
            with pytest.raises(grpc.RpcError) as failed:
                echo_over(address, tls)
            assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        cluster.tls, cluster.chief_timeout_s = TlsFiles(ca=certificates["worker.pem"]), 1
        with pytest.raises(InputError) as caught:
            cluster.wait_for_chief()
        assert "no chief answered" in one_line(caught.value) and "--tls-ca signed" in flag_message(caught.value)
        cluster.tls = None  # plain gRPC: the TLS chief never answers it
        with pytest.raises(InputError, match="no chief answered"):
            cluster.wait_for_chief()
    finally:
        server.stop(0).wait()


def test_tls_chief_with_a_ca_requires_client_certificates(certificates):
    server, address = tls_chief(TlsFiles(certificates["chief.pem"], certificates["chief.key"], certificates["ca.pem"]))
    try:
        with pytest.raises(grpc.RpcError) as refused:
            echo_over(address, TlsFiles(ca=certificates["ca.pem"]))
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        client = TlsFiles(certificates["worker.pem"], certificates["worker.key"], certificates["ca.pem"])
        assert b"authorization" in echo_over(address, client)
    finally:
        server.stop(0).wait()


def test_tls_files_name_their_flag(tmp_path, certificates):
    not_pem = tmp_path / "cert.txt"
    not_pem.write_text("hello")
    for make, message in [
        (lambda: TlsFiles(ca=str(tmp_path / "missing.pem")), "--tls-ca "),
        (lambda: TlsFiles(str(not_pem), certificates["chief.key"]), "--tls-cert "),
        (lambda: TlsFiles(cert=certificates["chief.pem"]), "--tls-cert needs --tls-key"),
        (lambda: TlsFiles(ca=certificates["ca.pem"]).server_credentials(), "--tls-cert: the chief serves TLS"),
    ]:
        with pytest.raises(InputError) as caught:
            make()
        assert flag_message(caught.value).startswith(message) and "\n" not in str(caught.value)


# -- the bind address -------------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "10.1.2.3", "172.16.0.9", "192.168.1.5", "::1",
                                  "[::1]", "fd00::5", "169.254.1.1"])
def test_loopback_and_private_addresses_may_be_listened_on(host):
    check_bind_address(host, allow_public=False)


@pytest.mark.parametrize("host, why", [("0.0.0.0", "every interface"), ("::", "every interface"),
                                       ("[::]", "every interface"), ("", "every interface"),
                                       ("8.8.8.8", "a public address"), ("::ffff:8.8.8.8", "a public address"),
                                       ("2001:4860:4860::8888", "a public address")])
def test_wildcard_and_public_addresses_need_allow_public_bind(host, why):
    with pytest.raises(InputError) as caught:
        check_bind_address(host, allow_public=False)
    message = flag_message(caught.value)
    assert message.startswith("--oracle-address") and why in message and "--allow-public-bind" in message
    assert "\n" not in message
    check_bind_address(host, allow_public=True)


# -- tune.py's flags --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "extra, message",
    [
        (["--distributed", "chief", "--oracle-address", "0.0.0.0:8000"], "listens on every interface"),
        (["--distributed", "chief", "--oracle-address", "8.8.8.8:8000"], "--allow-public-bind"),
        (["--distributed", "worker", "--oracle-address", "h:1", "--allow-public-bind"],
         "--allow-public-bind is for the chief only"),
        (["--distributed", "worker", "--oracle-address", "h:1", "--lease-s", "30"], "--lease-s is for the chief only"),
        (["--lease-s", "30"], "--lease-s needs --distributed chief"),
        (["--distributed", "chief", "--oracle-address", "h:1", "--lease-s", "0"], "--lease-s: must be positive"),
        (["--tls-ca", "ca.pem"], "--tls-ca needs --distributed"),
        (["--distributed", "worker", "--oracle-address", "h:1", "--tls-cert", "c.pem"], "--tls-cert needs --tls-key"),
        (["--distributed", "worker", "--oracle-address", "h:1", "--tls-key", "k.pem"], "--tls-key needs --tls-cert"),
        (["--distributed", "chief", "--oracle-address", "127.0.0.1:1", "--tls-ca", "ca.pem"],
         "--tls-ca on the chief needs --tls-cert"),
        (["--distributed", "worker", "--oracle-address", "h:1", "--tls-ca", "/no/such/ca.pem"],
         "--tls-ca /no/such/ca.pem: cannot read it"),
    ],
)
def test_bad_security_flags_exit_2_with_one_line(extra, message, capsys):
    with pytest.raises(SystemExit) as caught:
        load_tune().main(extra)
    assert_one_line_exit_2(caught.value.code, capsys.readouterr().err, message)


def test_a_public_bind_is_one_line_in_a_real_process():
    """Only a process shows what native libraries print on stderr while the check loads its module."""
    result = run_script("tune.py", "--distributed", "chief", "--oracle-address", "0.0.0.0:8000")
    assert_one_line_exit_2(result.returncode, result.stderr, "--oracle-address 0.0.0.0: listens on every interface")


def test_security_flags_reach_the_cluster(certificates):
    tune = load_tune()
    args = tune.build_parser().parse_args([
        "--distributed", "chief", "--oracle-address", "0.0.0.0:8000", "--allow-public-bind", "--lease-s", "30",
        "--tls-cert", certificates["chief.pem"], "--tls-key", certificates["chief.key"]])
    tune.check_security_flags(args)
    cluster = tune.sweep_config(args, (("q", "v"),)).cluster
    assert (cluster.lease_s, cluster.allow_public_bind, cluster.tls.cert) == (30.0, True, certificates["chief.pem"])
    plain = tune.sweep_config(tune.build_parser().parse_args(["--distributed", "worker", "--oracle-address", "h:1"]),
                              (("q", "v"),)).cluster
    assert plain.lease_s == 120.0 and plain.tls is None and not plain.allow_public_bind
