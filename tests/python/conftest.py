"""Shared fixtures for the Python reference tests: the built binary, generated models."""
import os
import subprocess
import sys

import numpy as np
import pytest
# torch first: loading grpc (with grpc_tools) before torch aborts the interpreter in a pthread
# mutex assertion, so a run of test files in which a gRPC test precedes a torch one would crash.
import torch  # noqa: F401

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tools"))


def loraserve_bin() -> str:
    path = os.environ.get("LORASERVE_BIN", os.path.join(ROOT, "build", "loraserve"))
    if not os.path.exists(path):
        raise RuntimeError(f"loraserve binary not found at {path}: build first (scripts/test.sh)")
    return path


def device_args(args) -> list:
    """LORASERVE_TEST_DEVICE=cuda (tests/gpu/run.sh on a GPU machine) runs the same references
    against the CUDA backend: --device cuda, with fp32 weights unless the test picks a dtype."""
    device = os.environ.get("LORASERVE_TEST_DEVICE", "")
    if not device or not args or args[0] not in ("logits", "generate"):
        return []
    extra = ["--device", device]
    if "--weight-dtype" not in args:
        extra += ["--weight-dtype", "fp32"]
    return extra


def run_loraserve(*args, **kwargs) -> subprocess.CompletedProcess:
    args = [*map(str, args)]
    return subprocess.run([loraserve_bin(), *args, *device_args(args)], capture_output=True,
                          text=True, timeout=kwargs.pop("timeout", 300), **kwargs)


def our_logits(model_dir, prompt_ids, tmp_path, all_positions=False, extra=()):
    out = os.path.join(tmp_path, "logits.bin")
    args = ["logits", "--model", model_dir, "--prompt-ids", ",".join(map(str, prompt_ids)),
            "--out", out, *extra]
    if all_positions:
        args.append("--all-positions")
    proc = run_loraserve(*args)
    assert proc.returncode == 0, proc.stderr
    return np.fromfile(out, dtype=np.float32)


def relative_error(ours, reference) -> float:
    ours = np.asarray(ours, dtype=np.float64).ravel()
    reference = np.asarray(reference, dtype=np.float64).ravel()
    assert ours.shape == reference.shape, (ours.shape, reference.shape)
    return float(np.max(np.abs(ours - reference)) / np.max(np.abs(reference)))


@pytest.fixture(scope="session")
def model_factory(tmp_path_factory):
    """gen_model(name, *flags) -> folder, cached per session on the name and the flags.

    The folders live in this session's pytest temp dir, so an edited tools/gen_model.py never
    meets a model from an older run; keying on the flags too means one name reused with other
    flags gets its own model instead of the first one's.
    """
    import gen_model

    cache = {}

    def make(name, *flags):
        key = (name, *map(str, flags))
        if key not in cache:
            out = str(tmp_path_factory.mktemp(name))
            assert gen_model.main(["--out", out, *flags]) == 0
            cache[key] = out
        return cache[key]

    return make
