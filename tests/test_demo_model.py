"""The bundled demo: models/tiny-llama is trained to answer the seed's question in English, its
regenerate script is deterministic, and the bundled BUILD.toml's smoke checks the exact answer
through a real Triton on the CPU lane."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import MAKE_TINY, REPO, TINY_HF, Workspace

torch = pytest.importorskip("torch")

SEED_QUESTION = "What is machine learning?"
ANSWER = "Machine learning is the study of computer programs that learn from data."


def _make_tiny():
    sys.path.insert(0, str(MAKE_TINY.parent))
    try:
        import make_tiny_llama
    finally:
        sys.path.pop(0)
    return make_tiny_llama


def _greedy(hf: Path, question: str) -> str:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(hf))
    model = AutoModelForCausalLM.from_pretrained(str(hf), dtype=torch.float32).eval()
    ids = tokenizer(question, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=80, do_sample=False, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def test_the_committed_model_answers_every_question_it_was_trained_on():
    questions = _make_tiny().QUESTIONS
    assert questions[SEED_QUESTION] == ANSWER
    for question, answer in questions.items():
        assert _greedy(TINY_HF, question) == " " + answer


def test_the_committed_model_stays_small():
    assert sum(f.stat().st_size for f in TINY_HF.iterdir()) < 1_000_000


def test_regenerating_is_deterministic_and_gives_the_same_answers(tmp_path):
    """Two runs of the regenerate script (at once: each trains on one thread) give byte-identical
    directories holding the committed model's files, and the model answers as the committed one."""
    outs = [tmp_path / "a", tmp_path / "b"]
    runs = [subprocess.Popen([sys.executable, str(MAKE_TINY), "--out", str(out)], stderr=subprocess.PIPE)
            for out in outs]
    assert [run.wait(timeout=600) for run in runs] == [0, 0], [run.stderr.read() for run in runs]
    files = sorted(p.name for p in outs[0].iterdir())
    assert files == sorted(p.name for p in TINY_HF.iterdir())
    assert [(outs[0] / f).read_bytes() for f in files] == [(outs[1] / f).read_bytes() for f in files]
    assert _greedy(outs[0], SEED_QUESTION) == " " + ANSWER


def test_an_undertrained_model_is_refused(tmp_path):
    run = subprocess.run([sys.executable, str(MAKE_TINY), "--out", str(tmp_path / "x"), "--steps", "3"],
                         capture_output=True, text=True)
    assert run.returncode != 0
    assert f"training did not stick: asked {SEED_QUESTION!r}" in run.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_the_bundled_smoke_checks_the_exact_answer(tmp_path):
    """The README's first block: the bundled BUILD.toml builds and its smoke gets the English answer
    from a real Triton; a wrong expectation fails the smoke."""
    ws = Workspace(tmp_path / "ws", tmp_path / "cache")
    shutil.copytree(REPO / "models" / "tiny-llama", ws.root / "models" / "tiny-llama",
                    ignore=shutil.ignore_patterns("make_tiny_llama.py", "__pycache__"))
    run = ws.doit()
    assert run.built() == {f"models/tiny-llama:{n}" for n in ("checkpoint", "engine", "repository", "smoke")}
    report = json.loads((ws.root / "dist/models/tiny-llama/smoke/report.json").read_text())
    assert report["passed"]
    assert [(r["prompt"], r["text"]) for r in report["requests"]] == [(SEED_QUESTION, " " + ANSWER)] * 2
    assert f"-> ' {ANSWER}'" in run.stderr + run.stdout

    build = ws.root / "models/tiny-llama/BUILD.toml"
    build.write_text(build.read_text().replace("from data.", "from books.", 1))
    failed = ws.doit(check=False)
    assert failed.returncode != 0 and failed.outcomes["models/tiny-llama:smoke"] == "failed"
    assert f"expected ' {ANSWER.replace('data.', 'books.')}'" in failed.stdout + failed.stderr
