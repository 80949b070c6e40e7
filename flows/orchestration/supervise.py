"""Run one command so that no process of it outlives the process that started it.

    python flows/orchestration/supervise.py [--parent PID] [--grace SECONDS] [--timeout SECONDS] -- command [args...]

`flows.orchestration.steps.run_logged` runs every stage (`dvc repro`, then `python -m tasks.train`, maybe torchrun
and its workers) under this supervisor. Without it, a SIGKILLed or OOM-killed flow left the stage
running, holding the DVC lock and the accelerator while the `gpu` slot's lease expired (review M9).

How the supervisor learns that it must stop, and what it stops:

- It asks the kernel for SIGTERM when its parent dies (PR_SET_PDEATHSIG), and also polls getppid()
  against the expected parent, which covers the parent dying before the prctl call and systems
  without prctl. SIGTERM, SIGINT and SIGHUP sent to it directly stop it the same way.
- The command runs in a session (process group) of its own, so a signal to the group reaches
  dvc and the stage at once, while the supervisor stays outside it and can finish its work.
- The supervisor is a child subreaper (PR_SET_CHILD_SUBREAPER): processes that leave the group
  (torchrun starts each worker in a session of its own) or whose parent died are re-parented to
  it rather than to init, so walking /proc from the supervisor finds every one of them.
- With `--timeout`, a command still running after that many seconds is stopped the same way (a hung
  stage must not hold the DVC lock and the `gpu` slot for ever: review M9); the exit code is then
  TIMED_OUT, and one line on stderr says so.
- Stopping = SIGTERM to the group and to every descendant, `--grace` seconds, then SIGKILL to
  whatever is left. Leftovers of a command that exited normally are stopped the same way.

The exit code is the command's (128 + N when a signal N ended it, as a shell reports it), or TIMED_OUT.
Only the standard library is imported, so `python -I -S` starts it in a few milliseconds.
Elsewhere than Linux, the prctl calls and /proc are missing: the supervisor then polls getppid()
and stops the command's process group only.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

GRACE_S = 5.0  # SIGTERM -> SIGKILL; dvc and the train loop exit on SIGTERM in well under a second
POLL_S = 0.2  # how often the parent, the command and the stop flag are checked
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# The exit code after --timeout expired: 124, as GNU timeout(1) reports it, so a shell user reads it alike.
TIMED_OUT = 124
USAGE = "usage: supervise.py [--parent PID] [--grace SECONDS] [--timeout SECONDS] -- command [args...]"


class Stop:
    """Set by a stop signal; the main loop checks it (a handler that raised could leave a half-made Popen)."""

    requested: int | None = None

    @classmethod
    def handle(cls, signum: int, _frame) -> None:
        cls.requested = signum


def prctl(option: int, value: int) -> bool:
    """Linux prctl(2) through libc; False where it is missing or refused (then the polling covers it)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def process_table() -> dict[int, tuple[int, str]]:
    """pid -> (ppid, state) of every visible process, from /proc; empty where there is no /proc."""
    table: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited while we looked
            continue
        # The command name may hold spaces and parentheses: the fields start after the last ')'.
        fields = stat[stat.rindex(")") + 2:].split()
        table[int(entry.name)] = (int(fields[1]), fields[0])
    return table


def living_descendants(root: int) -> set[int]:
    """Pids of every live (not zombie) descendant of `root`."""
    table = process_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _state) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    stack = list(children.get(root, []))
    while stack:
        pid = stack.pop()
        if pid not in found:
            found.add(pid)
            stack.extend(children.get(pid, []))
    return {pid for pid in found if table[pid][1] not in ("Z", "X")}


def send(pids: set[int], group: int, signum: int) -> None:
    """`signum` to the command's process group and to each pid; processes already gone are skipped."""
    for target, kill in ((group, os.killpg), *((pid, os.kill) for pid in pids)):
        try:
            kill(target, signum)
        except (ProcessLookupError, PermissionError):
            pass


def stop_tree(child: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM the command's group and every descendant, wait up to `grace_s`, then SIGKILL what is left."""
    me = os.getpid()
    signalled = living_descendants(me)
    send(signalled, child.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        child.poll()  # reap the command itself, or it stays a zombie and its group stays signalable
        alive = living_descendants(me)
        if not alive and child.returncode is not None:
            return
        # A process started during the shutdown gets its SIGTERM too (once: torchrun escalates on a second).
        send(alive - signalled, child.pid, signal.SIGTERM)
        signalled |= alive
        time.sleep(0.05)
    leftovers = living_descendants(me)
    print(f"supervise: {len(leftovers)} process(es) ignored SIGTERM for {grace_s:g} s; sending SIGKILL",
          file=sys.stderr, flush=True)
    send(leftovers, child.pid, signal.SIGKILL)
    child.wait()


def finished(child: subprocess.Popen, timeout_s: float) -> bool:
    """Wait up to `timeout_s` for the command (Popen's wait notices its exit within milliseconds)."""
    try:
        child.wait(timeout=timeout_s)
        return True
    except subprocess.TimeoutExpired:
        return False


def parent_gone(parent: int) -> bool:
    """True once `parent` is no longer our parent (it died and we were re-parented)."""
    return os.getppid() != parent


def exit_code(returncode: int) -> int:
    """Popen's returncode as a shell reports it: -N (killed by signal N) becomes 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def supervise(command: list[str], parent: int, grace_s: float = GRACE_S, timeout_s: float | None = None) -> int:
    """Run `command` until it exits, the supervisor must stop or `timeout_s` has passed; its exit code."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, Stop.handle)
    prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    if parent_gone(parent):  # died before the prctl above could take effect: start nothing
        return 128 + signal.SIGTERM
    # stdout/stderr are inherited: the command writes straight into the caller's pipe, line by line.
    child = subprocess.Popen(command, start_new_session=True)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while not finished(child, POLL_S):
        if Stop.requested is not None or parent_gone(parent):
            stop_tree(child, grace_s)
            return exit_code(child.returncode)
        if deadline is not None and time.monotonic() >= deadline:
            print(f"supervise: {command[0]!r} ran over its {timeout_s:g} s limit; stopping it",
                  file=sys.stderr, flush=True)
            stop_tree(child, grace_s)
            return TIMED_OUT
    if living_descendants(os.getpid()):  # background processes the command left behind
        stop_tree(child, grace_s)
    return exit_code(child.returncode)


def parse(argv: list[str]) -> tuple[list[str], int, float, float | None]:
    """(command, parent pid, grace seconds, timeout seconds or None) from the command line; SystemExit with
    the usage when malformed."""
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        raise SystemExit(USAGE)
    split = argv.index("--")
    options, command = argv[:split], argv[split + 1:]
    values = {"--parent": str(os.getppid()), "--grace": str(GRACE_S), "--timeout": None}
    while options:
        name = options.pop(0)
        if name not in values or not options:
            raise SystemExit(f"supervise: bad option {name!r}\n{USAGE}")
        values[name] = options.pop(0)
    timeout = values["--timeout"]
    if timeout is not None and not float(timeout) > 0:
        raise SystemExit(f"supervise: --timeout must be above 0 seconds, got {timeout}\n{USAGE}")
    return command, int(values["--parent"]), float(values["--grace"]), None if timeout is None else float(timeout)


def main(argv: list[str] | None = None) -> int:
    command, parent, grace_s, timeout_s = parse(sys.argv[1:] if argv is None else argv)
    try:
        return supervise(command, parent, grace_s, timeout_s)
    except FileNotFoundError as exc:
        print(f"supervise: cannot run {command[0]!r}: {exc.strerror}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main())
