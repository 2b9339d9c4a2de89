"""The shipped GitHub workflow never saves a baseline from a failing or warn-only run.

Parsed as YAML (PyYAML arrives with transformers), so the checks see the steps as GitHub does:
each step's ``if:`` and its command, not a text that merely contains the right words.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

WORKFLOW = Path(__file__).resolve().parents[1] / "docs" / "github-actions-gpu.yml"
# status functions that let a step run after an earlier step failed
RUNS_AFTER_FAILURE = re.compile(r"\b(always|failure|cancelled)\s*\(\)")


def _steps() -> list[dict]:
    doc = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    (job,) = doc["jobs"].values()
    return job["steps"]


def _args(step: dict) -> list[str]:
    return shlex.split(" ".join(str(step.get("run", "")).split()))


def _condition(step: dict) -> str:
    c = str(step.get("if", ""))
    return c[3:-2].strip() if c.startswith("${{") and c.endswith("}}") else c


def test_no_step_saves_a_baseline_from_a_warn_only_run():
    savers = [s for s in _steps() if any(a.startswith("--quantperf-save") for a in _args(s))]
    assert savers, "the workflow saves no baseline at all"
    for s in savers:
        args = _args(s)
        assert "--quantperf-warn-only" not in args, f"step {s['name']!r} saves a warn-only run"
        assert "--quantperf-baseline=main" in args, f"step {s['name']!r} saves main without checking it first"
        # a failing run must fail the step: nothing may swallow pytest's exit status
        assert not re.search(r"\|\|\s*(true|:)|;\s*exit\s+0", str(s["run"])), s["run"]


def test_the_save_step_runs_only_when_every_earlier_step_succeeded():
    steps = _steps()
    (i,) = [k for k, s in enumerate(steps) if any(a.startswith("--quantperf-save") for a in _args(s))]
    save = steps[i]
    cond = _condition(save)
    # GitHub adds success() to a condition without a status function; say it outright and allow no other
    assert "success()" in cond and not RUNS_AFTER_FAILURE.search(cond), cond
    assert "github.ref == 'refs/heads/main'" in cond and "github.event_name == 'push'" in cond
    for s in steps[:i]:
        # an earlier step that may fail without failing the job would make success() true after a failure
        assert not s.get("continue-on-error"), f"step {s.get('name')!r} before the save may fail silently"


def test_pull_requests_gate_wall_clock_with_quantperf_ab():
    steps = _steps()
    ab = [s for s in steps if _args(s)[:2] == ["quantperf", "ab"]]
    assert len(ab) == 1, "the workflow should run quantperf ab for the wall-clock figures"
    args = _args(ab[0])
    assert "pull_request" in _condition(ab[0])
    assert args[args.index("--base") + 1] == "origin/${{ github.base_ref }}"
    rounds = args[args.index("--rounds") + 1]
    job_env = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))["jobs"]["quantperf"]["env"]
    assert rounds == '$QUANTPERF_AB_ROUNDS' and int(job_env["QUANTPERF_AB_ROUNDS"]) >= 7
    # with --rounds given, a second look over more rounds must be asked for, and must be one that can work
    assert args[args.index("--max-rounds") + 1] == '$QUANTPERF_AB_MAX_ROUNDS'
    from pytest_quantperf.stats import rounds_for_alpha, second_look_alpha

    first, most = int(job_env["QUANTPERF_AB_ROUNDS"]), int(job_env["QUANTPERF_AB_MAX_ROUNDS"])
    assert most >= rounds_for_alpha(second_look_alpha(first, 0.01)), "--max-rounds too few for a second look"
    checkout = next(s for s in steps if str(s.get("uses", "")).startswith("actions/checkout"))
    assert checkout["with"]["fetch-depth"] == 0, "quantperf ab needs the base commit in the clone"


def test_pull_requests_get_one_comment_with_the_markdown_report_updated_in_place():
    doc = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    steps = _steps()
    commenters = [s for s in steps if str(s.get("uses", "")).startswith("actions/github-script")]
    assert len(commenters) == 1, "the workflow should post one pull-request comment"
    (comment,) = commenters
    cond = _condition(comment)
    assert "github.event_name == 'pull_request'" in cond and "push" not in cond, cond
    # the comment matters most when the gate failed: it must run after a failed step, not only on success
    assert "!cancelled()" in cond or "always()" in cond, cond
    script = comment["with"]["script"]
    # found again by its hidden marker and edited, never a second comment per push
    assert "<!-- quantperf -->" in script
    assert "updateComment" in script and "createComment" in script and "listComments" in script
    # it reads the Markdown file the pull request's pytest step writes
    (gate,) = [s for s in steps if "pull_request" in _condition(s)
               and _args(s)[:3] == ["python", "-m", "pytest"]]
    (md,) = [a.split("=", 1)[1] for a in _args(gate) if a.startswith("--quantperf-markdown=")]
    assert comment["env"]["QUANTPERF_MARKDOWN"] == md and "process.env.QUANTPERF_MARKDOWN" in script
    # and links the uploaded HTML report: the upload step comes first and hands over its URL
    (upload,) = [k for k, s in enumerate(steps) if str(s.get("uses", "")).startswith("actions/upload-artifact")]
    assert upload < steps.index(comment)
    assert comment["env"]["QUANTPERF_ARTIFACT_URL"] == "${{ steps.%s.outputs.artifact-url }}" % steps[upload]["id"]
    assert "actions/runs/${context.runId}" in script
    assert doc["permissions"]["pull-requests"] == "write"
