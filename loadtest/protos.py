"""Python stubs of loraserve's gRPC API, generated from proto/ at run time with grpc_tools.protoc.

Stubs are never checked in: they are built into a cache folder named after the hash of the
.proto files, so the load generator always speaks the API of the tree it lives in. The layout
(`proto/inference_pb2.py`, descriptors named `proto/inference.proto`) matches
tests/python/test_grpc_server.py, so both can share one Python process and descriptor pool.
"""
import hashlib
import importlib
import os
import shutil
import sys
import tempfile
from types import SimpleNamespace

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
PROTO_FILES = ("proto/inference.proto", "proto/admin.proto")
MODULES = ("inference_pb2", "inference_pb2_grpc", "admin_pb2", "admin_pb2_grpc")


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "loraserve-loadtest")


def _protos_digest() -> str:
    digest = hashlib.sha256()
    for name in PROTO_FILES:
        with open(os.path.join(ROOT, name), "rb") as f:
            digest.update(name.encode() + b"\0" + f.read() + b"\0")
    return digest.hexdigest()[:16]


def _generate(out: str) -> None:
    from grpc_tools import protoc

    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    args = ["protoc", f"-I{ROOT}", f"-I{include}", f"--python_out={out}",
            f"--grpc_python_out={out}", *PROTO_FILES]
    if protoc.main(args) != 0:
        raise RuntimeError(f"grpc_tools.protoc failed on {', '.join(PROTO_FILES)} under {ROOT}")
    open(os.path.join(out, "proto", "__init__.py"), "w").close()


def load_stubs(cache_dir: str = "") -> SimpleNamespace:
    """Returns the four generated modules as attributes (inference_pb2, admin_pb2_grpc, ...)."""
    target = os.path.join(cache_dir or default_cache_dir(), _protos_digest())
    if not os.path.isdir(target):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        staging = tempfile.mkdtemp(prefix="stubs-", dir=os.path.dirname(target))
        try:
            _generate(staging)
            os.rename(staging, target)
        except OSError:
            # Another process published the same digest first; its stubs are identical.
            if not os.path.isdir(target):
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    if target not in sys.path:
        sys.path.insert(0, target)
    return SimpleNamespace(**{m: importlib.import_module(f"proto.{m}") for m in MODULES})
