"""host.py measured for real: a sleep, a spin, and busy neighbour processes.

The machine these run on is shared, so each assertion is one that holds whatever else runs: a
spinning loop gets a whole core *unless the machine was full*, and busy processes started by the
test are part of "others" whoever else is there.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from pytest_quantperf.measure.host import (CONTENDED, QUIET, TOO_BUSY, HostMeter, HostSample, available_cores, classify,
                                   describe, summarize)


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@pytest.fixture
def spinners():
    """Start n processes that each spin on one core; they are killed afterwards."""
    procs: list[subprocess.Popen] = []

    def start(n: int) -> None:
        import psutil

        for _ in range(n):
            procs.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
        # wait until each has started spinning (interpreter start-up is not load yet)
        deadline = time.monotonic() + 20
        for p in procs:
            while psutil.Process(p.pid).cpu_times().user < 0.2 and time.monotonic() < deadline:
                time.sleep(0.05)

    yield start
    for p in procs:
        p.kill()
        p.wait()


def test_a_sleep_uses_almost_no_cpu():
    with HostMeter(threads=1, tokens=10) as hm:
        time.sleep(0.4)
    s = hm.result
    assert 0.39 < s.wall_s < 2.0
    assert s.cpu_share is not None and s.cpu_share < 0.05
    assert s.cpu_ms_per_token is not None and s.cpu_ms_per_token < 2.0
    assert s.cores == len(available_cores()) and s.threads == 1


def test_a_spin_gets_a_whole_core_unless_the_machine_was_full():
    with HostMeter(threads=1) as hm:
        _spin(0.6)
    s = hm.result
    assert s.cpu_share is not None and s.cpu_share <= 1.05
    assert s.others_cpu_s is not None, "psutil could not read the system CPU counters"
    machine_full = s.cpu_s + s.others_cpu_s >= 0.85 * s.cores * s.wall_s
    assert s.cpu_share > 0.9 or machine_full, s.to_dict()


def test_one_busy_neighbour_holds_about_one_core(spinners):
    cores = len(available_cores())
    if cores < 2:
        pytest.skip("needs at least 2 CPUs to tell one busy neighbour from a full machine")
    spinners(1)
    with HostMeter(threads=cores) as hm:
        time.sleep(0.5)
    s = hm.result
    assert s.others_cores is not None and s.others_cores >= 0.85, s.to_dict()
    # a neighbour holding one of the cores the run asked for is contention: at least 1/cores of them
    assert s.contention is not None and s.contention >= (1 - 0.15) / cores
    assert s.state in (CONTENDED, TOO_BUSY)


def test_a_full_machine_is_too_busy_to_measure(spinners):
    cores = len(available_cores())
    with HostMeter(threads=cores) as quiet_hm:
        time.sleep(0.3)
    spinners(cores)
    with HostMeter(threads=cores) as hm:
        time.sleep(0.5)
    s = hm.result
    assert s.contention is not None and s.contention >= 0.85, s.to_dict()
    assert s.state == TOO_BUSY
    assert s.contention >= quiet_hm.result.contention - 0.05  # tick rounding; the host may be full already
    assert "too busy" in describe(summarize([quiet_hm.result, s]))


def test_contention_is_the_share_of_the_asked_cores_others_held():
    # two threads on two cores, one core's worth taken by others: half of what was asked for
    s = HostSample(wall_s=2.0, cpu_s=2.0, threads=2, cores=2, others_cpu_s=2.0, tokens=20)
    assert (s.asked, s.cpu_share, s.others_cores, s.contention) == (2, 0.5, 1.0, 0.5)
    assert s.state == CONTENDED and s.cpu_ms_per_token == 100.0 and s.wall_ms_per_token == 100.0
    # the same neighbour on a 4-core machine fits beside the run
    assert HostSample(wall_s=2.0, cpu_s=4.0, threads=2, cores=4, others_cpu_s=2.0).contention == 0.0
    # more threads than cores ask for every core, no more
    assert HostSample(wall_s=1.0, cpu_s=1.0, threads=8, cores=2, others_cpu_s=0.0).asked == 2
    assert HostSample(wall_s=1.0, cpu_s=1.0, threads=1, cores=2).contention is None
    assert [classify(x) for x in (0.0, 0.14, 0.15, 0.54, 0.55, 1.0, None)] == \
        [QUIET, QUIET, CONTENDED, CONTENDED, TOO_BUSY, TOO_BUSY, None]


def test_summary_takes_the_worst_run_and_keeps_every_figure():
    runs = [HostSample(wall_s=1.0, cpu_s=2.0, threads=2, cores=2, others_cpu_s=o, tokens=16) for o in (0.0, 0.1, 1.0)]
    s = summarize(runs)
    assert s["state"] == CONTENDED and s["counts"] == {QUIET: 2, CONTENDED: 1, TOO_BUSY: 0}
    assert s["contention"] == [0.0, 0.05, 0.5] and s["contention_median"] == 0.05
    assert s["cpu_ms_per_token"] == [125.0] * 3 and s["runs"] == 3
    assert describe(s).startswith("contended (median 0.05 of the asked cores held by other processes; 1 of 3")
    assert summarize([])["state"] is None and describe(summarize([])) == "host load unknown"
    d = runs[2].to_dict()
    assert d["state"] == CONTENDED and d["contention"] == 0.5 and d["cpu_share"] == 1.0


def test_result_before_the_block_ends_is_an_error():
    hm = HostMeter(threads=1)
    with pytest.raises(RuntimeError, match="once the with-block has ended"):
        hm.result
    with pytest.raises(ValueError, match="threads must be at least 1"):
        HostMeter(threads=0)


def test_pin_core_takes_off_auto_or_a_cpu_number():
    from pytest_quantperf.measure.host import parse_pin

    assert parse_pin(None) is None and parse_pin("off") is None and parse_pin(" OFF ") is None
    assert parse_pin("auto") == "auto" and parse_pin("0") == 0 and parse_pin("3") == 3
    for bad in ("fastest", "-1", "1.5"):
        with pytest.raises(ValueError, match="off, auto or a CPU number"):
            parse_pin(bad)


def test_pinning_moves_only_the_calling_thread_and_gives_its_affinity_back():
    import threading

    from pytest_quantperf.measure.host import core_probe, pinned_thread

    allowed = os.sched_getaffinity(0)
    probe = core_probe()
    assert set(probe) == allowed and all(v > 0 for v in probe.values())
    assert os.sched_getaffinity(0) == allowed  # the probe moved the thread and moved it back
    seen = {}
    with pinned_thread("auto") as pin:
        seen["inside"] = os.sched_getaffinity(0)
        t = threading.Thread(target=lambda: seen.setdefault("other", os.sched_getaffinity(0)))
        t.start()
        t.join()
    core = pin.info["pinned_core"]
    assert core in allowed and seen["inside"] == {core}
    assert pin.info["probe_us"][str(core)] == min(pin.info["probe_us"].values())
    assert os.sched_getaffinity(0) == allowed
    # a thread started inside inherits the pin (why the plugin pins only once its model is loaded,
    # and only on CUDA, where the CPU's own intra-op threads are not the work measured)
    assert seen["other"] == {core}
    with pinned_thread(max(allowed) + 1000) as pin:
        assert os.sched_getaffinity(0) == allowed
    assert pin.info["pinned_core"] is None and "not one of the allowed" in pin.info["why"]


def test_the_runs_own_xdist_workers_are_not_neighbours(tmp_path):
    """A sibling worker spinning beside a measured run is counted apart, never as contention."""
    import subprocess
    import sys

    spinner = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 6\nwhile time.time() < end: pass"])
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import json, time\n"
        "from pytest_quantperf.measure.host import HostMeter\n"
        "time.sleep(0.5)\n"
        "with HostMeter(threads=2) as hm:\n"
        "    time.sleep(2.0)\n"
        "print(json.dumps(hm.result.to_dict()))\n")
    import psutil

    try:
        out = subprocess.run([sys.executable, str(probe)], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTEST_XDIST_WORKER": "gw1"}).stdout
        t = psutil.Process(spinner.pid).cpu_times()
        spun = t.user + t.system
    finally:
        spinner.kill()
        spinner.wait()
    d = json.loads(out.splitlines()[-1])
    # the spinner's CPU time in the 2 s window is the siblings' time, not the neighbours'
    assert 0.1 < d["siblings_cpu_s"] <= spun + 0.05, (d, spun)
    alone = subprocess.run([sys.executable, str(probe)], capture_output=True, text=True, check=True,
                           env={k: v for k, v in os.environ.items() if k != "PYTEST_XDIST_WORKER"}).stdout
    assert json.loads(alone.splitlines()[-1])["siblings_cpu_s"] is None
