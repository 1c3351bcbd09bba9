"""The target graph as Graphviz DOT, Mermaid or PNG (`llmbuild graph`).

Nodes are targets, labelled with address and kind, grouped by directory and coloured by the
outcome of the last run (`dist/run.json`); an edge runs from a dependency to its dependent,
labelled with the reference field. A target skipped on the active lane is drawn skipped and
dashed, with the reason as its tooltip; the legend's nodes are drawn with the very attributes of
the nodes they explain. Output is deterministic: the same workspace and outcomes give the
same text, whatever order the targets come in.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.build import BUILT, FAILED, RESTORED, SKIPPED, UP_TO_DATE
from ..core.errors import LLMBuildError
from ..core.graph import dependencies_closure

if TYPE_CHECKING:
    from ..core.target import Target
    from ..core.workspace import Workspace

NEVER_RUN = "never run"
#: Outcome -> (fill, border), in legend order. An outcome missing from run.json is "never run".
OUTCOME_COLOURS: dict[str, tuple[str, str]] = {
    BUILT: ("#b7e4c7", "#2d6a4f"),
    RESTORED: ("#bde0fe", "#1d4e89"),
    UP_TO_DATE: ("#e9ecef", "#6c757d"),
    FAILED: ("#ffb3b3", "#b00020"),
    SKIPPED: ("#fff3bf", "#b08900"),
    NEVER_RUN: ("#ffffff", "#343a40"),
}
LANE_SKIPPED = "skipped on this lane"
RUN_JSON = "run.json"
DOT_TIMEOUT = 300


# -- shared ---------------------------------------------------------------------------------

def _closure(targets: list[Target]) -> list[Target]:
    """The targets and everything they depend on, in address order."""
    return sorted(dependencies_closure(list(targets)), key=lambda t: t.address)


def _outcome(target: Target, outcomes: dict[str, str]) -> str:
    """The last run's outcome; a target that cannot build on this lane is skipped in any run."""
    if target.unavailable:
        return SKIPPED
    outcome = outcomes.get(str(target.address))
    return outcome if outcome in OUTCOME_COLOURS else NEVER_RUN


def _edges(targets: list[Target]) -> list[tuple[Target, Target, str]]:
    """(dependency, dependent, field), sorted by dependent then field."""
    present = {t.address for t in targets}
    return [(dep, target, field)
            for target in targets
            for field, dep in sorted(target.deps.items())
            if dep.address in present]


def _by_directory(targets: list[Target]) -> list[tuple[str, list[Target]]]:
    groups: dict[str, list[Target]] = {}
    for target in targets:
        groups.setdefault(target.address.directory, []).append(target)
    return [(directory, groups[directory]) for directory in sorted(groups)]


def _directory_label(directory: str) -> str:
    return directory or "//"


def _lane(ws: Workspace) -> str:
    return ws.lane


# -- DOT --------------------------------------------------------------------------------------

def _q(text: str) -> str:
    """A DOT double-quoted string holding `text` literally (newlines become DOT's \\n)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _attrs(**attrs: str) -> str:
    return "[" + ", ".join(f"{key}={_q(value)}" for key, value in attrs.items()) + "]"


def _dot_style(outcome: str, lane_skipped: bool) -> dict[str, str]:
    """A node's look, shared by targets and the legend so that the two always match."""
    fill, border = OUTCOME_COLOURS[outcome]
    return {"fillcolor": fill, "color": border, "style": "rounded,filled,dashed" if lane_skipped else "rounded,filled"}


def _dot_node(target: Target, outcome: str) -> dict[str, str]:
    attrs = {"label": f"{target.address}\n{target.kind.name}", **_dot_style(outcome, bool(target.unavailable))}
    if target.unavailable:
        attrs["tooltip"] = f"skipped: {target.unavailable}"
    else:
        attrs["tooltip"] = target.fields.description or f"{target.kind.name} {target.address}"
    return attrs


def graph_dot(ws: Workspace, targets: list[Target], outcomes: dict[str, str]) -> str:
    """Graphviz DOT of `targets` and their dependencies, coloured by `outcomes`
    (address -> outcome of the last run; a missing address was never run)."""
    targets = _closure(targets)
    lane = _lane(ws)
    lines = [
        "digraph llmbuild {",
        f"  graph {_attrs(rankdir='LR', label=f'llmbuild targets ({lane} lane)', labelloc='t', compound='true')};",
        f"  node {_attrs(shape='box', style='rounded,filled')};",
        f"  edge {_attrs(fontsize='10')};",
    ]
    for index, (directory, members) in enumerate(_by_directory(targets)):
        lines.append(f"  subgraph {_q(f'cluster_{index}')} {{")
        lines.append(f"    graph {_attrs(label=_directory_label(directory), style='rounded', color='#adb5bd')};")
        for target in members:
            lines.append(f"    {_q(str(target.address))} {_attrs(**_dot_node(target, _outcome(target, outcomes)))};")
        lines.append("  }")
    for dep, target, field in _edges(targets):
        lines.append(f"  {_q(str(dep.address))} -> {_q(str(target.address))} {_attrs(label=field)};")
    lines.append("  subgraph \"cluster_legend\" {")
    lines.append(f"    graph {_attrs(label='outcome of the last run', style='rounded', color='#adb5bd')};")
    previous = None
    for outcome in OUTCOME_COLOURS:
        node = f"legend_{outcome}"
        lines.append(f"    {_q(node)} {_attrs(label=outcome, **_dot_style(outcome, False))};")
        if previous:
            lines.append(f"    {_q(previous)} -> {_q(node)} {_attrs(style='invis')};")
        previous = node
    lane_tip = f"declared for another lane than {lane}, or needs such a target"
    lines.append(f"    \"legend_lane\" {_attrs(label=LANE_SKIPPED, **_dot_style(SKIPPED, True), tooltip=lane_tip)};")
    lines.append(f"    {_q(previous)} -> \"legend_lane\" {_attrs(style='invis')};")
    lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


# -- Mermaid -----------------------------------------------------------------------------------

def _mermaid_ids(targets: list[Target]) -> dict[str, str]:
    """Readable, unique Mermaid node ids (`t_models_x__engine`) for the addresses."""
    ids: dict[str, str] = {}
    used: set[str] = set()
    for target in targets:
        address = str(target.address)
        base = "t_" + "".join(c if c.isascii() and c.isalnum() else "_" for c in address)
        candidate, n = base, 2
        while candidate in used:
            candidate, n = f"{base}_{n}", n + 1
        used.add(candidate)
        ids[address] = candidate
    return ids


def _mermaid_text(text: str) -> str:
    """Text inside a Mermaid "..." label: quotes and markup characters as entity codes."""
    return (text.replace("#", "#35;").replace('"', "#quot;")
            .replace("<", "#lt;").replace(">", "#gt;"))


def _class(outcome: str) -> str:
    return {UP_TO_DATE: "up_to_date", NEVER_RUN: "never_run"}.get(outcome, outcome)


def graph_mermaid(ws: Workspace, targets: list[Target], outcomes: dict[str, str]) -> str:
    """A Mermaid flowchart of `targets` and their dependencies, coloured by `outcomes`."""
    targets = _closure(targets)
    ids = _mermaid_ids(targets)
    lane = _lane(ws)
    lines = ["flowchart LR", f"  %% llmbuild targets ({lane} lane)"]
    members_of: dict[str, list[str]] = {}
    dashed: list[str] = []
    for index, (directory, members) in enumerate(_by_directory(targets)):
        lines.append(f"  subgraph dir_{index}[\"{_mermaid_text(_directory_label(directory))}\"]")
        for target in members:
            node = ids[str(target.address)]
            label = f"{_mermaid_text(str(target.address))}<br/>{_mermaid_text(target.kind.name)}"
            if target.unavailable:
                label += f"<br/>skipped: {_mermaid_text(target.unavailable)}"
                dashed.append(node)
            lines.append(f"    {node}[\"{label}\"]")
            members_of.setdefault(_class(_outcome(target, outcomes)), []).append(node)
        lines.append("  end")
    for dep, target, field in _edges(targets):
        lines.append(f"  {ids[str(dep.address)]} -->|\"{_mermaid_text(field)}\"| {ids[str(target.address)]}")
    lines.append("  subgraph legend[\"outcome of the last run\"]")
    lines.append("    direction TB")
    for outcome in OUTCOME_COLOURS:
        lines.append(f"    legend_{_class(outcome)}[\"{outcome}\"]")
        members_of.setdefault(_class(outcome), []).append(f"legend_{_class(outcome)}")
    lines.append(f"    legend_lane[\"{LANE_SKIPPED}\"]")
    members_of.setdefault(_class(SKIPPED), []).append("legend_lane")
    dashed.append("legend_lane")
    lines.append("  end")
    for outcome, (fill, border) in OUTCOME_COLOURS.items():
        lines.append(f"  classDef {_class(outcome)} fill:{fill},stroke:{border},color:#000")
    for outcome in OUTCOME_COLOURS:
        if members_of.get(_class(outcome)):
            lines.append(f"  class {','.join(members_of[_class(outcome)])} {_class(outcome)}")
    for node in dashed:
        lines.append(f"  style {node} stroke-dasharray:5 5")
    return "\n".join(lines) + "\n"


# -- run.json and rendering ----------------------------------------------------------------------

def load_outcomes(dist_dir: str | Path) -> dict[str, str]:
    """address -> outcome from `<dist_dir>/run.json`; {} when it is missing or unreadable."""
    try:
        data = json.loads((Path(dist_dir) / RUN_JSON).read_text())
    except (OSError, ValueError):
        return {}
    records = data.get("targets") if isinstance(data, dict) else None
    if not isinstance(records, list):
        return {}
    outcomes: dict[str, str] = {}
    for record in records:
        if (isinstance(record, dict) and isinstance(record.get("address"), str)
                and isinstance(record.get("outcome"), str)):
            outcomes[record["address"]] = record["outcome"]
    return outcomes


def render_png(dot_text: str, out_path: str | Path) -> bool:
    """Render DOT to a PNG with Graphviz's `dot`; False (nothing written) if `dot` is not on PATH.

    The file appears whole or not at all; a `dot` that rejects the input raises LLMBuildError."""
    dot = shutil.which("dot")
    if dot is None:
        return False

    def render(tmp: str) -> None:
        try:
            proc = subprocess.run([dot, "-Tpng", "-o", tmp], input=dot_text, capture_output=True,
                                  text=True, timeout=DOT_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise LLMBuildError(f"dot did not finish within {DOT_TIMEOUT} s") from None
        if proc.returncode != 0:
            raise LLMBuildError(f"dot failed ({proc.returncode}): {proc.stderr.strip()}")

    _write_whole(Path(out_path), render)
    return True


def _write_whole(out_path: Path, write) -> None:
    """`write(tmp)` fills a temporary file beside `out_path`, which then replaces it, readable by
    all (0644) like any file a command writes for people and tools to open."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=out_path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def graph_text(ws: Workspace, targets: list[Target], fmt: str) -> str:
    """DOT or Mermaid ("png" gives the DOT it renders), coloured by the last run."""
    return (graph_mermaid if fmt == "mermaid" else graph_dot)(ws, targets, load_outcomes(ws.dist))


#: File name extension of each format, for the default output path dist/graph.<extension>.
EXTENSIONS = {"dot": "dot", "mermaid": "mmd", "png": "png"}


def default_graph_path(ws: Workspace, fmt: str) -> Path:
    return ws.dist / f"graph.{EXTENSIONS[fmt]}"


def write_graph(ws: Workspace, targets: list[Target], fmt: str, out: Path) -> None:
    text = graph_text(ws, targets, fmt)
    if fmt != "png":
        _write_whole(out, lambda tmp: Path(tmp).write_text(text))
    elif not render_png(text, out):
        raise LLMBuildError("a PNG needs Graphviz's `dot` (Debian: apt-get install graphviz); "
                            "--format dot or mermaid work without it")
