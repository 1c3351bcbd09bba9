"""`llmbuild schema` and `llmbuild graph`: the BUILD.toml JSON Schema and the target graph."""

from __future__ import annotations

import html
import json
import re
import shutil
import stat
import subprocess
import sys
import textwrap
import tomllib

import pytest

from conftest import REPO, TINY_HF
from llmbuild.plugins import load_kinds
from llmbuild.plugins import load_workspace
from llmbuild.introspect.graph import (NEVER_RUN, OUTCOME_COLOURS, graph_dot, graph_mermaid,
                                       load_outcomes, render_png)
from llmbuild.introspect.reference import reference_markdown, tables
from llmbuild.introspect.schema import buildfile_schema, schema_json, write_schema


COMMITTED_SCHEMA = REPO / "docs" / "buildfile.schema.json"
COMMITTED_REFERENCE = REPO / "docs" / "reference.md"
REPO_BUILD_FILES = sorted([*REPO.glob("models/**/BUILD.toml"), *REPO.glob("toolchains/**/BUILD.toml")])
HAS_DOT = shutil.which("dot") is not None


# -- the schema -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def jsonschema():
    """The `jsonschema` package (the `test` extra); only the schema tests need it."""
    import jsonschema  # the test extra installs it

    return jsonschema


@pytest.fixture(scope="module")
def schema() -> dict:
    return buildfile_schema()


def errors(jsonschema, schema: dict, text: str) -> list[str]:
    document = tomllib.loads(textwrap.dedent(text))
    found = jsonschema.Draft202012Validator(schema).iter_errors(document)
    return sorted(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in found)


def test_committed_schema_is_fresh():
    assert COMMITTED_SCHEMA.is_file(), f"{COMMITTED_SCHEMA} is missing"
    assert COMMITTED_SCHEMA.read_text() == schema_json(), (
        "docs/buildfile.schema.json is stale: regenerate it with "
        "`python -m llmbuild.introspect.schema docs/buildfile.schema.json`")


def test_schema_is_deterministic_and_valid(jsonschema, schema, tmp_path):
    assert schema_json() == schema_json()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] and schema["title"]
    jsonschema.Draft202012Validator.check_schema(schema)
    written = write_schema(tmp_path / "sub" / "buildfile.schema.json")
    assert written.read_text() == schema_json()
    assert json.loads(written.read_text()) == schema


def test_schema_follows_the_kinds(schema):
    """Generated, not hand-written: one property per kind, one schema property per field,
    the fields' descriptions, and every $ref resolves."""
    kinds = load_kinds()
    assert set(schema["properties"]) == set(kinds) | {"defaults"}
    assert set(schema["properties"]["defaults"]["properties"]) == set(kinds)
    assert schema["additionalProperties"] is False
    for name, kind in kinds.items():
        table = schema["properties"][name]
        assert table["propertyNames"]["pattern"] == "^[A-Za-z0-9][A-Za-z0-9_.-]*$"
        target = schema["$defs"][table["additionalProperties"]["$ref"].rsplit("/", 1)[1]]
        assert set(target["properties"]) == set(kind.Fields.model_fields)
        assert target["additionalProperties"] is False
        required = {f for f, info in kind.Fields.model_fields.items() if info.is_required()}
        assert set(target.get("required", [])) == required
        for field, info in kind.Fields.model_fields.items():
            if info.description:
                assert target["properties"][field]["description"] == info.description
        defaults = schema["$defs"][schema["properties"]["defaults"]["properties"][name]["$ref"].rsplit("/", 1)[1]]
        assert "required" not in defaults and set(defaults["properties"]) == set(target["properties"])
    text = json.dumps(schema)
    for ref in re.findall(r'"\$ref": "#/\$defs/([^"]+)"', text):
        assert ref in schema["$defs"], ref
    # Only keywords that draft 7 reads the same way (Taplo may validate with an older dialect).
    for keyword in ("prefixItems", "$dynamicRef", "$dynamicAnchor", "unevaluatedProperties",
                    "unevaluatedItems", "dependentRequired", "dependentSchemas", '"type": "null"'):
        assert keyword not in text


def test_nested_models_of_the_same_name_do_not_collide(monkeypatch, jsonschema):
    """Two kinds whose nested tables are different models that share a name keep both."""
    from llmbuild.core.target import FieldGroup, Kind, TargetFields
    from llmbuild.introspect import schema as schema_module

    def kind(kind_name: str, group: type) -> Kind:
        fields = type(f"{kind_name.title()}Fields", (TargetFields,), {
            "__annotations__": {"opts": group | None}, "opts": None})
        return type(kind_name.title(), (Kind,), {"name": kind_name, "Fields": fields})()

    class Options(FieldGroup):
        size: int

    a_options = Options
    Options = type("Options", (FieldGroup,), {"__annotations__": {"mode": str}})  # noqa: N806
    monkeypatch.setattr(schema_module, "load_kinds", lambda: {"alpha": kind("alpha", a_options),
                                                              "beta": kind("beta", Options)})
    generated = schema_module.buildfile_schema()
    assert {"Options", "beta.Options"} <= set(generated["$defs"])
    validator = jsonschema.Draft202012Validator(generated)
    assert validator.is_valid({"alpha": {"x": {"opts": {"size": 1}}}, "beta": {"y": {"opts": {"mode": "m"}}}})
    assert not validator.is_valid({"beta": {"y": {"opts": {"size": 1}}}})
    assert not validator.is_valid({"alpha": {"x": {"opts": {"mode": "m"}}}})


# -- the field reference --------------------------------------------------------------------------

def test_committed_reference_is_fresh():
    assert COMMITTED_REFERENCE.is_file(), f"{COMMITTED_REFERENCE} is missing"
    assert COMMITTED_REFERENCE.read_text() == reference_markdown(), (
        "docs/reference.md is stale: regenerate it with "
        "`llmbuild schema --reference --out docs/reference.md`")


def test_every_field_has_a_description():
    missing = [f"{table.heading} {name}" for table in tables() for name, info in table.fields.items()
               if not (info.description or "").strip()]
    assert missing == []


def _rows(text: str, heading: str) -> dict[str, list[str]]:
    """{field: cells} of the table under `heading`."""
    section = text.split(f"\n{heading}\n", 1)[1].split("\n#", 1)[0]
    rows = [line.strip("| ").split(" | ") for line in section.splitlines() if line.startswith("| `")]
    return {cells[0].strip("`"): cells[1:] for cells in rows}


def test_reference_has_every_kind_field_flag_and_setting(tmp_path):
    """One table per kind (its own fields), per nested table and for the settings; the flag column
    comes from the Flag markers, with the program when only one of the kind's programs takes it."""
    written = tmp_path / "reference.md"
    subprocess.run([sys.executable, "-m", "llmbuild", "schema", "--reference", "--out", str(written)],
                   cwd=REPO, check=True, capture_output=True)
    text = written.read_text()
    assert text == reference_markdown()
    common = _rows(text, "## Fields every target takes")
    assert set(common) == {"description", "tags", "lanes"}
    for name, kind in load_kinds().items():
        assert set(_rows(text, f"## `{name}`")) == set(kind.Fields.model_fields) - set(common)
    engine, lora = _rows(text, "## `engine`"), _rows(text, "### `[engine.<name>.lora]`")
    assert engine["max_batch_size"][:3] == ["integer > 0", "—", "`--max_batch_size`"]
    assert engine["gather_context_logits"][1:3] == ["`false`", "`--gather_context_logits`"]
    assert engine["checkpoint"][:3] == ["address of a target of kind `checkpoint`", "required", ""]
    assert lora["max_rank"][1:3] == ["`64`", "`--max_lora_rank`"]
    checkpoint = _rows(text, "## `checkpoint`")
    assert checkpoint["family"][1] == '`"llama"`'
    assert checkpoint["dtype"][2] == "`--dtype`"
    assert checkpoint["workers"][2] == "`--workers` (convert_checkpoint.py:llama)"
    assert _rows(text, "### `[checkpoint.<name>.quantization]`")["qformat"][1:3] == \
        ["required", "`--qformat` (quantize.py)"]
    assert set(_rows(text, "### `[[smoke.<name>.requests]]`")) >= {"prompt", "expect_text"}
    settings = _rows(text, "## `[tool.llmbuild]` (pyproject.toml)")
    assert settings["lane"][1:3] == ['`"cpu"`', "`LLMBUILD_LANE`"]
    assert "gpu_memory_gib" in _rows(text, "### `[tool.llmbuild.host]`")
    assert "unique across kinds within a directory" in " ".join(text.split())
    assert "times its rope scaling factor" in engine["max_seq_len"][3]


@pytest.mark.parametrize("path", REPO_BUILD_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_repository_build_files_validate(jsonschema, schema, path):
    document = tomllib.loads(path.read_text())
    for validator in (jsonschema.Draft202012Validator, jsonschema.Draft7Validator):
        assert [e.message for e in validator(schema).iter_errors(document)] == []


def test_repository_has_build_files():
    assert any(p.match("models/*/BUILD.toml") for p in REPO_BUILD_FILES)
    assert any(p.match("toolchains/*/BUILD.toml") for p in REPO_BUILD_FILES)


def test_valid_buildfile_with_defaults(jsonschema, schema):
    assert errors(jsonschema, schema, """
        [defaults.engine]
        max_batch_size = 8          # a partial engine: checkpoint is not needed here
        lora = { max_rank = 16 }

        [defaults.checkpoint]
        lanes = ["gpu"]

        [checkpoint.ckpt]
        source = "hf"
        tp_size = 2
        quantization = { qformat = "fp8", calib_size = 64 }

        [engine."tp2.fp8"]
        checkpoint = ":ckpt"
        max_num_tokens = 4096
        use_paged_context_fmha = true

        [repository.serve]
        engine = ":tp2.fp8"
        kv_cache_free_gpu_mem_fraction = 0.9
        extra_parameters = { sink_token_length = 1, normalize_log_probs = true }

        [smoke.generate]
        repository = ":serve"
        prompt = "hi"
        requests = [{ prompt = "a", max_tokens = 3, endpoint = "tensorrt_llm_bls" }]

        [container.trtllm]
        image = "nvcr.io/nvidia/tritonserver:24.12-trtllm-python-py3"
        """) == []


@pytest.mark.parametrize("text, expected", [
    ("[engine.e]\ncheckpoint = ':c'\nmax_batch_sise = 4\n", "engine/e: Additional properties are not allowed ('max_batch_sise'"),
    ("[engin.e]\ncheckpoint = ':c'\n", ": Additional properties are not allowed ('engin'"),
    ("[engine.e]\ncheckpoint = ':c'\nmax_batch_size = 'four'\n", "engine/e/max_batch_size: 'four' is not of type 'integer'"),
    ("[engine.e]\ncheckpoint = ':c'\nmax_batch_size = 0\n", "engine/e/max_batch_size: 0 is less than or equal to the minimum of 0"),
    ("[checkpoint.c]\nsource = 'hf'\ndtype = 'flaot16'\n", "checkpoint/c/dtype: 'flaot16' is not one of"),
    ("[engine.e]\nmax_batch_size = 4\n", "engine/e: 'checkpoint' is a required property"),
    ("[engine.e]\ncheckpoint = ':c'\nlora = { max_rank = 8, rnak = 2 }\n", "engine/e/lora: Additional properties are not allowed ('rnak'"),
    ("[smoke.s]\nrepository = ':r'\nrequests = [{ max_tokens = 3 }]\n", "smoke/s/requests/0: 'prompt' is a required property"),
    ("[engine.\"-e\"]\ncheckpoint = ':c'\n", "engine: '-e' does not match"),
    ("[defaults.engin]\nmax_batch_size = 4\n", "defaults: Additional properties are not allowed ('engin'"),
    ("[defaults.engine]\nmax_batch_sise = 4\n", "defaults/engine: Additional properties are not allowed ('max_batch_sise'"),
    ("[defaults.engine]\nmax_batch_size = true\n", "defaults/engine/max_batch_size: True is not of type 'integer'"),
    ("[container.c]\nbuild_args = { X = 1 }\n", "container/c/build_args/X: 1 is not of type 'string'"),
    ("engine = 3\n", "engine: 3 is not of type 'object'"),
])
def test_invalid_buildfiles_fail(jsonschema, schema, text, expected):
    found = errors(jsonschema, schema, text)
    assert any(e.startswith(expected) for e in found), found


# -- the graph --------------------------------------------------------------------------------

@pytest.fixture
def graph_ws(make_workspace):
    """Two directories, a cross-directory reference and a GPU-only target (skipped on the CPU lane)."""
    w = make_workspace()
    w.add_model("a", TINY_HF, """\
        [checkpoint.ckpt]
        source = "hf"

        [engine.engine]
        checkpoint = ":ckpt"
        max_batch_size = 4
        max_input_len = 64
        max_seq_len = 96

        [engine.gpu]
        checkpoint = ":ckpt"
        lanes = ["gpu"]
        """)
    w.write("models/b/BUILD.toml", """\
        [repository.serve]
        engine = "models/a:engine"

        [repository.gpu-serve]
        engine = "models/a:gpu"
        """)
    return load_workspace(w.root, environ={})


ADDRESSES = ["models/a:ckpt", "models/a:engine", "models/a:gpu", "models/b:gpu-serve", "models/b:serve"]
EDGES = {("models/a:ckpt", "models/a:engine", "checkpoint"), ("models/a:ckpt", "models/a:gpu", "checkpoint"),
         ("models/a:engine", "models/b:serve", "engine"), ("models/a:gpu", "models/b:gpu-serve", "engine")}
OUTCOMES = {"models/a:ckpt": "built", "models/a:engine": "restored", "models/b:serve": "failed",
            "models/a:gpu": "skipped"}


def dot_nodes(dot: str) -> dict[str, str]:
    return dict(re.findall(r'^\s*"([^"]*:[^"]*)" (\[.*\]);$', dot, re.M))


def dot_edges(dot: str) -> set[tuple[str, str, str]]:
    return {(a, b, label) for a, b, label in
            re.findall(r'^\s*"([^"]+)" -> "([^"]+)" \[label="([^"]+)"\];$', dot, re.M)}


def test_dot_has_every_address_edge_and_cluster(graph_ws):
    dot = graph_dot(graph_ws, graph_ws.select([]), {})
    assert sorted(dot_nodes(dot)) == ADDRESSES
    assert dot_edges(dot) == EDGES
    assert 'label="models/a"' in dot and 'label="models/b"' in dot
    assert dot.count('subgraph "cluster_') == 3  # two directories and the legend
    assert 'label="models/a:engine\\nengine"' in dot


def test_dot_selection_brings_its_dependencies(graph_ws):
    dot = graph_dot(graph_ws, graph_ws.select(["models/b:serve"]), {})
    assert sorted(dot_nodes(dot)) == ["models/a:ckpt", "models/a:engine", "models/b:serve"]
    assert dot_edges(dot) == {("models/a:ckpt", "models/a:engine", "checkpoint"),
                              ("models/a:engine", "models/b:serve", "engine")}


LANE_SKIPPED_ADDRESSES = ("models/a:gpu", "models/b:gpu-serve")


def test_dot_colours_follow_outcomes_and_lane_skips_are_dashed(graph_ws):
    nodes = dot_nodes(graph_dot(graph_ws, graph_ws.select([]), OUTCOMES))
    for address in ADDRESSES:
        # a target that cannot build on this lane is skipped in any run, whatever run.json says
        outcome = "skipped" if address in LANE_SKIPPED_ADDRESSES else OUTCOMES.get(address, NEVER_RUN)
        fill, border = OUTCOME_COLOURS[outcome]
        assert f'fillcolor="{fill}", color="{border}"' in nodes[address], address
    for address in ("models/a:gpu", "models/b:gpu-serve"):
        assert "dashed" in nodes[address]
        assert re.search(r'tooltip="skipped: [^"]*(gpu lane|skipped)', nodes[address]), nodes[address]
    for address in ("models/a:ckpt", "models/a:engine", "models/b:serve"):
        assert "dashed" not in nodes[address]
    unknown = dot_nodes(graph_dot(graph_ws, graph_ws.select([]), {"models/a:ckpt": "exploded"}))
    assert 'fillcolor="{}"'.format(OUTCOME_COLOURS[NEVER_RUN][0]) in unknown["models/a:ckpt"]


def test_dot_legend_and_determinism(graph_ws):
    targets = graph_ws.select([])
    dot = graph_dot(graph_ws, targets, OUTCOMES)
    assert dot == graph_dot(graph_ws, list(reversed(targets)), dict(reversed(OUTCOMES.items())))
    for outcome, (fill, _) in OUTCOME_COLOURS.items():
        assert f'label="{outcome}", fillcolor="{fill}"' in dot
    assert "cpu lane" in dot


def _style(attrs: str) -> dict[str, str]:
    """The attributes that decide how a DOT node looks."""
    found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', attrs))
    return {k: found.get(k) for k in ("shape", "style", "fillcolor", "color")}


def test_dot_legend_looks_like_the_nodes_it_explains(graph_ws):
    """Each legend entry has exactly the style attributes of the nodes it stands for: a target
    skipped on this lane looks like 'skipped on this lane', one skipped because a dependency
    failed like 'skipped', a built one like 'built'."""
    outcomes = {"models/a:ckpt": "failed", "models/a:engine": "skipped", "models/b:serve": "built"}
    dot = graph_dot(graph_ws, graph_ws.select([]), outcomes)
    legend = {name: _style(attrs) for name, attrs in re.findall(r'^\s*"(legend_[^"]+)" (\[.*\]);$', dot, re.M)}
    nodes = {address: _style(attrs) for address, attrs in dot_nodes(dot).items()}
    assert nodes["models/a:gpu"] == nodes["models/b:gpu-serve"] == legend["legend_lane"]
    assert "dashed" in legend["legend_lane"]["style"] and "filled" in legend["legend_lane"]["style"]
    assert nodes["models/a:engine"] == legend["legend_skipped"]
    assert nodes["models/a:ckpt"] == legend["legend_failed"]
    assert nodes["models/b:serve"] == legend["legend_built"]
    mermaid = graph_mermaid(graph_ws, graph_ws.select([]), outcomes)
    classes = {m: c for members, c in re.findall(r"^\s+class (\S+) (\w+)$", mermaid, re.M) for m in members.split(",")}
    dashed = set(re.findall(r"^\s+style (\w+) stroke-dasharray", mermaid, re.M))
    gpu = mermaid_nodes(mermaid)["models/a:gpu"]
    assert classes[gpu] == classes["legend_lane"] == "skipped" and {gpu, "legend_lane"} <= dashed


def test_dot_parses_with_graphviz(graph_ws, tmp_path):
    dot = graph_dot(graph_ws, graph_ws.select([]), OUTCOMES)
    svg = subprocess.run(["dot", "-Tsvg"], input=dot, capture_output=True, text=True, check=True).stdout
    svg = html.unescape(svg)
    for address in ADDRESSES:
        assert f"<title>{address}</title>" in svg
    assert "skipped: declared for the gpu lane only" in svg  # the tooltip
    for dep, dependent, field in EDGES:
        assert f"<title>{dep}->{dependent}</title>" in svg
    assert svg.count('class="edge"') == len(EDGES)  # the legend's layout edges are invisible


def test_dot_quotes_awkward_text(graph_ws):
    target = graph_ws.targets_by_name["models/a:gpu"]
    target.unavailable = 'needs "x" \\ y\nz'
    dot = graph_dot(graph_ws, [target], {})
    assert 'tooltip="skipped: needs \\"x\\" \\\\ y\\nz"' in dot
    if HAS_DOT:
        subprocess.run(["dot", "-Tsvg"], input=dot, capture_output=True, text=True, check=True)


def mermaid_nodes(text: str) -> dict[str, str]:
    """address -> node id, from lines like `t_x["models/a:ckpt<br/>checkpoint"]`."""
    return {label.split("<br/>")[0]: node for node, label in re.findall(r'^\s+(t_\w+)\["([^"]*)"\]$', text, re.M)}


def test_mermaid_edges_groups_and_colours(graph_ws):
    text = graph_mermaid(graph_ws, graph_ws.select([]), OUTCOMES)
    assert text.startswith("flowchart LR\n")
    nodes = mermaid_nodes(text)
    assert sorted(nodes) == ADDRESSES
    address_of = {node: address for address, node in nodes.items()}
    edges = {(address_of[a], address_of[b], field)
             for a, field, b in re.findall(r'^\s+(t_\w+) -->\|"([^"]+)"\| (t_\w+)$', text, re.M)}
    assert edges == EDGES
    assert re.search(r'subgraph \w+\["models/a"\]', text) and re.search(r'subgraph \w+\["models/b"\]', text)
    classes = {}
    for members, cls in re.findall(r"^\s+class (\S+) (\w+)$", text, re.M):
        for member in members.split(","):
            classes[member] = cls
    for address in ADDRESSES:
        outcome = "skipped" if address in LANE_SKIPPED_ADDRESSES else OUTCOMES.get(address, NEVER_RUN)
        expected = outcome.replace("-", "_").replace(" ", "_")
        assert classes[nodes[address]] == expected, address
    for outcome, (fill, _) in OUTCOME_COLOURS.items():
        assert f"fill:{fill}" in text
    dashed = set(re.findall(r"^\s+style (\w+) stroke-dasharray", text, re.M))
    assert {nodes["models/a:gpu"], nodes["models/b:gpu-serve"]} <= dashed
    assert nodes["models/a:engine"] not in dashed
    assert text == graph_mermaid(graph_ws, list(reversed(graph_ws.select([]))), OUTCOMES)


def test_load_outcomes(tmp_path):
    assert load_outcomes(tmp_path) == {}
    (tmp_path / "run.json").write_text("{not json")
    assert load_outcomes(tmp_path) == {}
    (tmp_path / "run.json").write_text('["a list"]')
    assert load_outcomes(tmp_path) == {}
    (tmp_path / "run.json").write_text(json.dumps({"targets": [
        {"address": "models/a:ckpt", "kind": "checkpoint", "outcome": "built", "key": "k", "seconds": 1.0},
        {"address": "models/a:engine", "kind": "engine", "outcome": "up-to-date", "key": "k", "seconds": 0},
        {"address": 3, "outcome": "built"}, "junk"]}))
    assert load_outcomes(str(tmp_path)) == {"models/a:ckpt": "built", "models/a:engine": "up-to-date"}


def test_render_png(graph_ws, tmp_path):
    out = tmp_path / "out" / "graph.png"
    assert render_png(graph_dot(graph_ws, graph_ws.select([]), OUTCOMES), out) is True
    assert out.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert [p.name for p in out.parent.iterdir()] == ["graph.png"]  # no temporary file left


def test_render_png_without_dot(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert render_png("digraph { a }", tmp_path / "g.png") is False
    assert not (tmp_path / "g.png").exists()


def test_render_png_rejects_bad_dot(tmp_path):
    from llmbuild.core.errors import LLMBuildError

    with pytest.raises(LLMBuildError, match="dot failed"):
        render_png("digraph { a -> }", tmp_path / "g.png")
    assert list(tmp_path.iterdir()) == []


def test_graph_command(make_workspace, tmp_path):
    """`llmbuild graph`: DOT or Mermaid to stdout or --out; PNG without Graphviz is one clear error."""
    w = make_workspace()
    w.add_model("a", TINY_HF)
    dot = w.llmbuild("graph").stdout
    assert sorted(dot_nodes(dot)) == ["models/a:checkpoint", "models/a:engine"]
    mermaid = w.llmbuild("graph", "--format", "mermaid", "models/a:checkpoint").stdout
    assert sorted(mermaid_nodes(mermaid)) == ["models/a:checkpoint"]
    out = tmp_path / "graph.mmd"
    assert w.llmbuild("graph", "--format", "mermaid", "--out", str(out), "models/a:checkpoint").stdout == \
        f"wrote {out}\n"
    assert out.read_text() == mermaid
    no_dot = subprocess.run([sys.executable, "-m", "llmbuild", "graph", "--format", "png"], cwd=w.root,
                            capture_output=True, text=True, env=w.env(PATH=str(tmp_path / "empty")))
    assert no_dot.returncode == 2 and no_dot.stdout == ""
    assert no_dot.stderr.startswith("llmbuild: error: a PNG needs Graphviz's `dot`")
    assert not (w.root / "dist" / "graph.png").exists()
    written = w.llmbuild("graph", "--out", "dist/sub/g.dot")
    assert written.stdout == "wrote dist/sub/g.dot\n" and (w.root / "dist/sub/g.dot").read_text() == dot
    assert stat.S_IMODE((w.root / "dist/sub/g.dot").stat().st_mode) == 0o644
    if HAS_DOT:
        # default: under dist/, readable by all, never into the current directory
        assert w.llmbuild("graph", "--format", "png").stdout == "wrote dist/graph.png\n"
        png = w.root / "dist" / "graph.png"
        assert png.read_bytes().startswith(b"\x89PNG") and stat.S_IMODE(png.stat().st_mode) == 0o644
        assert sorted(p.name for p in w.root.iterdir() if p.suffix == ".png") == []
        elsewhere = tmp_path / "elsewhere" / "graph.png"
        assert w.llmbuild("graph", "--format", "png", "--out", str(elsewhere)).stdout == f"wrote {elsewhere}\n"
        assert stat.S_IMODE(elsewhere.stat().st_mode) == 0o644
