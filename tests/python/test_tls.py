"""TLS and mutual TLS end to end on the real `loraserve serve`: a CA, server and client
certificates made here with the openssl command line; a client with a certificate the CA signed
is served on gRPC and HTTPS, while a client without one, one with a certificate from another CA,
one that does not trust the server, and a plaintext client are all refused."""
import os
import signal
import socket
import ssl
import subprocess
import time
import sys

import grpc
import httpx
import pytest

from conftest import ROOT, loraserve_bin
from test_grpc_server import free_port, stubs  # noqa: F401  (the gRPC stubs fixture)

TOKEN = "tls-admin-token"


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
            "-subj", f"/CN={name}", cwd=d)


def make_cert(d, name, ca, server):
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    ext = f"{name}.ext"
    with open(os.path.join(d, ext), "w") as f:
        if server:
            f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
        else:
            f.write("extendedKeyUsage=clientAuth\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", ext, cwd=d)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("certs"))
    make_ca(d, "ca")
    make_ca(d, "rogue-ca")
    make_cert(d, "server", "ca", server=True)
    make_cert(d, "client", "ca", server=False)
    make_cert(d, "rogue-client", "rogue-ca", server=False)
    return {name: os.path.join(d, name) for name in
            ("ca", "rogue-ca", "server", "client", "rogue-client")}


def read(path):
    with open(path, "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("tls_model"))
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "gen_model.py"), "--out", out,
                    "--seed", "1"], check=True, capture_output=True)
    return out


def serve(model, certs, tmp_path, client_ca=True):
    port, http_port = free_port(), free_port()
    args = [loraserve_bin(), "serve", "--model", model, "--listen", f"127.0.0.1:{port}",
            "--http-listen", f"127.0.0.1:{http_port}", "--metrics-listen", "",
            "--served-model-name", "tiny", "--admin-token", TOKEN,
            "--tls-cert", certs["server"] + ".pem", "--tls-key", certs["server"] + ".key",
            "--http-tls-cert", certs["server"] + ".pem", "--http-tls-key",
            certs["server"] + ".key"]
    if client_ca:
        args += ["--tls-client-ca", certs["ca"] + ".pem",
                 "--http-tls-client-ca", certs["ca"] + ".pem"]
    log = open(tmp_path / f"server-{port}.log", "w")
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log)
    return proc, port, http_port, log


def stop(proc, log):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


def credentials(certs, root="ca", client="client"):
    return grpc.ssl_channel_credentials(
        root_certificates=read(certs[root] + ".pem"),
        private_key=read(certs[client] + ".key") if client else None,
        certificate_chain=read(certs[client] + ".pem") if client else None)


def model_info(stubs, channel, timeout=10):  # noqa: F811
    inference = stubs["inference_pb2_grpc"].InferenceStub(channel)
    return inference.GetModelInfo(stubs["inference_pb2"].GetModelInfoRequest(), timeout=timeout)


def refused(stubs, channel):  # noqa: F811
    with pytest.raises(grpc.RpcError) as error:
        model_info(stubs, channel, timeout=5)
    return error.value.code()


def https(certs, client=True, root="ca"):
    context = ssl.create_default_context(cafile=certs[root] + ".pem")
    if client:
        context.load_cert_chain(certs["client"] + ".pem", certs["client"] + ".key")
    return httpx.Client(verify=context, timeout=10)


def wait_ready(stubs, certs, port):  # noqa: F811
    # The port opens before the model has loaded (UNAVAILABLE "model is still loading" until
    # then); on a loaded machine that takes seconds, so retry that one status.
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials(certs)) as channel:
        grpc.channel_ready_future(channel).result(timeout=60)
        deadline = time.time() + 60
        while True:
            try:
                assert model_info(stubs, channel).hidden_size == 64
                return
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE or time.time() > deadline:
                    raise
            time.sleep(0.2)


def test_mutual_tls_admits_only_clients_the_ca_signed(stubs, model, certs, tmp_path):  # noqa: F811
    proc, port, http_port, log = serve(model, certs, tmp_path)
    target = f"127.0.0.1:{port}"
    try:
        wait_ready(stubs, certs, port)
        with grpc.secure_channel(target, credentials(certs)) as channel:
            admin = stubs["admin_pb2_grpc"].AdminStub(channel)
            admin.ListAdapters(stubs["admin_pb2"].ListAdaptersRequest(),
                               metadata=(("authorization", f"Bearer {TOKEN}"),), timeout=10)
        for creds in (credentials(certs, client=None),                  # no client certificate
                      credentials(certs, client="rogue-client"),        # another CA's
                      credentials(certs, root="rogue-ca")):             # does not trust us
            with grpc.secure_channel(target, creds) as channel:
                assert refused(stubs, channel) == grpc.StatusCode.UNAVAILABLE
        with grpc.insecure_channel(target) as channel:
            assert refused(stubs, channel) == grpc.StatusCode.UNAVAILABLE
        # The CLI's client flags reach the same server.
        cli = subprocess.run(
            [loraserve_bin(), "generate", "--server", target, "--prompt-ids", "1,2,3",
             "--max-tokens", "3", "--print-ids", "--ignore-eos", "--tls-ca", certs["ca"] + ".pem",
             "--tls-cert", certs["client"] + ".pem", "--tls-key", certs["client"] + ".key"],
            capture_output=True, text=True, timeout=60)
        assert cli.returncode == 0, cli.stderr

        url = f"https://127.0.0.1:{http_port}"
        with https(certs) as client:
            assert client.get(url + "/health").status_code == 200
            r = client.post(url + "/v1/completions",
                            json={"model": "tiny", "prompt": [1, 2, 3], "max_tokens": 2})
            assert r.status_code == 200, r.text
        for kwargs in ({"client": False}, {"root": "rogue-ca"}):
            with https(certs, **kwargs) as client, pytest.raises(httpx.TransportError):
                client.get(url + "/health")
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{http_port}/health", timeout=10)
        # A raw plaintext request on the TLS port gets no HTTP answer.
        with socket.create_connection(("127.0.0.1", http_port), timeout=10) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                reply = s.recv(4096)
            except (ConnectionResetError, socket.timeout):
                reply = b""
            assert not reply.startswith(b"HTTP/1.1 200"), reply
        assert proc.poll() is None
    finally:
        stop(proc, log)


def test_tls_without_client_ca_serves_any_tls_client_and_refuses_plaintext(
        stubs, model, certs, tmp_path):  # noqa: F811
    proc, port, http_port, log = serve(model, certs, tmp_path, client_ca=False)
    target = f"127.0.0.1:{port}"
    try:
        wait_ready(stubs, certs, port)
        with grpc.secure_channel(target, credentials(certs, client=None)) as channel:
            assert model_info(stubs, channel).hidden_size == 64
        with grpc.insecure_channel(target) as channel:
            assert refused(stubs, channel) == grpc.StatusCode.UNAVAILABLE
        with https(certs, client=False) as client:
            assert client.get(f"https://127.0.0.1:{http_port}/health").status_code == 200
    finally:
        stop(proc, log)


def test_bad_tls_flags_fail_at_start(model, certs, tmp_path):
    for extra in (["--tls-cert", certs["server"] + ".pem"],
                  ["--tls-client-ca", certs["ca"] + ".pem"],
                  ["--http-tls-cert", certs["server"] + ".pem"],
                  ["--http-tls-cert", certs["server"] + ".pem", "--http-tls-key",
                   certs["client"] + ".key"]):  # a key that does not match the certificate
        proc = subprocess.run(
            [loraserve_bin(), "serve", "--model", model, "--listen", f"127.0.0.1:{free_port()}",
             "--http-listen", f"127.0.0.1:{free_port()}", "--metrics-listen", "", *extra],
            capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0, extra
        assert "tls" in proc.stderr.lower(), (extra, proc.stderr)
