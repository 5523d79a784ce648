import json

import pytest
import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer

from core.errors import ConfigError
from core.model_io import METADATA_FILE, bundled_path, load_mlm, load_tokenizer
from core.vocab.expand import expand_model, wordpiece_split

NEW = ["kalo", "##lom", "cytokine", "##kine"]


def test_wordpiece_split_is_greedy_longest_match():
    vocab = {"l": 0, "##ym": 1, "##phoma": 2, "##p": 3, "##h": 4, "[UNK]": 5, "##ho": 6, "ph": 7, "##oma": 8}
    assert wordpiece_split("lymphoma", vocab, "[UNK]") == ["l", "##ym", "##phoma"]
    assert wordpiece_split("##phoma", vocab, "[UNK]") == ["##phoma"]
    assert wordpiece_split("phoma", vocab, "[UNK]") == ["ph", "##oma"]
    assert wordpiece_split("xyz", vocab, "[UNK]") == ["[UNK]"]


def test_expanded_model_keeps_base_ids_and_vectors_and_averages_new_rows(tiny_bert, tmp_path):
    out = tmp_path / "expanded"
    result = expand_model(tiny_bert, NEW, out, metadata={"analysis_id": 7})
    base_tok, base_model = load_tokenizer(tiny_bert), load_mlm(tiny_bert)[0]
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForMaskedLM.from_pretrained(out)
    base_size = len(base_tok)
    assert result.vocab_size == len(tokenizer) == base_size + len(NEW)
    assert model.get_input_embeddings().weight.shape[0] == base_size + len(NEW)
    # base tokens keep their ids and vectors (input, output bias)
    assert {t: tokenizer.convert_tokens_to_ids(t) for t in base_tok.get_vocab()} == base_tok.get_vocab()
    old_e, new_e = base_model.get_input_embeddings().weight, model.get_input_embeddings().weight
    assert torch.equal(new_e[:base_size], old_e)
    old_b, new_b = base_model.get_output_embeddings().bias, model.get_output_embeddings().bias
    assert torch.equal(new_b[:base_size], old_b)
    # a new token is one piece now, with the mean of the base pieces' rows
    assert tokenizer.tokenize("Cytokine kalolom") == ["cytokine", "kalo", "##lom"]
    for token in ["kalo", "cytokine"]:  # the base tokenizer itself is the oracle for whole words
        new_id = tokenizer.convert_tokens_to_ids(token)
        ids = base_tok.convert_tokens_to_ids(base_tok.tokenize(token))
        assert len(ids) > 1
        assert torch.allclose(new_e[new_id], old_e[ids].mean(0), atol=1e-6)
        assert torch.allclose(new_b[new_id], old_b[ids].mean(), atol=1e-6)
    assert json.loads((out / METADATA_FILE).read_text())["analysis_id"] == 7
    assert not result.mlm_head_fresh
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_continuation_token_is_averaged_from_continuation_pieces(tiny_bert, tmp_path):
    base_tok, base_model = load_tokenizer(tiny_bert), load_mlm(tiny_bert)[0]
    expand_model(tiny_bert, ["##xyq"], tmp_path / "m")
    model = AutoModelForMaskedLM.from_pretrained(tmp_path / "m")
    ids = base_tok.convert_tokens_to_ids(["##x", "##y", "##q"])
    row = model.get_input_embeddings().weight[len(base_tok)]
    assert torch.allclose(row, base_model.get_input_embeddings().weight[ids].mean(0), atol=1e-6)


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_a_token_whose_pieces_repeat_gets_their_mean_counting_each_repeat(tmp_path, tied):
    # "abab" splits into a, ##b, ##a, ##b: ##b twice. The mean counts it twice (1/4 each); advanced-index
    # `+=` kept one of the two writes, so the row was (a + ##a + ##b) / 4.
    from conftest import build_tiny_bert

    base = build_tiny_bert(tmp_path / "base", tied=tied)
    base_tok, base_model = load_tokenizer(base), load_mlm(base)[0]
    pieces = base_tok.tokenize("abab")
    assert pieces == ["a", "##b", "##a", "##b"]
    ids = base_tok.convert_tokens_to_ids(pieces)
    expand_model(base, ["abab"], tmp_path / "m")
    model = AutoModelForMaskedLM.from_pretrained(tmp_path / "m")
    row = len(base_tok)
    want = {
        "input embeddings": (model.get_input_embeddings().weight, base_model.get_input_embeddings().weight),
        "output embeddings": (model.get_output_embeddings().weight, base_model.get_output_embeddings().weight),
        "decoder bias": (model.get_output_embeddings().bias, base_model.get_output_embeddings().bias),
        "head bias": (model.cls.predictions.bias, base_model.cls.predictions.bias),
    }
    for name, (new, old) in want.items():
        assert torch.allclose(new[row], old[ids].mean(0), atol=1e-6), name


def test_bundled_model_without_mlm_head_says_its_head_is_fresh(tmp_path):
    result = expand_model(bundled_path(), ["lymphoma", "cytokines"], tmp_path / "m")
    assert result.mlm_head_fresh
    assert json.loads((tmp_path / "m" / METADATA_FILE).read_text())["mlm_head_trained"] is False
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "m")
    assert tokenizer.tokenize("Lymphoma") == ["lymphoma"]
    assert tokenizer.convert_tokens_to_ids("lymphoma") == 30522


def test_existing_output_and_duplicate_tokens_are_refused(tiny_bert, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="already exists"):
        expand_model(tiny_bert, NEW, out)
    assert (out / "keep.txt").read_text() == "mine"
    with pytest.raises(ConfigError, match="duplicates"):
        expand_model(tiny_bert, ["kalo", "kalo"], tmp_path / "dup")
    with pytest.raises(ConfigError, match="already in the base vocabulary"):
        expand_model(tiny_bert, ["the"], tmp_path / "again")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["taken", tiny_bert.name])


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_expansion_keeps_every_trained_weight_of_the_source(tmp_path, tied):
    from conftest import build_tiny_bert
    from transformers import AutoModelForSequenceClassification, BertForPreTraining

    base = build_tiny_bert(tmp_path / "base", pooler=True, tied=tied)
    source = BertForPreTraining.from_pretrained(base).eval()
    expand_model(base, NEW, tmp_path / "m")
    size = source.config.vocab_size
    model = AutoModelForMaskedLM.from_pretrained(tmp_path / "m").eval()
    assert model.config.tie_word_embeddings is tied
    want_bias = source.cls.predictions.decoder.bias
    assert want_bias.abs().sum() > 0
    assert torch.equal(model.cls.predictions.decoder.bias[:size], want_bias)  # untied: was all zeros on reload
    assert torch.equal(model.get_output_embeddings().weight[:size], source.get_output_embeddings().weight)
    probe = torch.randint(0, size, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(model(input_ids=probe).logits[..., :size],
                              source(input_ids=probe).prediction_logits, atol=1e-5)
    classifier = AutoModelForSequenceClassification.from_pretrained(tmp_path / "m", num_labels=2)
    for name, tensor in source.bert.pooler.state_dict().items():
        assert torch.equal(classifier.bert.pooler.state_dict()[name], tensor)


def test_a_weight_lost_on_the_way_to_disk_fails_the_expansion(tmp_path, monkeypatch):
    from conftest import build_tiny_bert

    from core.errors import ModelError
    from core.vocab import expand

    base = build_tiny_bert(tmp_path / "base", tied=False)
    monkeypatch.setattr(expand, "untie_head_bias", lambda model: None)  # transformers' own behaviour
    with pytest.raises(ModelError, match="decoder.bias"):
        expand_model(base, NEW, tmp_path / "m")
    assert not (tmp_path / "m").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_a_new_mlm_head_is_seeded(tmp_path):
    from conftest import build_tiny_bert

    base = build_tiny_bert(tmp_path / "base", mlm_head=False)
    heads = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        expand_model(base, NEW, tmp_path / name, seed=seed)
        heads[name] = (tmp_path / name / "model.safetensors").read_bytes()
    assert heads["a"] == heads["b"] != heads["c"]


@pytest.mark.tried('an input model folder carries auto_map, custom_pipelines, trust_remote_code (nested too)')
def test_remote_code_hints_of_an_input_never_reach_an_output(tiny_bert, tmp_path):
    from core.configs import AdaptConfig, TrainConfig
    from core.train.adapt import adapt

    for name in ("config.json", "tokenizer_config.json"):
        file = tiny_bert / name
        data = json.loads(file.read_text())
        data.update({"auto_map": {"AutoModel": "evil.Model"}, "trust_remote_code": True,  # a hostile input
                     "custom_pipelines": {"evil": {"impl": "evil.Pipeline"}},
                     "task_specific_params": {"evil": {"auto_map": {"AutoModel": "evil.Model"}}}})
        file.write_text(json.dumps(data))
    expand_model(tiny_bert, NEW, tmp_path / "expanded")
    lines = [" ".join(["kalolom cytokine the of and"] * 8)] * 60
    adapt(tmp_path / "expanded", lambda: iter(lines), tmp_path / "adapted",
          AdaptConfig(seq_len=16, train=TrainConfig(steps=2, batch_size=4, eval_every=100)))
    for folder in ("expanded", "adapted"):
        for name in ("config.json", "tokenizer_config.json"):
            text = (tmp_path / folder / name).read_text()
            assert not any(key in text for key in ("auto_map", "trust_remote_code", "custom_pipelines", "evil.")), \
                (folder, name)


def test_written_models_are_readable_by_the_group_as_the_umask_allows(tiny_bert, tmp_path):
    """transformers writes model.safetensors 0600; a worker of the group on another machine must read it."""
    import os

    from core.configs import AdaptConfig, TrainConfig
    from core.train.adapt import adapt

    previous = os.umask(0o027)  # group may read, others nothing
    try:
        expand_model(tiny_bert, NEW, tmp_path / "expanded")
        lines = [" ".join(["kalolom cytokine the of and"] * 8)] * 60
        adapt(tmp_path / "expanded", lambda: iter(lines), tmp_path / "adapted",
              AdaptConfig(seq_len=16, train=TrainConfig(steps=2, batch_size=4, eval_every=100)))
    finally:
        os.umask(previous)
    for folder in ("expanded", "adapted"):
        modes = {f.name: f.stat().st_mode & 0o777 for f in (tmp_path / folder).iterdir() if f.is_file()}
        assert modes["model.safetensors"] == 0o640, (folder, modes)
        assert all(mode & 0o040 for mode in modes.values()), (folder, modes)
