"""Processes of this host."""

import os
import signal
import threading


def running(pid: int) -> bool:
    """Whether a process of this host has this ID (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


_interrupted = False


def _interrupt(signum, frame) -> None:
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def watch_interrupts() -> None:
    """Call before starting a subprocess with a preexec_fn; `raise_if_interrupted` after. Python
    swallows a KeyboardInterrupt raised while its fork callbacks run, so a Ctrl-C arriving as a
    tool starts would be lost: from here on one is remembered as well as raised. Only from the
    main thread, and only over Python's own handler."""
    global _interrupted
    _interrupted = False  # an earlier Ctrl-C was raised in ordinary code, not lost
    if threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _interrupt)


def raise_if_interrupted() -> None:
    """Raise the Ctrl-C that arrived (perhaps swallowed) since `watch_interrupts`."""
    if _interrupted:
        raise KeyboardInterrupt
