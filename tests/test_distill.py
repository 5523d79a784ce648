import pytest
import torch
from conftest import build_tiny_bert, write_corpus
from transformers import AutoModelForMaskedLM

from core.configs import DistillConfig, StudentShape, TrainConfig, default_student
from core.errors import ConfigError
from core.model_io import load_mlm
from core.train.distill import build_student, capture_qkv, distill, relation_heads_for
from core.train.losses import relation_kl


@pytest.fixture
def teacher(tmp_path):
    return build_tiny_bert(tmp_path / "teacher", words=["ka", "##lo", "##ma", "the", "of", "and"])


@pytest.fixture
def documents(tmp_path):
    lines = write_corpus(tmp_path / "corpus.txt", documents=300, vocabulary=60).read_text().splitlines()
    return lambda: iter(lines)


def test_student_shapes_are_validated():
    assert StudentShape.parse("L4-H312") == StudentShape(4, 312, 12, 1248)
    assert StudentShape.parse("L3-H256", layers=2).layers == 2
    with pytest.raises(ConfigError, match="not divisible"):
        StudentShape.parse("L3-H256", hidden=100, heads=12)
    with pytest.raises(ConfigError, match="needs a preset, the teacher's shape or all of"):
        StudentShape.parse(layers=2)
    with pytest.raises(ConfigError, match="unknown student preset"):
        StudentShape.parse("L9-H999")
    config = DistillConfig(student=StudentShape.parse("L3-H256"), relation_heads=12)
    with pytest.raises(ConfigError, match="must divide both"):
        relation_heads_for(config, 768)
    assert relation_heads_for(DistillConfig(student=StudentShape.parse("L3-H256")), 768) == 16


def test_the_default_student_is_half_the_teacher():
    assert default_student(6, 384, 12, 1536) == StudentShape(3, 192, 6, 768)  # the bundled all-MiniLM-L6-v2
    assert default_student(12, 768, 12, 3072) == StudentShape(6, 384, 6, 1536)  # BERT-base -> the paper's student
    assert default_student(2, 32, 2, 64) == StudentShape(1, 16, 1, 32)
    assert default_student(6, 384, 12, 1536).name == "L3-H192"


def test_a_student_not_smaller_than_its_teacher_is_refused_unless_allowed(teacher, documents, tmp_path):
    same = DistillConfig(student=StudentShape(2, 32, 2, 64), seq_len=32, train=TrainConfig(steps=1, batch_size=4))
    with pytest.raises(ConfigError, match="not fewer than the teacher's .*--allow-larger-student"):
        distill(teacher, documents, tmp_path / "same", same)
    assert not (tmp_path / "same" / "model.safetensors").exists()
    same.allow_larger_student = True
    assert distill(teacher, documents, tmp_path / "same", same).student_parameters > 0


def test_without_a_shape_the_student_is_derived_from_the_teacher(teacher, documents, tmp_path):
    config = DistillConfig(seq_len=32, train=TrainConfig(steps=2, batch_size=4))
    distill(teacher, documents, tmp_path / "derived", config)
    student = AutoModelForMaskedLM.from_pretrained(tmp_path / "derived").config
    assert (student.num_hidden_layers, student.hidden_size, student.num_attention_heads,
            student.intermediate_size) == (1, 16, 1, 32)


def test_student_from_every_kth_teacher_layer(teacher):
    model, _ = load_mlm(teacher)  # 2 layers, 32 hidden, 2 heads
    student = build_student(model, StudentShape(1, 32, 2, 64), "teacher")
    assert torch.equal(student.bert.encoder.layer[0].attention.self.query.weight,
                       model.bert.encoder.layer[1].attention.self.query.weight)
    assert torch.equal(student.bert.embeddings.word_embeddings.weight, model.bert.embeddings.word_embeddings.weight)
    with pytest.raises(ConfigError, match="needs the teacher's width"):
        build_student(model, StudentShape(1, 16, 2, 64), "teacher")


def student_relations_distance(teacher_dir, student_dir, ids):
    teacher, student = AutoModelForMaskedLM.from_pretrained(teacher_dir), AutoModelForMaskedLM.from_pretrained(student_dir)
    with torch.no_grad(), capture_qkv(teacher.bert.encoder.layer[-1]) as t, \
            capture_qkv(student.bert.encoder.layer[-1]) as s:
        teacher.bert(input_ids=ids)
        student.bert(input_ids=ids)
    return float(relation_kl(s[0], t[0], torch.ones(ids.shape), 2))


def test_distillation_lowers_the_relation_loss_and_the_student_loads(teacher, documents, tmp_path):
    config = DistillConfig(student=StudentShape(2, 16, 2, 32), seq_len=32,
                           train=TrainConfig(steps=80, batch_size=16, lr=3e-3, warmup=0.1, eval_every=40))
    result = distill(teacher, documents, tmp_path / "student", config)
    assert result.heldout_relation_loss < 0.7 * result.heldout_relation_loss_before
    assert result.student_parameters < result.teacher_parameters
    student = AutoModelForMaskedLM.from_pretrained(tmp_path / "student")
    assert student.config.hidden_size == 16 and student.config.vocab_size == load_mlm(teacher)[0].config.vocab_size
    # relations move toward the teacher's, against a fresh student of the same seed
    fresh = build_student(load_mlm(teacher)[0], StudentShape(2, 16, 2, 32), "random")
    fresh.save_pretrained(tmp_path / "fresh")
    ids = torch.randint(5, fresh.config.vocab_size, (4, 24), generator=torch.Generator().manual_seed(0))
    assert student_relations_distance(teacher, tmp_path / "student", ids) < \
        student_relations_distance(teacher, tmp_path / "fresh", ids)


def test_v1_and_mlm_term(teacher, documents, tmp_path):
    config = DistillConfig(student=StudentShape(1, 16, 2, 32), version="v1", mlm_weight=0.5, seq_len=32,
                           train=TrainConfig(steps=6, batch_size=8, eval_every=100))
    result = distill(teacher, documents, tmp_path / "s", config)
    assert result.mlm_head_trained and result.steps == 6


def test_stopping_after_the_projections_captures_the_same_tensors(teacher):
    from core.train.distill import forward_until_captured

    model, _ = load_mlm(teacher)
    model.eval()
    ids = torch.randint(5, model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), capture_qkv(model.bert.encoder.layer[-1]) as full:
        model.bert(input_ids=ids)
    with torch.no_grad(), capture_qkv(model.bert.encoder.layer[-1], stop=True) as early:
        forward_until_captured(model.bert, ids)
    assert len(early) == 3 and all(torch.equal(a, b) for a, b in zip(full, early))


def test_teacher_layers_are_evenly_spaced_and_end_at_the_last():
    from core.train.distill import teacher_layers_for

    assert teacher_layers_for(12, 6) == [1, 3, 5, 7, 9, 11]
    assert teacher_layers_for(6, 4) == [1, 2, 4, 5]
    assert teacher_layers_for(6, 3) == [1, 3, 5]
    assert teacher_layers_for(12, 4) == [2, 5, 8, 11]
    assert teacher_layers_for(4, 4) == [0, 1, 2, 3] and teacher_layers_for(5, 1) == [4]
    with pytest.raises(ConfigError, match="init 'teacher' needs 1 to 2"):
        teacher_layers_for(2, 3)


def test_init_teacher_keeps_the_teachers_pooler(tmp_path):
    teacher = build_tiny_bert(tmp_path / "t", pooler=True)
    model, _ = load_mlm(teacher)
    student = build_student(model, StudentShape(1, 32, 2, 64), "teacher")
    assert torch.equal(student.bert.pooler.dense.bias, model.bert.pooler.dense.bias)
    assert model.bert.pooler.dense.bias.abs().sum() > 0


def test_the_same_seed_gives_the_same_student_and_a_resume_matches(teacher, documents, tmp_path):
    from core.errors import Cancelled

    def config(seed=0):
        return DistillConfig(student=StudentShape(1, 16, 2, 32), seq_len=32,
                             train=TrainConfig(steps=12, batch_size=8, lr=3e-3, seed=seed, eval_every=100,
                                               checkpoint_every=4))

    def weights(name):
        return (tmp_path / name / "model.safetensors").read_bytes()

    straight = distill(teacher, documents, tmp_path / "a", config())
    again = distill(teacher, documents, tmp_path / "b", config())
    distill(teacher, documents, tmp_path / "c", config(seed=1))
    assert weights("a") == weights("b") != weights("c")
    assert straight.last_loss == again.last_loss
    step = {"n": 0}

    def progress(stage, fraction):
        step["n"] = round(fraction * 12) if stage == "training" else step["n"]

    with pytest.raises(Cancelled, match="cancelled at step 6"):
        distill(teacher, documents, tmp_path / "r", config(), progress=progress, cancel=lambda: step["n"] >= 6)
    resumed = distill(teacher, documents, tmp_path / "r", config())
    assert resumed.resumed_from == 6 and weights("r") == weights("a")
    # what only the first part of the run saw survives the resume
    assert resumed.first_loss == straight.first_loss is not None
    assert resumed.heldout_relation_loss_before == straight.heldout_relation_loss_before is not None
    assert resumed.heldout_relation_loss == straight.heldout_relation_loss


def test_a_student_with_another_vocabulary_of_the_same_size_is_refused(teacher, documents, tmp_path):
    other = build_tiny_bert(tmp_path / "other", words=["ka", "##lo", "##ma", "the", "of", "but"])  # 'and' -> 'but'
    config = DistillConfig(init=str(other), seq_len=32, allow_larger_student=True,
                           train=TrainConfig(steps=1, batch_size=4))
    with pytest.raises(ConfigError, match="does not have the teacher's vocabulary .*'but'"):
        distill(teacher, documents, tmp_path / "s", config)
