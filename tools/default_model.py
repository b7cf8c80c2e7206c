"""Locates (converting on first use) the default real model: SmolLM2-135M-Instruct.

Tests and tools call default_model_dir(); it runs scripts/setup_default_model.sh, which is
cached and checksummed, so repeated calls cost a stamp comparison.
"""
import os
import subprocess

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def default_model_dir() -> str:
    proc = subprocess.run(["bash", os.path.join(ROOT, "scripts", "setup_default_model.sh")],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"scripts/setup_default_model.sh failed:\n{proc.stderr}")
    return proc.stdout.strip().splitlines()[-1]
