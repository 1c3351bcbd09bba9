from llmbuild.doit import *  # noqa: F401,F403 -- makes this directory an llmbuild workspace
