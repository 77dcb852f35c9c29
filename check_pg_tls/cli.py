"""Command line: options in, status line (or TAP, JSON, cron text) out, exit code 0-3.

argparse and nagiosplugin both have exits that do not fit a monitoring
plugin (argparse exits 2, which means CRITICAL; nagiosplugin's guard prints
tracebacks), so this module owns the process's output and exit code.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import signal
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TYPE_CHECKING, NoReturn

from .options import UsageError, parser
from .text import printable

if TYPE_CHECKING:
    from .model import Outcome, State, Target
    from .openmetrics import MetricsSink
    from .settings import TrustCache

__all__ = ["main", "run"]

PREFIX = "PG_TLS"
_STATES = {"ok": 0, "warning": 1, "critical": 2, "unknown": 3}
#: Time left, after the probe, to judge, print and exit.
_RESERVE = 0.03

_IMPORTED = time.monotonic()
_output_claimed = False


def _claim_output() -> bool:
    """Whether the caller is the one to print the result; disarms the backstop.

    The backstop's handler runs between two steps of the main code: whoever
    claims first prints, the other stays silent, and no alarm is left to kill
    the process (signal 14, exit 142) once the result is out.
    """
    global _output_claimed
    if _output_claimed:
        return False
    _output_claimed = True
    signal.setitimer(signal.ITIMER_REAL, 0)
    return True


#: --openmetrics: where the metrics go, also those of a run that fails as a whole.
_metrics: MetricsSink | None = None
#: --json, --tap or --quiet: the format a run that fails as a whole is printed
#: in too (a bad option, the backstop), and the targets it names, once known.
_format: str | None = None
_targets: Sequence[Target] = ()


def _emit(state: str, text: str, lines: Sequence[str] = (), perfdata: str = "") -> int:
    if not _claim_output():
        return _STATES[state]
    # With --openmetrics, the finished run's metrics never come this way: what
    # does is a run that failed as a whole, and the metrics must say so.
    if _metrics is not None and not _metrics.failed(_STATES[state], text):
        return _STATES[state]
    if _format is not None:
        from .formats import failed_run

        _write(failed_run(_format, state, printable(text), _targets))
        return _STATES[state]
    status = f"{PREFIX} {state.upper()} - {text}".replace("|", "!").replace("\n", " ")
    if perfdata:
        status += f" | {perfdata}"
    out = "\n".join(printable(line) for line in [status, *(ln.replace("|", "!") for ln in lines)])
    out += "\n"
    sys.stdout.write(out)
    sys.stdout.flush()
    return _STATES[state]


def _write(text: str) -> None:
    sys.stdout.write("\n".join(printable(line) for line in text.split("\n")))
    sys.stdout.flush()


def _arm_backstop(seconds: float, left: float, state: str, what: str) -> None:
    # Every network step has its own deadline; this alarm only guards against
    # anything else that might hang, so the run always ends in time.
    def fire(signum: int, frame: FrameType | None) -> None:
        if _output_claimed:
            return
        late = f"no result within {seconds:g} seconds"
        # A format names every target itself.
        code = _emit(state, late if _format is not None else f"{what}: {late}")
        os._exit(code)

    signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, max(0.001, left))


def _process_age() -> float:
    """Seconds since this process started, start-up and imports included.

    A monitoring system times the plugin from fork to exit; the kernel's
    record of the process's start (in clock ticks since boot) says how much
    of -t the interpreter has already spent. Without /proc, the time since
    this module was imported.
    """
    since_import = time.monotonic() - _IMPORTED
    try:
        with open("/proc/self/stat", "rb") as stat:
            # The command name may hold spaces and parentheses: count the
            # fields after its closing one (starttime is field 22).
            fields = stat.read().rpartition(b")")[2].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, ValueError, IndexError, AttributeError):
        return since_import
    # A start-up longer than a minute is a clock that cannot be trusted.
    return age if since_import <= age <= since_import + 60 else since_import


def main(argv: Sequence[str] | None = None, age: float = 0.0) -> int:
    """Run the plugin; ``age``: seconds of -t already spent when it was called."""
    # -t counts from here back: parsing options and loading the metrics
    # library are part of the run too.
    started = time.monotonic() - age
    global _output_claimed
    _output_claimed = False
    # A monitoring system reads stdout and the exit code only; a library's
    # deprecation warning about an odd certificate (a zero serial number, say)
    # on stderr would only confuse it.
    warnings.simplefilter("ignore")
    global _metrics, _format, _targets
    _metrics, _format, _targets = None, None, ()
    verbose = 0
    try:
        try:
            args = parser().parse_args(argv)
        except UsageError as exc:
            return _emit("unknown", f"{exc} (see --help)")
        verbose = args.verbose
        _format = "json" if args.json else "tap" if args.tap else "quiet" if args.quiet else None
        if args.openmetrics or args.output or args.metrics_format:
            try:
                _use_metrics(args)
            except UsageError as exc:
                return _emit("unknown", str(exc))
        return _run(args, started)
    except KeyboardInterrupt:
        return _emit("unknown", "interrupted")
    except Exception as exc:  # noqa: BLE001 - the last guard: never a traceback, never exit 1
        lines: list[str] = []
        if verbose >= 3:
            import traceback

            lines = traceback.format_exc().splitlines()
        return _emit("unknown", f"internal error: {type(exc).__name__}: {exc}", lines)


def run() -> NoReturn:
    """Console-script entry point."""
    # A run is one short process. What it imports (cryptography, pyOpenSSL,
    # nagiosplugin, this package) lives until it exits: some 25,000 objects
    # the cyclic garbage collector would go through again and again as they
    # are made, finding no garbage, and whose cycles (modules, classes,
    # functions) its last collection at exit would take apart one by one,
    # memory the end of the process returns anyway. Together about a sixth
    # of a check's CPU time. So the collector is paused until the checks
    # start (see _resume_collector), and what exists then is left out of
    # every later collection, the one at exit included.
    global _collector_paused
    gc.disable()
    _collector_paused = True
    try:
        code = main(age=_process_age())
    finally:
        gc.freeze()
    raise SystemExit(code)


#: Whether run() paused the garbage collector (main() called in-process leaves it be).
_collector_paused = False


def _resume_collector() -> None:
    """Collect garbage again from here on, leaving out whatever exists now.

    The start-up's objects (modules, classes, loaded files) live as long as
    the process; the checks' own garbage (a fleet's thousands of outcomes
    and connections) must still be collected. A single check ends the
    process: it runs with the collector paused.
    """
    global _collector_paused
    if _collector_paused:
        gc.freeze()
        gc.enable()
        _collector_paused = False


def _use_metrics(args: argparse.Namespace) -> None:
    global _metrics
    from .openmetrics import MetricsSink

    # Options that make no sense are only an UNKNOWN line; a missing library
    # is a failed run, which the sink reports in the metrics too.
    _metrics = MetricsSink(args)
    _metrics.load_library()


def _run(args: argparse.Namespace, started: float) -> int:
    """The check; ``started``: the monotonic time -t counts from."""
    from functools import partial

    from .check import Budget, check, unchecked
    from .errors import LocalFileError
    from .fleet import DEFAULT_WORKERS, run_all
    from .settings import settings_for, settings_from_args, targets_from_args

    try:
        targets = targets_from_args(args)
    except UsageError as exc:
        return _emit("unknown", f"{exc} (see --help)")
    global _targets
    _targets = [target for target, _ in targets]
    if _format is not None:
        # Imported now: the backstop may have to print it, and must not import.
        from . import formats  # noqa: F401
    workers = args.workers or DEFAULT_WORKERS
    single = len(targets) == 1
    limit = args.timeout * math.ceil(len(targets) / workers) + (0 if single else 1)
    _arm_backstop(
        limit,
        started + limit - time.monotonic() - _RESERVE / 3,
        args.unreachable_state,
        str(targets[0][0]) if single else f"{len(targets)} servers",
    )
    try:
        settings = settings_from_args(args, single)
    except (UsageError, LocalFileError) as exc:
        return _emit("unknown", str(exc))
    timeout = args.timeout
    if len(targets) <= workers:
        # One round: every probe starts now, so -t holds for the whole
        # process, start-up included. With more rounds, each target has
        # its own -t from the moment its probe starts.
        left = started + args.timeout - time.monotonic() - _RESERVE
        timeout = Budget(max(0.001, min(left, args.timeout)), args.timeout)
    fetcher = None
    if settings.revocation is not None:
        from .crl_fetch import CrlFetcher

        # One per run: many servers share an issuer, and its CRL is fetched once.
        fetcher = CrlFetcher()
    if not single:
        _resume_collector()
    loaded: TrustCache = {}
    jobs: list[Callable[[], Outcome]] = []
    for target, problem in targets:
        own = problem or settings_for(target, settings, loaded)
        if isinstance(own, str):
            jobs.append(partial(unchecked, target, own))
        else:
            jobs.append(partial(check, target, own, timeout, fetcher))
    if _metrics is None and _format is None:
        return _nagios(args, jobs, workers)
    if _metrics is None and _format == "quiet":
        return _quiet(jobs, workers)
    outcomes = run_all(jobs, workers) if not single else [jobs[0]()]
    return _output(args, outcomes)


def _output(args: argparse.Namespace, outcomes: list[Outcome]) -> int:
    """Print the metrics, TAP, JSON or cron's text; the exit code is the worst state."""
    from .model import worst

    state = worst(outcome.state for outcome in outcomes)
    if _metrics is not None:
        if not _claim_output():
            return int(state)
        try:
            _metrics.write(outcomes)
        except OSError as exc:
            global _output_claimed
            _output_claimed = False  # nothing was written: the failure is the output
            return _emit("unknown", f"cannot write {args.output}: {exc.strerror or exc}")
        return int(state)
    from . import formats

    if args.tap:
        text = formats.tap(outcomes)
    elif args.json:
        text = formats.json_document(outcomes, state)
    else:
        text = formats.quiet(outcomes)
    if not _claim_output():
        return int(state)
    _write(text)
    return int(state)


def _quiet(jobs: list[Callable[[], Outcome]], workers: int) -> int:
    """cron's quiet mode: each target's line made as soon as it is checked.

    Nothing else of an outcome is printed, so none is kept: a fleet of
    10,000 targets would otherwise hold every outcome (several KB each)
    until the last target is checked.
    """
    from functools import partial

    from .fleet import run_all
    from .formats import quiet_line
    from .model import worst

    lines = [partial(_line, job, quiet_line) for job in jobs]
    # A single target needs no thread pool.
    kept = run_all(lines, workers) if len(lines) > 1 else [lines[0]()]
    state = worst(state for state, _ in kept)
    if not _claim_output():
        return int(state)
    _write("".join(line for _, line in kept))
    return int(state)


def _line(job: Callable[[], Outcome], line: Callable[[Outcome], str]) -> tuple[State, str]:
    """The target's state and its line, the outcome dropped (see :func:`_quiet`)."""
    outcome = job()
    return outcome.state, line(outcome)


def _nagios(args: argparse.Namespace, jobs: list[Callable[[], Outcome]], workers: int) -> int:
    """The Nagios format: nagiosplugin's status line and perfdata, the long output."""
    from .fleet import run_all
    from .model import worst
    from .plugin import OutcomeResource, nagios_check, perfdata_labels

    single = len(jobs) == 1
    if single:
        # nagiosplugin checks the target when it probes the resource.
        resources = [OutcomeResource(jobs[0])]
    else:
        # Probe and judge concurrently first; nagiosplugin then only evaluates.
        outcomes = run_all(jobs, workers)
        labels = perfdata_labels([outcome.target for outcome in outcomes])
        resources = [OutcomeResource(o, label) for o, label in zip(outcomes, labels, strict=True)]
    check = nagios_check(resources)
    outcomes = [resource.outcome for resource in resources]
    state = worst(outcome.state for outcome in outcomes)
    lines: list[str] = []
    if not single or args.verbose >= 1:
        from . import formats

        if not single:
            lines = formats.fleet_lines(outcomes)
        if args.verbose >= 1:
            for outcome in outcomes:
                prefix = "" if single else f"{outcome.target}: "
                lines += [f"{prefix}{line}" for line in formats.details(outcome)]
    perfdata = list(check.perfdata)
    if not single:
        perfdata = formats.fleet_perfdata(outcomes, perfdata)
    return _emit(state.text, check.summary_str, lines, " ".join(perfdata))
