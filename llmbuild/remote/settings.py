"""The remote cache's `[tool.llmbuild]` settings (a subsystem: it owns these keys).

Only where the cache is and how to use it: the endpoint, region and credentials come from
the standard AWS variables and files, read by boto3 itself, never from a settings file.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..core.errors import LLMBuildError
from ..core.protocols import Subsystem

#: s3://<bucket>[/<prefix>]: an S3 bucket name, then object-key characters without spaces.
URL = re.compile(r"s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(?P<prefix>[\w.\-/=+]*))?")


def parse_url(url: str) -> tuple[str, str]:
    """(bucket, prefix ending in '/' or empty) of an s3:// URL."""
    match = URL.fullmatch(url)
    if match is None or ".." in (match["prefix"] or "").split("/"):
        # the value is not echoed: a mistyped URL may hold a pasted credential
        raise LLMBuildError("expected s3://<bucket>/<prefix> (the endpoint and credentials come from "
                            "the AWS variables and files, never from here)",
                            file="pyproject.toml", target="[tool.llmbuild]", key="remote_cache")
    prefix = "/".join(part for part in (match["prefix"] or "").split("/") if part)
    return match["bucket"], f"{prefix}/" if prefix else ""


class RemoteCacheSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    remote_cache: str | None = Field(
        None, description="s3://<bucket>/<prefix> of an action cache shared between machines (any "
        "S3-compatible store): a local miss is restored from it, every file verified; a local build "
        "is uploaded to it. Endpoint, region and credentials come only from the standard AWS "
        "variables and files (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, "
        "AWS_PROFILE). Default: none.")
    remote_cache_mode: Literal["readwrite", "read", "off"] = Field(
        "readwrite", description="readwrite: restore from it and upload to it; read: restore only, "
        "never write (e.g. CI jobs of pull requests); off: do not use it.")
    remote_cache_required: bool = Field(
        False, description="An unusable remote cache (unreachable, refused) fails the targets that "
        "need it; default: one warning line, then builds go on without it.")
    remote_cache_connect_timeout: float = Field(
        5.0, gt=0, description="Seconds to wait for a connection to the remote cache.")
    remote_cache_read_timeout: float = Field(
        60.0, gt=0, description="Seconds to wait for the remote cache to answer on an open connection.")
    remote_cache_retries: int = Field(
        2, ge=0, le=10, description="Retries of a failed request, with backoff, before the remote "
        "cache counts as unusable for the rest of the run.")

    @field_validator("remote_cache")
    @classmethod
    def _s3_url(cls, value: str | None) -> str | None:
        if value is not None:
            parse_url(value)
        return value


SUBSYSTEM = Subsystem(RemoteCacheSettings, env={
    "LLMBUILD_REMOTE_CACHE": "remote_cache",
    "LLMBUILD_REMOTE_CACHE_MODE": "remote_cache_mode",
})
