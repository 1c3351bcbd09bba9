"""doit glue. A workspace's dodo.py is the one line

    from llmbuild.doit import *  # noqa: F401,F403 -- this directory is an llmbuild workspace

which gives doit one task per target (named by its address), one per directory
(`models/x`) and one per subtree (`models/::`), plus llmbuild's run reporter.
"""

from .tasks import DOIT_CONFIG, task_llmbuild

__all__ = ["DOIT_CONFIG", "task_llmbuild"]
