"""`container`: the image other targets' steps run in (e.g. Triton + TensorRT-LLM).

Either `image` (taken from the daemon, pulled if absent) or a `dockerfile` built
through the Docker SDK. The output is the image's identity (`image.json`), so a
rebuild that yields the same image ID rebuilds nothing downstream, while a new
image invalidates everything built with it. The image is tagged with the action
key (a tag, not a label: a label would change the image ID on every key and
defeat that cutoff); the target is up to date only while that tag exists in the
daemon, so a deleted or pruned image is rebuilt.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import Field, model_validator

from ..core.errors import LLMBuildError
from ..core.steps import Plan
from ..core.target import Kind, Source, TargetFields, register
from ..executors.docker import IMAGE_FILE, image_tag

#: Environment variables NGC / tensorrtllm_backend images set, by what they report.
VERSION_ENV = {"trtllm_version": ("TRTLLM_VERSION", "TENSORRT_LLM_VERSION"),
               "tensorrt_version": ("TRT_VERSION", "TENSORRT_VERSION")}


class ContainerFields(TargetFields):
    image: str | None = Field(None, description="An image reference to use as is (pulled if absent).")
    dockerfile: Annotated[str | None, Source()] = Field(None, description="Dockerfile to build.")
    context: Annotated[str | None, Source()] = Field(
        None, description="Build context directory (default: the Dockerfile's directory).")
    build_args: dict[str, str] = Field(default_factory=dict, description="--build-arg NAME=VALUE")
    target: str | None = Field(None, description="--target stage of a multi-stage Dockerfile")
    platform: str | None = Field(None, description="--platform, e.g. linux/amd64")
    trtllm_version: str | None = Field(
        None, description="TensorRT-LLM version the image holds (default: read from the image, "
        "else the workspace's trtllm_version); decides which flags are generated.")
    tensorrt_version: str | None = Field(None, description="TensorRT version the image holds.")

    @model_validator(mode="after")
    def _one_source(self):
        if (self.image is None) == (self.dockerfile is None):
            raise ValueError("give exactly one of image (use as is) or dockerfile (build)")
        if self.image and (self.context or self.build_args or self.target):
            raise ValueError("context, build_args and target only apply with dockerfile")
        return self


@register
class Container(Kind):
    name = "container"
    Fields = ContainerFields
    help = "A Docker image (pulled or built from a Dockerfile) that other targets' steps run in."
    portable = False  # its output names an image in this host's daemon: never in a remote cache

    def derived_sources(self, ctx):
        f: ContainerFields = ctx.fields
        if f.dockerfile and f.context is None:
            return {"context": ctx.sources["dockerfile"].parent}
        return {}

    def facts(self, ctx):
        f: ContainerFields = ctx.fields
        return {"trtllm_version": f.trtllm_version, "tensorrt_version": f.tensorrt_version}

    def check(self, ctx):
        if ctx.fields.dockerfile:
            context, dockerfile = ctx.sources["context"], ctx.sources["dockerfile"]
            if not context.is_dir():
                raise ctx.error(f"build context {context} is not a directory",
                                key="context" if ctx.fields.context else "dockerfile")
            if context not in dockerfile.parents:
                raise ctx.error(f"the Dockerfile must lie inside the build context {context}",
                                   key="dockerfile")

    def plan(self, ctx):
        f: ContainerFields = ctx.fields
        params: dict[str, Any] = {"trtllm_version": f.trtllm_version, "tensorrt_version": f.tensorrt_version}
        if f.image:
            params["image"] = f.image
        else:
            dockerfile = ctx.sources["dockerfile"].relative_to(ctx.sources["context"]).as_posix()
            params.update(dockerfile=dockerfile, build_args=dict(sorted(f.build_args.items())),
                          target=f.target, platform=f.platform)
        return Plan(params=params)

    def commands(self, ctx):
        """The `docker` command line equivalent to what `run` asks the daemon for (through its API)."""
        f: ContainerFields = ctx.fields
        tag = image_tag("<action key>")
        if f.image:
            return [{"tool": "docker", "argv": ["docker", "pull", *(["--platform", f.platform] if f.platform else []),
                                                f.image],
                     "note": f"only when the daemon lacks it; then tagged {tag}"}]
        argv = ["docker", "build", "-t", tag, "-f", str(ctx.sources["dockerfile"])]
        for name, value in sorted(f.build_args.items()):
            argv += ["--build-arg", f"{name}={value}"]
        argv += (["--target", f.target] if f.target else []) + (["--platform", f.platform] if f.platform else [])
        return [{"tool": "docker", "argv": argv + [str(ctx.sources["context"])]}]

    def output_valid(self, ctx, key):
        from ..executors.docker import docker_client
        from docker.errors import ImageNotFound

        try:
            docker_client().images.get(image_tag(key))
        except ImageNotFound:
            return False
        return True

    def run(self, ctx):
        from ..executors.docker import docker_client

        client = docker_client()
        tag = image_tag(ctx.key)
        if ctx.fields.image:
            image = self._take(client, ctx)
            image.tag(*tag.split(":"))
        else:
            self._build(client, ctx, tag)
        image = client.images.get(tag)
        identity = {"image_id": image.id, **self._versions(ctx, image)}
        (ctx.out / IMAGE_FILE).write_text(json.dumps(identity, indent=2, sort_keys=True) + "\n")
        ctx.progress.keep(f"image {image.id[:19]} ({tag})")

    def _take(self, client, ctx):
        from docker.errors import APIError, ImageNotFound

        ref = ctx.fields.image
        try:
            return client.images.get(ref)
        except ImageNotFound:
            ctx.progress(f"pulling {ref}")
        try:
            return client.images.pull(ref, platform=ctx.fields.platform)
        except APIError as err:
            raise LLMBuildError(f"cannot pull {ref}: {err.explanation or err}") from None

    def _build(self, client, ctx, tag: str) -> None:
        f: ContainerFields = ctx.fields
        plan = ctx.plan.params
        with open(ctx.log, "a") as log:
            stream = client.api.build(path=str(ctx.sources["context"]), dockerfile=plan["dockerfile"],
                                      buildargs=f.build_args, target=f.target, platform=f.platform,
                                      tag=tag, rm=True, forcerm=True, decode=True, pull=False)
            for chunk in stream:
                if "error" in chunk:
                    log.write(chunk["error"] + "\n")
                    raise LLMBuildError(f"docker build failed: {chunk['error'].strip()}")
                text = chunk.get("stream", "")
                if text:
                    log.write(text)
                    if text.strip() and (text.startswith("Step ") or text.startswith("Successfully")):
                        ctx.progress(text.strip())

    def _versions(self, ctx, image) -> dict[str, str | None]:
        """Declared versions, checked against (or else read from) the image's environment."""
        env = dict(item.split("=", 1) for item in image.attrs.get("Config", {}).get("Env") or [] if "=" in item)
        found = {}
        for field, names in VERSION_ENV.items():
            declared = getattr(ctx.fields, field)
            seen = next((env[n] for n in names if n in env), None)
            if declared and seen and not seen.startswith(declared):
                raise LLMBuildError(f"{field} is declared {declared} but the image reports {seen}")
            found[field] = declared or seen
        return found
