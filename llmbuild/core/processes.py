"""Processes of this host."""

import os


def running(pid: int) -> bool:
    """Whether a process of this host has this ID (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True
