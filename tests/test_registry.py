"""One place per fact: the registry of run kinds is the only table of kinds, a model spec is read
by ModelSpec only, and every default the command line prints comes from core.configs."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from core.errors import ConfigError
from db.models import RunKind
from worker import kinds
from worker.queueing.queues import JOB_FUNCTIONS, RUN_JOB
from worker.specs import ModelSpec

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [p for d in ("app", "worker", "core", "db") for p in (ROOT / d).rglob("*.py") if "migrations" not in p.parts]


def test_every_kind_of_run_is_in_the_registry_and_its_functions_load():
    assert set(kinds.KINDS) == set(RunKind)
    for kind, spec in kinds.KINDS.items():
        if spec.executor is None:
            assert kind in kinds.PARENTS and spec.queue is None
            with pytest.raises(ConfigError, match="its steps are runs of their own"):
                kinds.executor(kind)
            continue
        assert callable(kinds.executor(kind)) and spec.queue in kinds.QUEUES and spec.timeout_s > 0
        if spec.cost:
            assert callable(kinds.resolve(spec.cost))
    assert set(kinds.MODEL_KINDS) == {RunKind.expansion, RunKind.adaptation, RunKind.distillation}
    assert RUN_JOB in JOB_FUNCTIONS


def table_of_kinds(tree: ast.AST) -> list[int]:
    """Lines of dict literals keyed by, or tuples/lists/sets of, three or more RunKind members: tables
    that say something per kind of run. (A page's wording for its two training stages, adaptation
    and distillation, is not one.)"""
    def kind_members(nodes) -> int:
        return sum(isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "RunKind"
                   for n in nodes)

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict) and kind_members([k for k in node.keys if k is not None]) >= 3:
            found.append(node.lineno)
        elif isinstance(node, (ast.Tuple, ast.List, ast.Set)) and kind_members(node.elts) >= 3:
            found.append(node.lineno)
    return found


def test_no_other_table_of_kinds():
    tables = {str(p.relative_to(ROOT)): lines for p in SOURCES if p.name != "kinds.py" or p.parent.name != "worker"
              if (lines := table_of_kinds(ast.parse(p.read_text())))}
    assert tables == {}


def test_the_checker_sees_a_table_of_kinds():
    assert table_of_kinds(ast.parse("X = {RunKind.a: 1, RunKind.b: 2, RunKind.c: 3}\nY = (RunKind.a, RunKind.b, RunKind.c)\n"
                                    "Z = {RunKind.a: 1, RunKind.b: 2}")) == [1, 2]


def reads_a_run_spec(tree: ast.AST) -> list[int]:
    """Lines that take a spec's text apart by its 'run:' prefix: .startswith(RUN_PREFIX or "run:"),
    or slicing by its length."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "startswith":
            for arg in node.args:
                if (isinstance(arg, ast.Name) and arg.id == "RUN_PREFIX") or \
                        (isinstance(arg, ast.Constant) and arg.value == "run:"):
                    found.append(node.lineno)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "len" and node.args \
                and isinstance(node.args[0], ast.Name) and node.args[0].id == "RUN_PREFIX":
            found.append(node.lineno)
    return found


def test_only_model_spec_reads_a_spec():
    readers = {str(p.relative_to(ROOT)): lines for p in SOURCES
               if (lines := reads_a_run_spec(ast.parse(p.read_text())))}
    assert set(readers) <= {"worker/specs.py"}


@pytest.mark.parametrize("text, kind, run_id", [("bundled", "bundled", None), (" run:7 ", "run", 7),
                                                 ("./models/x", "folder", None), ("/abs/x", "folder", None),
                                                 ("~/x", "folder", None), ("org/name", "hub", None)])
def test_a_spec_is_parsed_once_into_its_kind(text, kind, run_id):
    spec = ModelSpec.parse(text)
    assert (spec.kind, spec.run_id, spec.text) == (kind, run_id, text.strip())


@pytest.mark.parametrize("text, message", [("", "no model given"), ("  ", "no model given"),
                                           ("run:x", "write run:ID with a run id")])
def test_a_bad_spec_gets_one_clear_error(text, message):
    with pytest.raises(ConfigError, match=message):
        ModelSpec.parse(text)


def test_a_folder_spec_is_keyed_by_its_absolute_path(tmp_path, monkeypatch):
    folder = tmp_path / "m"
    folder.mkdir()
    monkeypatch.chdir(tmp_path)
    assert ModelSpec.parse("./m").key == str(folder.resolve())
    assert ModelSpec.parse("bundled").key == "bundled"


def cli_options() -> dict[tuple[str, str], object]:
    """(command, option dest) -> the argparse action, for every command and subcommand."""
    import argparse

    from app.cli.parser import build_parser

    found = {}

    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, path + (name,))
            elif action.option_strings:
                found[(" ".join(path), action.dest)] = action

    walk(build_parser(), ())
    return found


def test_the_command_lines_defaults_are_the_configs():
    import dataclasses
    import re

    from core.configs import TrainConfig, VocabConfig
    from core.judge.settings import BENCH_DEFAULTS, TASK_FILE_DEFAULTS, FinetuneConfig
    from core.model_io import BUNDLED

    options = cli_options()
    vocab = dataclasses.asdict(VocabConfig())
    expected = {("vocab analyze", k): v for k, v in vocab.items()}
    expected |= {("bench", k): BENCH_DEFAULTS[k] for k in ("device", "seq_len", "batch_size")}
    expected[("bench", "repeats")] = BENCH_DEFAULTS["latency_repeats"]
    expected |= {("task add", k): v for k, v in TASK_FILE_DEFAULTS.items() if ("task add", k) in options}
    expected |= {(command, "teacher"): BUNDLED for command in ("adapt", "distill", "pipeline", "experiment")}
    assert {key: options[key].default for key in expected} == expected

    def shown_default(command: str, dest: str) -> str:
        return re.search(r"\(default ([^)\s,;]+)", options[(command, dest)].help)[1]

    train, finetune = TrainConfig(), FinetuneConfig()
    for command in ("adapt", "distill"):
        assert shown_default(command, "steps") == str(train.steps)
        assert shown_default(command, "batch_size") == str(train.batch_size)
    assert shown_default("evaluate", "seeds") == str(finetune.seeds)
    assert shown_default("evaluate", "epochs") == str(finetune.epochs)
