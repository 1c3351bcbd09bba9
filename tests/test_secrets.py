"""Secrets given to tools by environment never appear in anything llmbuild writes or prints.

The GPU lane's programs are stand-ins (test_gpu_host.py's approach) that talk too much: they
print their whole environment and a URL holding the token, and the first one fails. The secret
variables are set to marker values, the workspace uses a real S3 remote cache whose secret key is
itself a marker, and after a failed run, a successful one, `llmbuild plan`/`explain` (text and
--json) and a restore into a second workspace, every file under the test's directory, every
object in the remote cache and every byte of captured output is searched for the markers.
"""

from __future__ import annotations

import hashlib
import json
import sys
import textwrap

import pytest

from conftest import TINY_HF
from s3_fixtures import BUCKET
from test_gpu_host import host_workspace

TALKATIVE = textwrap.dedent('''\
    #!{python}
    """A TensorRT-LLM program that prints its environment and a URL with the token; the first fails."""
    import hashlib, json, os, sys
    from pathlib import Path
    argv = sys.argv
    with open({record!r}, "a") as record:  # digests prove receipt without writing the values
        record.write(json.dumps({{name: hashlib.sha256(os.environ[name].encode()).hexdigest()
                                  for name in {names!r} if name in os.environ}}) + "\\n")
    for name, value in sorted(os.environ.items()):
        print(f"{{name}}={{value}}")
    print(f"downloading https://user:{{os.environ.get('HF_TOKEN')}}@huggingface.co/tiny", flush=True)
    first = Path({first!r})
    if not first.exists():
        first.touch()
        sys.exit(f"refused: token {{os.environ.get('HF_TOKEN')}} and key {{os.environ.get('MY_API_TOKEN')}}")
    out = Path(argv[argv.index("--output_dir") + 1])
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps({{"architecture": "LlamaForCausalLM", "dtype": "float16"}}))
    (out / "rank0.bin").write_bytes(b"written by a stand-in")
    ''')


def test_secret_values_are_in_nothing_written_or_printed(make_workspace, tmp_path, s3_server, remote_url):
    markers = {"HF_TOKEN": "hf-marker-6b1f0e", "HUGGING_FACE_HUB_TOKEN": "hub-marker-93ac2d",
               "MY_API_TOKEN": "api-marker-44d0b7",  # a generic *_TOKEN
               "CORP_VAULTKEY": "vault-marker-e2c815",  # secret only by the workspace's pattern
               "AWS_SECRET_ACCESS_KEY": s3_server.secret}  # boto3's: the remote cache's real key
    record = tmp_path / "record.jsonl"
    program = TALKATIVE.format(python=sys.executable, record=str(record), names=sorted(markers),
                               first=str(tmp_path / "failed-once"))
    ws = make_workspace()
    settings = f'secret_env = ["CORP_VAULT*"]\nremote_cache = "{remote_url}"'
    env, _ = host_workspace(ws, tmp_path, program, settings, **{**s3_server.env, **markers})
    ws.add_model("m", TINY_HF)
    outputs: list[str] = []

    failed = ws.doit(env=env, check=False)
    outputs += [failed.stdout, failed.stderr]
    assert failed.returncode != 0 and failed.outcomes["models/m:checkpoint"] == "failed"
    assert "<HF_TOKEN redacted>" in failed.stdout  # the tool did print it: as its progress and log tail showed
    built = ws.doit("--reporter", "json", env=env)
    outputs += [built.stdout, built.stderr]
    assert built.outcomes == {"models/m:checkpoint": "built", "models/m:engine": "built"}
    for args in (["plan"], ["plan", "--json"], ["explain", "models/m:engine"]):
        shown = ws.llmbuild(*args, env=env)
        outputs += [shown.stdout, shown.stderr]
    second = make_workspace("second", cache=tmp_path / "second-cache")
    env2, _ = host_workspace(second, tmp_path, program, settings, **{**s3_server.env, **markers})
    second.add_model("m", TINY_HF)
    restored = second.doit(env=env2)
    outputs += [restored.stdout, restored.stderr]
    assert {r["address"]: r.get("from") for r in restored.records} == {"models/m:checkpoint": "remote",
                                                                       "models/m:engine": "remote"}

    # The tools got every secret, the pattern's too (the digests of the values they saw).
    seen = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(seen) == 3  # the failed conversion, then conversion and engine build
    expected = {name: hashlib.sha256(value.encode()).hexdigest() for name, value in markers.items()}
    assert all(one == expected for one in seen)
    # The failed attempt's log and the committed ones kept what the tool said, values redacted.
    logs = [p.read_text() for p in (tmp_path / "cache").rglob("log.txt")]
    assert any("refused: token <HF_TOKEN redacted> and key <MY_API_TOKEN redacted>" in log for log in logs)
    assert any("CORP_VAULTKEY=<CORP_VAULTKEY redacted>" in log for log in logs)
    assert any("https://user:<HF_TOKEN redacted>@huggingface.co" in log for log in logs)

    values = [value.encode() for value in markers.values()]
    written = [path for path in tmp_path.rglob("*") if path.is_file() and not path.is_symlink()]
    assert len(written) > 20
    leaks = [f"{path}: {value.decode()}" for path in written for value in values if value in path.read_bytes()]
    client = s3_server.client()
    prefix = remote_url.removeprefix(f"s3://{BUCKET}/")
    objects = [name for name in s3_server.objects(prefix)]
    assert any("/manifests/" in name for name in objects)
    leaks += [f"s3 {name}: {value.decode()}" for name in objects
              for value in values if value in client.get_object(Bucket=BUCKET, Key=name)["Body"].read()]
    leaks += [f"output {index}: {value.decode()}" for index, text in enumerate(outputs)
              for value in values if value in text.encode()]
    assert leaks == []


def test_an_error_message_never_holds_a_secret_value(monkeypatch):
    from llmbuild.core.errors import BuildFailed

    monkeypatch.setenv("SOME_SECRET_THING", "abc/def+ghi")
    monkeypatch.setenv("VISIBLE", "abc/def+ghi-but-not-secret")  # only names that match are secrets
    err = BuildFailed("tool said abc/def+ghi at https://x:abc%2Fdef%2Bghi@host", file="BUILD.toml", target="t")
    assert str(err) == ("BUILD.toml: t: tool said <SOME_SECRET_THING redacted> at "
                        "https://x:<SOME_SECRET_THING redacted>@host")


@pytest.mark.parametrize("given, problem", [
    ('secret_env = [1]', "secret_env"),
    ('timeouts = { engine = "2 hours" }', "'2 hours' is not a duration"),
    ('timeouts = { engin = "2h" }', "no kind 'engin' (did you mean 'engine'?)"),
])
def test_bad_secret_and_timeout_settings_are_one_line(make_workspace, given, problem):
    ws = make_workspace()
    ws.write_pyproject(extra=given)
    ws.add_model("m", TINY_HF)
    shown = ws.llmbuild("plan", check=False)
    assert shown.returncode == 2
    line = shown.stderr.strip()
    assert line.startswith("llmbuild: error: pyproject.toml: [tool.llmbuild]: ") and "\n" not in line
    if problem:
        assert problem in line


def test_settings_from_the_environment(make_workspace):
    ws = make_workspace()
    ws.add_model("m", TINY_HF)
    env = ws.env(LLMBUILD_TIMEOUTS="engine=90s, smoke=10m", LLMBUILD_SECRET_ENV="CORP_*,OTHER")
    from llmbuild.plugins import load_workspace
    from llmbuild.toolchains.subsystem import ToolchainSettings

    options = load_workspace(ws.root, env).settings.option(ToolchainSettings)
    assert options.secret_env == ["CORP_*", "OTHER"]
    assert (options.timeout("engine"), options.timeout("smoke"), options.timeout("checkpoint")) == (90, 600, 7200)
    broken = ws.llmbuild("plan", env=ws.env(LLMBUILD_TIMEOUTS="engine"), check=False)
    assert "expected 'kind=duration,...'" in broken.stderr and broken.returncode == 2
