"""The run console: trial lines, counts, ETA arithmetic, and which third-party lines are dropped."""

from __future__ import annotations

import io
import logging
import os
import re

import pytest
from rich.console import Console

from bench.console import EtaClock, RunProgress, TrialLine, Verbosity, _DropMessages, format_duration


def _console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=40, force_terminal=False), buffer


def _line(method: str, phase: str = "search", **sampled: object) -> TrialLine:
    return TrialLine(
        method=method,
        phase=phase,
        status="completed",
        epochs_run=3,
        epochs_planned=3,
        sampled=sampled,
        val_accuracy=0.5,
        test_accuracy=0.25,
        wall_seconds=1.5,
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (9.4, "9s"),
        (59.4, "59s"),
        (60, "1m00s"),
        (75, "1m15s"),
        (3599, "59m59s"),
        (3600, "1h00m"),
        (3725, "1h02m"),
        (-3, "0s"),
    ],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_eta_is_throughput_since_the_first_trial_clock_started():
    clock = EtaClock()
    assert clock.eta_seconds(10, now=5.0) is None  # nothing finished yet: nothing to extrapolate
    # Start-up took 100 s (Ray, workers importing torch); two trials then ran side by side from
    # t=100 to t=130, a third from t=130 to t=160.
    clock.record(30.0, now=130.0)
    clock.record(30.0, now=130.0)
    assert clock.started == 100.0
    assert clock.eta_seconds(4, now=130.0) == pytest.approx(30.0 / 2 * 4, rel=1e-12)  # 2 per 30 s: 60 s for 4
    clock.record(30.0, now=160.0)
    assert clock.eta_seconds(9, now=160.0) == pytest.approx(60.0 / 3 * 9, rel=1e-12)
    assert clock.eta_seconds(0, now=160.0) == 0.0
    # the old rule (elapsed since start-up / finished) would have said 160 / 2 × 4 = 320 s at t=130
    late = EtaClock()
    late.record(5.0, now=60.0)  # a trial whose own clock started at t=55 ...
    late.record(50.0, now=70.0)  # ... and one that started earlier, at t=20: the earliest start counts
    assert late.started == 20.0 and late.eta_seconds(1, now=70.0) == pytest.approx(25.0, rel=1e-12)


def test_trial_lines_count_per_method_and_overall_and_never_wrap():
    console, buffer = _console()  # 40 columns: every line below is longer
    progress = RunProgress(console, [("erm", 2, 1), ("sam", 2, 0)])
    progress.phase_started("erm", "search", 2)
    progress.trial_finished(_line("erm", learning_rate=0.123456789))
    progress.trial_finished(_line("erm", learning_rate=0.05))
    progress.phase_started("erm", "final", 1)
    progress.trial_finished(_line("erm", "final", seed=1))
    progress.phase_started("sam", "search", 2)
    progress.trial_finished(_line("sam", perturbation_radius=0.05, learning_rate=0.1))
    lines = buffer.getvalue().splitlines()
    # one header per phase, naming every method in config order, printed when the phase begins
    assert lines[0] == "── search · 2 methods · trials per method: erm 2, sam 2"
    trial_lines = [line for line in lines if line.startswith("[")]
    assert [re.match(r"\[(\d/2 \w+ \w+ \d/\d)\]", line).group(1) for line in trial_lines] == [
        "1/2 erm search 1/2",
        "1/2 erm search 2/2",
        "1/2 erm final 1/1",
        "2/2 sam search 1/2",
    ]
    assert "learning_rate=0.1235 " in trial_lines[0]  # 4 significant digits
    assert "| seed=1 |" in trial_lines[2]
    assert "perturbation_radius=0.05 learning_rate=0.1 " in trial_lines[3]
    assert [re.search(r"all (\d+)/5, ETA \S+$", line).group(1) for line in trial_lines] == ["1", "2", "3", "4"]
    assert lines[3] == "── final · 2 methods · seeds per method (the best config): erm 1, sam 0"
    assert sum(line.startswith("── ") for line in lines) == 2
    assert progress.done == 4 and progress.planned == 5


def test_headers_come_in_phase_order_whatever_order_methods_start_in():
    console, buffer = _console()
    progress = RunProgress(console, [("erm", 1, 1), ("wd", 1, 1), ("sam", 1, 1), ("asam", 1, 1)])
    for method in ("sam", "asam", "erm", "wd"):  # the order the scheduler gave them slots
        progress.phase_started(method, "search", 1)
    progress.phase_started("wd", "final", 1)
    progress.phase_started("erm", "final", 1)
    headers = [line for line in buffer.getvalue().splitlines() if line.startswith("──")]
    assert headers == [
        "── search · 4 methods · trials per method: erm 1, wd 1, sam 1, asam 1",
        "── final · 4 methods · seeds per method (the best config): erm 1, wd 1, sam 1, asam 1",
    ]


def test_a_finished_run_says_there_is_nothing_to_do():
    console, buffer = _console()
    progress = RunProgress(console, [("erm", 2, 1)], already_done={("erm", "search"): 2, ("erm", "final"): 1})
    assert progress.nothing_to_do
    progress.say_nothing_to_do("/tmp/r")
    assert buffer.getvalue().replace("\n", " ").startswith("nothing to do: 3 trials already recorded in /tmp/r")
    assert not RunProgress(console, [("erm", 2, 1)], already_done={("erm", "search"): 2}).nothing_to_do


def test_resumed_run_counts_what_was_recorded_before():
    console, buffer = _console()
    progress = RunProgress(console, [("erm", 4, 2)], already_done={("erm", "search"): 3, ("other", "search"): 9})
    progress.phase_started("erm", "search", 4)
    progress.trial_finished(_line("erm", learning_rate=0.1))
    text = buffer.getvalue()
    assert "── search · 1 method · trials per method: erm 4 (3 recorded before)" in text
    assert "[1/1 erm search 4/4]" in text and "all 4/6" in text


def test_quiet_prints_nothing_but_still_counts():
    console, buffer = _console()
    progress = RunProgress(console, [("erm", 1, 0)], verbosity=Verbosity.quiet)
    progress.phase_started("erm", "search", 1)
    progress.trial_finished(_line("erm", learning_rate=0.1))
    progress.heartbeat(lambda: ([("erm", 1, 3)], {"erm": 0.5}), "val_accuracy")
    assert buffer.getvalue() == "" and progress.done == 1


def test_heartbeat_looks_at_the_trials_only_when_it_prints(monkeypatch: pytest.MonkeyPatch):
    clock = iter([0.0, 1.0, 2.0, 40.0, 41.0])  # RunProgress's start, then one reading per heartbeat
    monkeypatch.setattr("bench.console.time.monotonic", lambda: next(clock))
    console, buffer = _console()
    progress = RunProgress(console, [("erm", 3, 0)])
    calls = []

    def status():
        calls.append(1)
        return [("erm", 2, 3)], {"erm": 0.25}

    for _ in range(4):
        progress.heartbeat(status, "val_accuracy")
    text = " ".join(buffer.getvalue().split())
    assert len(calls) == 1  # due once: at 40 s (30 s after the start), not at 1, 2 or 41 s
    assert "running: erm ep 2/3" in text and "best val_accuracy reported so far: erm 0.2500" in text


def test_failed_trial_line_carries_its_reason():
    console, buffer = _console()
    progress = RunProgress(console, [("erm", 1, 0)])
    progress.trial_finished(
        TrialLine(
            "erm",
            "search",
            "failed",
            1,
            3,
            {"learning_rate": 9.0},
            None,
            None,
            0.2,
            "FloatingPointError: loss became nan",
        )
    )
    assert buffer.getvalue() == (
        "── search · 1 method · trials per method: erm 1\n"
        "[1/1 erm search 1/1] failed 1/3 ep | learning_rate=9 | no result | 0.2s | all 1/1, ETA 0s"
        " — FloatingPointError: loss became nan\n"
    )


def test_noise_filter_drops_only_the_named_message():
    drop = _DropMessages(("Token authentication is enabled",))

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("ray", logging.WARNING, __file__, 1, msg, None, None)

    assert not drop.filter(record("Token authentication is enabled for this Ray cluster. Set ..."))
    assert drop.filter(record("Token authentication is disabled for this Ray cluster."))


def test_quiet_console_drops_tunes_unread_result_file_warning_and_keeps_its_other_warnings(monkeypatch):
    # The logger Ray's own module writes with, so a renamed logger would fail here.
    from ray.tune.analysis import experiment_analysis

    from bench.console import quiet_third_party

    monkeypatch.setattr(os, "environ", dict(os.environ))  # quiet_third_party sets Tune's variables
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    log = experiment_analysis.logger
    log.addHandler(handler)
    try:
        quiet_third_party(Verbosity.normal)
        log.warning("Failed to fetch metrics for 1 trial(s):\n- run_trial_1: JSONDecodeError('Expecting value')")
        log.warning("Could not find best trial")
    finally:
        log.removeHandler(handler)
        for drop in [f for f in log.filters if isinstance(f, _DropMessages)]:
            log.removeFilter(drop)
    assert seen == ["Could not find best trial"]


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0.0, "0ms"), (0.034, "34ms"), (0.0949, "95ms"), (0.095, "0.1s"), (2.34, "2.3s"), (125.0, "125.0s")],
)
def test_a_trial_under_a_tenth_of_a_second_shows_milliseconds_not_0_0s(seconds, shown):
    from bench.console import format_trial_seconds

    assert format_trial_seconds(seconds) == shown


def test_a_resumed_run_heads_a_phase_at_its_first_trial_with_what_was_recorded_before():
    console, buffer = _console()
    progress = RunProgress(console, [("erm", 4, 0), ("sam", 4, 0)], already_done={("erm", "search"): 1})
    # restored trials end before any method starts its phase: the header comes with the first of them
    progress.trial_finished(_line("sam", learning_rate=0.1))
    progress.trial_finished(_line("erm", learning_rate=0.1))
    progress.phase_started("erm", "search", 4)
    lines = buffer.getvalue().splitlines()
    assert lines[0] == "── search · 2 methods · trials per method: erm 4 (1 recorded before), sam 4"
    assert sum(line.startswith("── ") for line in lines) == 1
