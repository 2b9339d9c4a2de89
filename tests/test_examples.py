"""Every example suite runs as a user runs it (its own rootdir and pytest.ini) and passes on the CPU.

Each suite is copied into a fresh directory and run in a subprocess with one warm-up-free
repetition per measurement: these runs check that the suites work and print their tables, not
the figures (the READMEs show figures from full runs).
"""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from pytest_quantperf import backends

SUITES = Path(__file__).resolve().parent.parent / "example_suites"
QUICK = ("--quantperf-repeat=1", "--quantperf-warmup=0", "-p", "no:cacheprovider", "-p", "no:xdist")

pytestmark = pytest.mark.slow


def run_suite(pytester: pytest.Pytester, name: str, *args: str) -> pytest.RunResult:
    shutil.copytree(SUITES / name, pytester.path, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns(".quantperf", "__pycache__", "*.csv", "*.html"))
    return pytester.runpytest_subprocess(*QUICK, "--rootdir", str(pytester.path), *args)


def test_every_suite_has_readme_and_tests():
    names = {"fp16_vs_4bit", "quant_matrix", "fits_6gb", "nf4_options", "backends", "mmlu_arc"}
    for n in names:
        d = SUITES / n
        assert (d / "README.md").is_file() and list(d.glob("test_*.py")), n
        text = (d / "README.md").read_text()
        assert "pytest" in text and "|---" in text, f"{n}/README.md needs its command and a result table"


def test_fp16_vs_4bit(pytester):
    r = run_suite(pytester, "fp16_vs_4bit")
    r.assert_outcomes(passed=1)
    r.stdout.fnmatch_lines(["*= fp16_vs_4bit =*", "| model | latency_ms*", "| default/bf16 | *",
                            "| default/nf4@bf16 | *", "*footprint_mb_vs_ref*pass*"])


def test_quant_matrix_writes_its_table(pytester):
    # five of the eight rows keep this under a few minutes on 2 cores; the README shows all eight
    skip = [f"--deselect=test_quant_matrix.py::test_config[{row}]" for row in ("fp16", "nf4@fp32", "fp4@fp32")]
    r = run_suite(pytester, "quant_matrix", "--matrix-csv=matrix.csv", "--ignore=test_methods.py", *skip)
    r.assert_outcomes(passed=6)
    r.stdout.fnmatch_lines(["*= quant matrix =*", "| config | accuracy | perplexity | footprint_mb*"])
    rows = {row["config"]: row for row in csv.DictReader((pytester.path / "matrix.csv").open())}
    assert list(rows) == ["fp32", "bf16", "int8", "nf4@fp16", "fp4@fp16"]
    assert float(rows["nf4@fp16"]["footprint_mb"]) < float(rows["int8"]["footprint_mb"]) < float(rows["fp32"]["footprint_mb"])
    assert all(0 <= float(r["accuracy"]) <= 1 and float(r["perplexity"]) > 1 for r in rows.values())


def test_quant_methods_side_by_side(pytester):
    # the reference, one 4-bit method that runs on the CPU and one that needs CUDA: the README shows all
    r = run_suite(pytester, "quant_matrix", "test_methods.py", "-s", "-rs",
                  "-k", "reference or quanto-int4 or torchao-int4 or table")
    r.assert_outcomes(passed=3, skipped=1)
    r.stdout.fnmatch_lines(["| model | footprint_mb | load_s | tokens_per_s | tpot_ms | kl_div | top1_agreement *",
                            "| default/fp32 | 513.1 | *", "| default/quanto-int4 | 108.6 | *",
                            "*SKIPPED*quant='torchao-int4' needs a CUDA GPU, not cpu*"])


def test_fits_6gb(pytester):
    r = run_suite(pytester, "fits_6gb", "-s")
    r.assert_outcomes(passed=2)
    r.stdout.fnmatch_lines(["*synthetic:mistral-7b nf4 on a 6000 MB card: longest context predicted to fit = * tokens*",
                            "*host_rss_mb*2500*pass*"])


def test_nf4_options(pytester):
    r = run_suite(pytester, "nf4_options")
    r.assert_outcomes(passed=2)
    r.stdout.fnmatch_lines(["*= nf4 options =*", "| nf4@fp32 | *", "| nf4@bf16 | *"])


def test_backends(pytester):
    r = run_suite(pytester, "backends")
    want = {"transformers": True, "llama_cpp": backends.available("llama_cpp"),
            "mlx": backends.unavailable_reason("mlx") is None}
    r.assert_outcomes(passed=sum(want.values()), skipped=3 - sum(want.values()))
    r.stdout.fnmatch_lines(["*= backends =*", "| transformers (fp32) | *"])
    if want["llama_cpp"]:
        r.stdout.fnmatch_lines(["| llama_cpp (q4_1) | *"])


def test_mmlu_arc_scores_the_builtin_task_and_skips_hub_tasks_without_data(pytester, monkeypatch):
    pytest.importorskip("lm_eval")
    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):  # no Hub here: each hub task skips at once
        monkeypatch.setenv(var, "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(pytester.path / "hf-datasets"))
    r = run_suite(pytester, "mmlu_arc", "--lm-eval-limit=8", "-k", "test_reference_ or nf4", "-rs")
    r.assert_outcomes(passed=4, skipped=6)
    r.stdout.fnmatch_lines(["*= mmlu_arc =*", "| model | quantperf_builtin | footprint_mb | tpot_ms | memory_mb |",
                            "| reference (fp32) | *", "| nf4 | *"])
    r.stdout.fnmatch_lines(["SKIPPED [[]2[]] *lm-eval task 'arc_easy': its data could not be loaded, offline*"])
    r.stdout.fnmatch_lines(["*lm_eval.quantperf_builtin.acc_drop_*0.03*"])
