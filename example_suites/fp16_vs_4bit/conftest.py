"""fp16_vs_4bit: which model, and the summary table printed at the end of the run.

The model defaults to ``synthetic:mistral-7b`` on a GPU (real 7B shapes, random weights: honest
speed and memory with nothing to download) and to the small real default model on the CPU;
``--quantperf-model=PATH_OR_ID`` points the suite at real weights anywhere.
"""
from __future__ import annotations

import pytest

from pytest_quantperf.suite import default_suite_model, markdown_table, on_gpu

ROWS = pytest.StashKey[dict]()


@pytest.fixture(scope="session")
def suite_model(pytestconfig: pytest.Config) -> str:
    return default_suite_model(pytestconfig)


@pytest.fixture(scope="session")
def sixteen_bit(pytestconfig: pytest.Config) -> str:
    """fp16 on a GPU; bf16 on the CPU, where fp16 matmuls have no fast kernels."""
    return "fp16" if on_gpu(pytestconfig) else "bf16"


@pytest.fixture
def table(pytestconfig: pytest.Config) -> dict:
    """``table[row] = {column: value}``: the comparison printed after the run."""
    return pytestconfig.stash.setdefault(ROWS, {})


@pytest.fixture
def saved_mb(tmp_path):
    """``saved_mb(lm) -> (MiB, how)``: see :func:`size_on_disk_mb`."""
    return lambda lm: size_on_disk_mb(lm, tmp_path)


def size_on_disk_mb(lm, tmp_path) -> tuple[float, str]:
    """Size on disk of the loaded model as ``save_pretrained`` writes it (safetensors).

    Small models are really saved; for big ones (or synthetic models on a GPU) the bytes of the
    state dict, which is what safetensors writes give or take a small header, stand in.
    """
    sd_bytes = sum(t.numel() * t.element_size() for t in lm.model.state_dict().values())
    if sd_bytes > 2 * 2**30:
        return sd_bytes / 2**20, "state dict"
    out = tmp_path / lm.label.replace("/", "_")
    lm.model.save_pretrained(str(out), safe_serialization=True)
    return sum(f.stat().st_size for f in out.iterdir() if f.suffix == ".safetensors") / 2**20, "saved"


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    rows = config.stash.get(ROWS, None)
    if rows:
        terminalreporter.write_sep("=", "fp16_vs_4bit")
        terminalreporter.write_line(markdown_table(rows, "model"))
