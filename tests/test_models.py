import json

import pytest

from core.errors import ModelError
from core.model_io import BUNDLED
from worker.specs import ModelSpec


def test_bundled_is_the_real_minilm_bert():
    info = ModelSpec.parse(BUNDLED).inspect()
    assert (info.model_type, info.vocab_size, info.hidden_size, info.lowercase) == ("bert", 30522, 384, True)
    assert (ModelSpec.parse(BUNDLED).path() / "model.safetensors").is_file()


def test_local_folder(tiny_bert):
    info = ModelSpec.parse(str(tiny_bert)).inspect()
    assert info.path == tiny_bert.resolve()
    assert info.hidden_size == 32


def test_not_a_bert_folder_is_refused(tiny_bert):
    config = json.loads((tiny_bert / "config.json").read_text())
    config["model_type"] = "gpt2"
    (tiny_bert / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="'gpt2' model; adapt-distill needs a BERT-family model"):
        ModelSpec.parse(str(tiny_bert)).inspect()


def test_pickled_weights_are_never_loaded(tiny_bert):
    (tiny_bert / "model.safetensors").rename(tiny_bert / "pytorch_model.bin")
    with pytest.raises(ModelError, match="no .safetensors weights"):
        ModelSpec.parse(str(tiny_bert)).inspect()


def test_missing_things_have_clear_errors(tmp_path):
    with pytest.raises(ModelError, match="no such model folder"):
        ModelSpec.parse(str(tmp_path / "nope")).path()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="has no config.json"):
        ModelSpec.parse(str(tmp_path / "empty")).inspect()
    (tmp_path / "file.bin").write_bytes(b"x")
    with pytest.raises(ModelError, match="is a file"):
        ModelSpec.parse(str(tmp_path / "file.bin")).path()


def test_hub_id_offline_fails_fast_and_says_what_to_do(monkeypatch):
    monkeypatch.setenv("ADAPT_DISTILL_ALLOW_HUB", "1")  # off by default: see test_model_roots.py
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="could not be fetched from the model hub .*'bundled'"):
        ModelSpec.parse("some-org/some-bert").path()
