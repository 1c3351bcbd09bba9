"""doit glue. A workspace's dodo.py is the one line

    from llmbuild.doit import *  # noqa: F401,F403 -- this directory is an llmbuild workspace

which gives doit one task per target (named by its address), one per directory
(`models/x`), one per subtree (`models/::`) and one per tag (`tag:fp8`), plus llmbuild's run
reporter; task names on the command line are read as specs, relative to where doit was started
(`doit -k :engine` in a model directory; see specs.py).
Nothing is loaded until doit imports the dodo file, so a bad workspace is
reported by doit as one line, and `--reporter json` can import this package.
"""

__all__ = ["DOIT_CONFIG", "task_llmbuild"]


def __getattr__(name: str):
    if name == "DOIT_CONFIG":
        from .tasks import doit_config

        return doit_config()
    if name == "task_llmbuild":
        from .specs import read_specs_on_command_line
        from .tasks import task_llmbuild

        read_specs_on_command_line()
        return task_llmbuild
    raise AttributeError(name)
