"""Environment fingerprint and git state, on this machine and in a throw-away repository."""
from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys

import pytest

from pytest_quantperf import envinfo


def test_fingerprint_on_this_machine():
    fp = envinfo.fingerprint("cpu")
    json.dumps(fp)
    for key in ("hardware_id", "gpu", "gpu_memory_mb", "driver", "cuda", "torch", "transformers",
                "bitsandbytes", "accelerate", "python", "cpu", "host", "platform", "cpu_count"):
        assert key in fp
    assert fp["gpu"] is None and fp["gpu_count"] == 0  # device "cpu" never reports a GPU
    assert fp["torch"] == importlib.metadata.version("torch")
    assert fp["python"] == ".".join(map(str, sys.version_info[:3]))
    assert re.fullmatch(r"cpu-[a-z0-9-]+-\d+c", fp["hardware_id"])
    assert fp["hardware_id"].endswith(f"-{fp['cpus_usable']}c")
    assert envinfo.fingerprint("cpu")["hardware_id"] == fp["hardware_id"]  # stable


def test_fingerprint_imports_nothing_heavy():
    code = ("import sys; from pytest_quantperf import envinfo, stats; "
            "from pytest_quantperf.verdicts import compare; from pytest_quantperf.store import storage; "
            "envinfo.fingerprint(); print(sorted(m for m in ('torch', 'transformers', 'bitsandbytes', "
            "'pytest') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("gpus,cpu,cores,expected", [
    ([{"name": "NVIDIA H100 80GB HBM3", "memory_mb": 81559}], "x", 1, "cuda-nvidia-h100-80gb-hbm3"),
    ([{"name": "NVIDIA A10G", "memory_mb": 22000}] * 4, "x", 1, "cuda-nvidia-a10g-x4"),
    ([], "Intel(R) Xeon(R) CPU @ 2.20GHz", 8, "cpu-intel-xeon-2-20ghz-8c"),
    ([], "AMD EPYC", 2, "cpu-amd-epyc-2c"),
])
def test_hardware_id(gpus, cpu, cores, expected):
    assert envinfo.hardware_id(gpus, cpu, cores) == expected


def test_slugify():
    assert envinfo.slugify("NVIDIA GeForce RTX 4090") == "nvidia-geforce-rtx-4090"
    assert envinfo.slugify("  ") == "unknown"
    assert len(envinfo.slugify("x" * 200)) <= 48


def _git(cwd, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=cwd,
                   check=True, capture_output=True)


def test_git_info_in_a_repository(tmp_path, monkeypatch):
    monkeypatch.delenv("GITHUB_HEAD_REF", raising=False)
    monkeypatch.delenv("GITHUB_REF_NAME", raising=False)
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "feature-x")
    (repo / "a.txt").write_text("one")
    _git(repo, "add", "a.txt")
    _git(repo, "commit", "-q", "-m", "first")
    info = envinfo.git_info(repo)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    assert info == {"commit": head, "branch": "feature-x", "dirty": False}
    (repo / "untracked.txt").write_text("x")
    assert envinfo.git_info(repo)["dirty"] is False
    (repo / "a.txt").write_text("two")
    assert envinfo.git_info(repo / ".")["dirty"] is True
    # detached HEAD, as CI checks out, takes the branch from the CI variables
    _git(repo, "checkout", "-q", "--detach")
    assert envinfo.git_info(repo)["branch"] is None
    monkeypatch.setenv("GITHUB_REF_NAME", "main")
    assert envinfo.git_info(repo)["branch"] == "main"


def test_git_info_outside_a_repository(tmp_path):
    assert envinfo.git_info(tmp_path) is None
    assert envinfo.git_info(tmp_path / "missing") is None
