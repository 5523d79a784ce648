"""Which model folders the dashboard may read (the data folder, the bundled model and
ADAPT_DISTILL_MODEL_DIRS, symlinks resolved), while the command line reads any; and hub ids,
fetched only when ADAPT_DISTILL_ALLOW_HUB=1."""

from __future__ import annotations

import re

import pytest
from conftest import build_tiny_bert, write_corpus
from test_app import open_page

from app.data import train as train_data
from core.errors import ModelError
from core.model_io import BUNDLED, bundled_path, check_model_root
from db import store
from worker import corpora
from worker.specs import ModelSpec
from db.models import Run, VocabAnalysis

OUTSIDE = "is outside the folders the dashboard may read (data folder"
REFUSED = re.escape(OUTSIDE)


def test_folders_under_the_roots_pass_and_others_are_refused(tmp_path):
    home, extra, elsewhere = tmp_path / "home", tmp_path / "shared-models", tmp_path / "elsewhere"
    for folder in (home / "models" / "a", extra / "b", elsewhere / "c"):
        folder.mkdir(parents=True)
    check_model_root(str(home / "models" / "a"), home)
    check_model_root(str(extra / "b"), home, [extra])
    check_model_root(str(bundled_path()), home)
    for spec in (BUNDLED, "run:3", "bert-base-uncased", "some-org/some-bert"):
        ModelSpec.parse(spec).check_root(home)  # no folder of the user's: nothing to refuse here
    with pytest.raises(ModelError, match=REFUSED):
        ModelSpec.parse(str(elsewhere / "c")).check_root(home, [extra])  # a folder spec is checked

    expected = f"'{elsewhere / 'c'}' {OUTSIDE} {home} and ADAPT_DISTILL_MODEL_DIRS): "
    with pytest.raises(ModelError, match="^" + re.escape(expected)):
        check_model_root(str(elsewhere / "c"), home, [extra])
    with pytest.raises(ModelError, match=REFUSED):
        check_model_root(str(extra / "b"), home)  # not listed this time
    with pytest.raises(ModelError, match=REFUSED):
        check_model_root(str(home / "models" / ".." / ".." / "elsewhere" / "c"), home)
    with pytest.raises(ModelError, match=REFUSED):
        check_model_root(str(elsewhere / "not-even-there"), home)  # whether it exists is not told


@pytest.mark.tried('a symlink in the data folder points outside it')
def test_a_symlink_out_of_the_data_folder_is_refused(tmp_path):
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    (home / "models").mkdir(parents=True)
    elsewhere.mkdir()
    (home / "models" / "escape").symlink_to(elsewhere, target_is_directory=True)
    (elsewhere / "in").symlink_to(home / "models", target_is_directory=True)
    with pytest.raises(ModelError, match=re.escape(f"'{home / 'models' / 'escape'}' (really {elsewhere}) {OUTSIDE}")):
        check_model_root(str(home / "models" / "escape"), home)
    check_model_root(str(elsewhere / "in"), home)  # a link into the data folder leads inside


@pytest.mark.tried('a dashboard user types a server folder outside the allowed roots as a model')
def test_the_dashboard_refuses_a_folder_outside_and_reads_one_inside(sessions, home, tmp_path, monkeypatch):
    outside = build_tiny_bert(tmp_path / "outside-model")
    inside = build_tiny_bert(home / "models" / "inside")
    with pytest.raises(ModelError, match=REFUSED):
        train_data.model_shape(sessions, str(outside))
    assert train_data.model_shape(sessions, str(inside))["layers"] == 2

    monkeypatch.setenv("ADAPT_DISTILL_MODEL_DIRS", f"{tmp_path / 'nothing-here'}:{outside}")
    assert train_data.model_shape(sessions, str(outside))["layers"] == 2

    assert ModelSpec.parse(str(outside)).inspect().vocab_size > 0, "the command line reads any folder"


def test_the_vocabulary_page_refuses_an_outside_base_and_queues_an_inside_one(sessions, home, redis, tmp_path):
    corpus, _ = corpora.add_corpus(sessions, write_corpus(tmp_path / "notes.txt"))
    outside = build_tiny_bert(tmp_path / "outside-model")
    inside = build_tiny_bert(home / "models" / "inside")
    (home / "models" / "link").symlink_to(outside, target_is_directory=True)
    at = open_page("vocabulary")
    at.number_input(key="vocab_step").set_value(10)
    at.number_input(key="vocab_max").set_value(20)
    for spec in (outside, home / "models" / "link"):
        at.text_input(key="vocab_base").input(str(spec))
        at.button[0].click().run()
        assert not at.exception and len(at.error) == 1 and OUTSIDE in at.error[0].value
    with sessions.begin() as session:
        assert store.rows(session, VocabAnalysis) == []

    at.text_input(key="vocab_base").input(str(inside))
    at.button[0].click().run()
    assert not at.exception and not at.error
    with sessions.begin() as session:
        (analysis,) = store.rows(session, VocabAnalysis, corpus_id=corpus.id)
        assert analysis.base_model == str(inside)


def test_the_train_page_estimate_and_launch_refuse_an_outside_teacher(sessions, home, redis, tmp_path):
    corpora.add_corpus(sessions, write_corpus(tmp_path / "notes.txt"))
    outside = build_tiny_bert(tmp_path / "outside-model")
    at = open_page("train")
    at.selectbox(key="train_mode").set_value("adaptation").run()
    at.selectbox(key="train_teacher").set_value("other").run()
    at.text_input(key="train_teacher_other").input(str(outside)).run()
    assert any(OUTSIDE in c for c in (c.value for c in at.caption))
    at.button(key="train_launch").click().run()
    assert not at.exception and len(at.error) == 1 and OUTSIDE in at.error[0].value
    with sessions.begin() as session:
        assert store.rows(session, Run, limit=100) == []


@pytest.mark.tried('a hub id is given while fetching from the hub is off')
def test_hub_ids_are_not_fetched_unless_allowed(sessions, monkeypatch):
    monkeypatch.delenv("ADAPT_DISTILL_ALLOW_HUB", raising=False)
    for attempt in (lambda: ModelSpec.parse("some-org/some-bert").path(), lambda: train_data.model_shape(sessions, "bert-base-x")):
        with pytest.raises(ModelError, match=r"is not a local folder, and fetching models from the hub is off: pass a "
                                             r"local model folder \(or 'bundled'\), or set ADAPT_DISTILL_ALLOW_HUB=1"):
            attempt()

    monkeypatch.setenv("ADAPT_DISTILL_ALLOW_HUB", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # allowed, so it is tried: offline here, it fails saying so
    with pytest.raises(ModelError, match="could not be fetched from the model hub"):
        ModelSpec.parse("some-org/some-bert").path()
    assert train_data.model_shape(sessions, "some-org/not-downloaded") is None, "allowed: its size is known once fetched"
