"""Options declared once: the pytest plugin and the ``quantperf`` command read the same table."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Opt:
    name: str  # without prefix: "baseline" -> --quantperf-baseline / ini quantperf_baseline / CLI --baseline
    help: str
    default: Any = None
    action: str = "store"
    metavar: str | None = None
    ini: bool = True
    cli: bool = False  # also offered by the quantperf command


OPTIONS: tuple[Opt, ...] = (
    Opt("baseline", "compare every figure with stored baseline NAME; a regression fails its test",
        metavar="NAME"),
    Opt("save", "store this run as baseline NAME (merged, atomic) and append it to the history", metavar="NAME"),
    Opt("storage", "where baselines and history live: a path or an fsspec URL (s3://, gs://, file://, "
        "memory://); default .quantperf under the rootdir", metavar="PATH_OR_URL", cli=True),
    Opt("tolerance", "regression tolerances, e.g. tokens_per_s=5%,accuracy=0.01 (% relative, else absolute); "
        "defaults per metric", metavar="SPEC", cli=True),
    Opt("warn-only", "report regressions and budget breaches without failing", action="store_true", default=False),
    Opt("gate-cross-hardware", "let speed and energy gate against a baseline from other hardware", action="store_true", default=False, cli=True),
    Opt("device", "where models are placed: auto (CUDA when present), cpu, cuda, cuda:N", default="auto",
        metavar="auto|cpu|cuda|cuda:N"),
    Opt("gpus", "GPU indices the xdist workers are spread over, e.g. 0,2,3 (worker i gets entry i mod n)",
        metavar="LIST"),
    Opt("repeat", "timed runs per measurement: N, or auto (until the median is known to "
        "--quantperf-target-ci)", default="auto", metavar="N|auto"),
    Opt("warmup", "warm-up runs per measurement: N, or auto (until two timings agree, at most 3)",
        default="auto", metavar="N|auto"),
    Opt("target-ci", "adaptive sampling stops when the median's relative 95% CI half-width is below this",
        default="0.02", metavar="FRACTION"),
    Opt("max-time", "the most seconds one measurement takes, warm-up included (one timed run is always "
        "taken)", default="10", metavar="SECONDS"),
    Opt("pin-core", "on CUDA, pin the thread driving the GPU to one CPU while measuring: off, auto (the "
        "fastest allowed core) or a CPU number",
        default="off", metavar="off|auto|N"),
    Opt("count-work", "count each decode's work (operators, Python calls, syncs, launches per token) in "
        "a run of its own: on or off", default="on", metavar="on|off"),
    Opt("html", "write the HTML report here", metavar="PATH"),
    Opt("json", "write the JSON report here", metavar="PATH"),
    Opt("markdown", "write the Markdown report here (also appended to $GITHUB_STEP_SUMMARY when set)",
        metavar="PATH"),
    Opt("export", "export for another tool: github-action-benchmark:PATH or pytest-benchmark:PATH "
        "(repeatable)", action="append", metavar="FORMAT:PATH"),
    Opt("model", "what the model name \"default\" resolves to for this run", metavar="ID_OR_PATH"),
    Opt("trust-remote-code", "allow models that ship their own code (off by default)", action="store_true",
        default=False),
)


def flag(opt: Opt) -> str:
    return f"--quantperf-{opt.name}"


def dest(opt: Opt) -> str:
    return "quantperf_" + opt.name.replace("-", "_")


def add_pytest_options(group_addoption: Callable[..., Any], addini: Callable[..., Any]) -> None:
    for o in OPTIONS:
        # argparse %-formats option help; ini help is printed as written
        kw: dict[str, Any] = {"action": o.action, "dest": dest(o), "help": o.help.replace("%", "%%")}
        if o.action not in ("store_true",):
            kw["metavar"] = o.metavar
        kw["default"] = None  # resolved against the ini key afterwards
        group_addoption(flag(o), **kw)
        if o.ini:
            ini_type = "bool" if o.action == "store_true" else ("linelist" if o.action == "append" else "string")
            addini(dest(o), help=o.help, type=ini_type, default=o.default if o.action != "append" else [])


def add_cli_options(parser: Any) -> None:
    for o in OPTIONS:
        if o.cli:
            kw: dict[str, Any] = {"action": o.action, "dest": o.name.replace("-", "_"),
                                  "help": o.help.replace("%", "%%"), "default": o.default}
            if o.action != "store_true":
                kw["metavar"] = o.metavar
            parser.add_argument(f"--{o.name}", **kw)


def markdown_table() -> str:
    """Every option with its ini key and default, as README shows it (a test keeps the two equal)."""
    rows = ["| option | ini key | default | what it does |", "| --- | --- | --- | --- |"]
    for o in OPTIONS:
        arg = flag(o) + (f"={o.metavar}" if o.action != "store_true" and o.metavar else "")
        default = "off" if o.action == "store_true" else ("" if o.default is None else str(o.default))
        ini = f"`{dest(o)}`" if o.ini else ""
        cells = (f"`{arg}`", ini, f"`{default}`" if default else "", o.help)
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


def resolve(getoption: Callable[[str], Any], getini: Callable[[str], Any]) -> dict[str, Any]:
    """Command line first, then the ini key, then the default."""
    out: dict[str, Any] = {}
    for o in OPTIONS:
        v = getoption(dest(o))
        if v is None or v == []:
            v = getini(dest(o)) if o.ini else o.default
            if v in ("", None, []):
                v = o.default
        out[o.name.replace("-", "_")] = v
    return out
