import csv
import gzip
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from core.errors import TaskError
from core.judge.task_files import Example, TaggedSentence, load_files, read_classification, read_conll
from core.judge.tasks import build_task, count_entities, ingest_task, load_task, stratified_split

ROOT = Path(__file__).resolve().parents[1]


def rows(n=30, labels=("pos", "neg", "neu"), pair=False):
    out = []
    for i in range(n):
        row = {"id": i, "text": f"sentence  number {i}\tabout things", "label": labels[i % len(labels)]}
        if pair:
            row["text_pair"] = f"hypothesis {i}"
        out.append(row)
    return out


def write_table(path, records, fmt=None):
    fmt = fmt or Path(str(path).removesuffix(".gz")).suffix[1:]
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8", newline="") as out:
        if fmt == "jsonl":
            out.writelines(json.dumps(r) + "\n" for r in records)
        else:
            writer = csv.DictWriter(out, fieldnames=list(records[0]), delimiter="," if fmt == "csv" else "\t")
            writer.writeheader()
            writer.writerows(records)
    return path


def write_conll(path, sentences):
    path.write_text("\n\n".join("\n".join(f"{tok} {tag}" for tok, tag in s) for s in sentences) + "\n",
                    encoding="utf-8")
    return path


def ner_sentences(n=30):
    people = [[("Peter", "B-PER"), ("Blackburn", "I-PER"), ("spoke", "O")],
              [("EU", "B-ORG"), ("rejects", "O"), ("German", "B-MISC"), ("call", "O")],
              [("In", "O"), ("Paris", "B-LOC"), ("today", "O")]]
    return [people[i % 3] + [(f"w{i}", "O")] for i in range(n)]


# --- reading -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["t.csv", "t.tsv", "t.jsonl", "t.jsonl.gz", "t.csv.gz"])
@pytest.mark.parametrize("pair", [False, True])
def test_read_classification_every_format_with_and_without_pair(tmp_path, name, pair):
    examples, has_pair = read_classification(write_table(tmp_path / name, rows(6, pair=pair)))
    assert has_pair is pair
    assert examples[0] == Example("sentence number 0 about things", "pos", "hypothesis 0" if pair else None)
    assert [e.label for e in examples] == ["pos", "neg", "neu"] * 2


def test_explicit_format_custom_fields_and_numeric_labels(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text('{"body": "a b", "y": 1}\n\n{"body": "c", "y": "1"}\n{"body": "d", "y": 0}\n')
    examples, _ = read_classification(path, format="jsonl", text_field="body", label_field="y")
    assert [e.label for e in examples] == ["1", "1", "0"]  # JSON 1 and "1" are one label


def test_csv_multiline_field_is_one_example_and_errors_name_the_starting_line(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text('text,label\n"first\nsecond",a\n\n"x",\n')
    with pytest.raises(TaskError, match=r"m\.csv: line 5 has an empty label"):
        read_classification(path)
    path.write_text('text,label\n"first\nsecond",a\n\n"x",b\n')
    assert read_classification(path)[0] == [Example("first second", "a"), Example("x", "b")]


def test_read_conll_docstart_extra_columns_tabs_and_blank_lines(tmp_path):
    path = tmp_path / "train.conll"
    path.write_text(
        "-DOCSTART- -X- -X- O\n\n"
        "EU NNP B-NP B-ORG\nrejects   VBZ B-VP O\n\n\n\n"
        "Peter\tNNP\tB-PER\nBlack burn\tI-PER\n\n"
        "-DOCSTART- -X- O\n\nLondon B-LOC\r\n"  # a last sentence without a trailing blank line
    )
    assert read_conll(path) == [
        TaggedSentence(("EU", "rejects"), ("B-ORG", "O")),
        TaggedSentence(("Peter", "Black burn"), ("B-PER", "I-PER")),  # tab lines keep spaces in the token
        TaggedSentence(("London",), ("B-LOC",)),
    ]


def test_read_conll_gz(tmp_path):
    with gzip.open(tmp_path / "t.bio.gz", "wt") as out:
        out.write("a B-X\nb E-X\n\nc S-Y\n")
    assert [s.tags for s in read_conll(tmp_path / "t.bio.gz")] == [("B-X", "E-X"), ("S-Y",)]


# --- validation --------------------------------------------------------------------------------

def test_unknown_type_and_missing_file(tmp_path):
    with pytest.raises(TaskError, match="unknown task type 'sentiment': use classification or ner"):
        load_files("sentiment", tmp_path / "t.csv")
    with pytest.raises(TaskError, match=r"nope\.csv does not exist"):
        load_files("classification", tmp_path / "nope.csv")
    with pytest.raises(TaskError, match=r"nope\.conll does not exist"):
        read_conll(tmp_path / "nope.conll")


@pytest.mark.parametrize("name", ["t.conll", "t.bio", "t.iob", "t.txt"])
def test_conll_name_for_classification(tmp_path, name):
    (tmp_path / name).write_text("a B-X\n")
    with pytest.raises(TaskError, match=rf"{name} is not CSV/TSV/JSONL"):
        read_classification(tmp_path / name)


def test_table_name_for_ner_and_unknown_names(tmp_path):
    write_table(tmp_path / "t.jsonl", rows(3))
    with pytest.raises(TaskError, match=r"t\.jsonl is not CoNLL"):
        read_conll(tmp_path / "t.jsonl")
    (tmp_path / "t.xlsx").write_text("x")
    with pytest.raises(TaskError, match=r"cannot tell the format of t\.xlsx"):
        read_classification(tmp_path / "t.xlsx")
    with pytest.raises(TaskError, match="unknown format 'parquet'"):
        read_classification(tmp_path / "t.xlsx", format="parquet")


@pytest.mark.parametrize("name,kwargs,fragment", [
    ("t.csv", {"text_field": "sentence"}, r"t\.csv: no column 'sentence' \(columns: id, text, label\): pass the text"),
    ("t.tsv", {"label_field": "y"}, r"t\.tsv: no column 'y' \(columns: id, text, label\): pass the label"),
    ("t.jsonl", {"label_field": "y"}, r"t\.jsonl: line 1 has no field 'y' \(it has: id, text, label\)"),
])
def test_missing_text_or_label_names_what_exists(tmp_path, name, kwargs, fragment):
    with pytest.raises(TaskError, match=fragment):
        read_classification(write_table(tmp_path / name, rows(3)), **kwargs)


@pytest.mark.parametrize("content,fragment", [
    ("text,label\na,x\n  ,y\n", r"t\.csv: line 3 has an empty text"),
    ("text,label\na,x\nb, \n", r"t\.csv: line 3 has an empty label"),
    ("text,label\na,x\nb\n", r"t\.csv: line 3 has an empty label"),
])
def test_empty_text_or_label_csv(tmp_path, content, fragment):
    (tmp_path / "t.csv").write_text(content)
    with pytest.raises(TaskError, match=fragment):
        read_classification(tmp_path / "t.csv")


@pytest.mark.parametrize("lines,fragment", [
    (['{"text": "a", "label": "x"}', '{"text": "a", "label": '], r"line 2 is not valid JSON"),
    (['{"text": "a", "label": "x"}', '', '["a", "x"]'], r"line 3 is a list, not a JSON object"),
    (['{"text": "", "label": "x"}'], r"line 1 has an empty text"),
    (['{"text": "a", "label": null}'], r"line 1 has an empty label"),
    (['{"text": 3, "label": "x"}'], r"line 1: the text must be a string"),
    (['{"text": "a", "label": "x", "text_pair": "b"}', '{"text": "a", "label": "x"}'],
     r"line 2 has no 'text_pair' but line 1 does"),
    (['{"text": "a", "label": "x"}', '{"text": "a", "label": "x", "text_pair": "b"}'],
     r"line 2 has a 'text_pair' but line 1 does not"),
])
def test_jsonl_line_errors(tmp_path, lines, fragment):
    (tmp_path / "t.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(TaskError, match=rf"t\.jsonl: {fragment}") as info:
        read_classification(tmp_path / "t.jsonl")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("content,fragment", [
    ("EU B-ORG\nrejects\n", r"t\.conll: line 2 has no tag column \(token and tag per line, separated by whitespace"),
    ("EU\tB-ORG\nrejects\t\n", r"t\.conll: line 2 has no tag column"),
    ("EU B-ORG\n\nrejects X-ORG\n", r"t\.conll: line 3 has the tag 'X-ORG', which is not O"),
    ("EU B-\n", r"line 1 has the tag 'B-'"),
    ("EU PER\n", r"line 1 has the tag 'PER'"),
])
def test_conll_line_errors(tmp_path, content, fragment):
    (tmp_path / "t.conll").write_text(content)
    with pytest.raises(TaskError, match=fragment):
        read_conll(tmp_path / "t.conll")


def test_binary_and_non_utf8_files_are_task_errors(tmp_path):
    (tmp_path / "t.conll").write_bytes(b"a O\n\x00\x01")
    with pytest.raises(TaskError, match="looks binary"):
        read_conll(tmp_path / "t.conll")
    (tmp_path / "t.csv").write_bytes(b"text,label\ncaf\xe9,x\n")
    with pytest.raises(TaskError, match=r"t\.csv: line 2 is not UTF-8"):
        read_classification(tmp_path / "t.csv")


def test_mixed_formats(tmp_path):
    train = write_table(tmp_path / "train.csv", rows())
    write_table(tmp_path / "dev.csv.gz", rows(6))  # gzip is not another format
    assert len(load_files("classification", train, dev=tmp_path / "dev.csv.gz")["dev"]) == 6
    dev = write_table(tmp_path / "dev.jsonl", rows(6))
    with pytest.raises(TaskError, match=r"dev\.jsonl is JSONL but train\.csv is CSV: give every file"):
        load_files("classification", train, dev=dev)
    with pytest.raises(TaskError, match=r"test\.conll is not CSV/TSV/JSONL"):
        load_files("classification", train, test=write_conll(tmp_path / "test.conll", ner_sentences(3)))


def test_conll_sentences_with_different_column_counts_are_fine(tmp_path):
    path = tmp_path / "t.conll"
    path.write_text("a NN B-X\nb O\n\nc NN NP O\n")
    assert [s.tags for s in load_files("ner", path)["train"]] == [("B-X", "O"), ("O",)]


def test_empty_given_splits(tmp_path):
    (tmp_path / "train.csv").write_text("text,label\n")
    with pytest.raises(TaskError, match=r"train\.csv has no examples: add examples"):
        ingest_task("classification", tmp_path / "train.csv", tmp_path / "store")
    write_table(tmp_path / "train.csv", rows())
    (tmp_path / "dev.csv").write_text("")
    with pytest.raises(TaskError, match=r"dev\.csv has no examples: add examples, or leave dev out"):
        ingest_task("classification", tmp_path / "train.csv", tmp_path / "store", dev=tmp_path / "dev.csv")
    (tmp_path / "test.conll").write_text("-DOCSTART- O\n\n")
    with pytest.raises(TaskError, match=r"test\.conll has no examples"):
        ingest_task("ner", write_conll(tmp_path / "train.conll", ner_sentences()), tmp_path / "store",
                    test=tmp_path / "test.conll")


def test_a_split_that_would_be_empty(tmp_path):
    two_each = [Example(f"t{i}", "ab"[i % 2]) for i in range(4)]  # every label has < 3 examples
    with pytest.raises(TaskError, match=r"train is too small to split a test set off it .* give a test file"):
        build_task("classification", {"train": two_each})
    with pytest.raises(TaskError, match=r"too small to split a dev set"):
        build_task("classification", {"train": two_each, "test": two_each[:1]})
    sentences = [TaggedSentence(("a",), ("O",))] * 3  # test takes 1, then 2 are too few for dev
    with pytest.raises(TaskError, match=r"t\.conll is too small to split a dev set"):
        build_task("ner", {"train": sentences}, names={"train": "t.conll"})


def test_unseen_labels_and_tags(tmp_path):
    train = write_table(tmp_path / "train.csv", rows())
    dev = write_table(tmp_path / "dev.csv", rows(3, labels=("pos", "zz", "aa")))
    with pytest.raises(TaskError, match=r"dev\.csv has labels that train lacks: aa, zz: add them to train\.csv"):
        ingest_task("classification", train, tmp_path / "store", dev=dev)
    many = [Example(f"t{i}", f"l{i:02d}") for i in range(8)]
    with pytest.raises(TaskError, match=r"test has labels that train lacks: l00, l01, l02, l03, l04 and 3 more"):
        build_task("classification", {"train": [Example("a", "x"), Example("b", "y")] * 3, "test": many})
    conll_train = write_conll(tmp_path / "train.conll", ner_sentences())
    conll_test = write_conll(tmp_path / "test.conll", [[("Bonn", "B-GPE"), ("x", "I-GPE")]])
    with pytest.raises(TaskError, match=r"test\.conll has tags that train lacks: B-GPE, I-GPE"):
        ingest_task("ner", conll_train, tmp_path / "store", test=conll_test)
    assert not (tmp_path / "store").exists() or not list((tmp_path / "store").iterdir())


def test_pair_must_agree_across_files(tmp_path):
    train = write_table(tmp_path / "train.csv", rows(pair=True))
    dev = write_table(tmp_path / "dev.csv", rows(6))
    with pytest.raises(TaskError, match=r"dev\.csv has no text pair but train\.csv does"):
        ingest_task("classification", train, tmp_path / "store", dev=dev)
    with pytest.raises(TaskError, match=r"train\.csv has no text pair but test\.csv does"):
        ingest_task("classification", write_table(tmp_path / "train.csv", rows()), tmp_path / "store",
                    test=write_table(tmp_path / "test.csv", rows(6, pair=True)))
    assert not (tmp_path / "store").exists()


def test_one_label_and_bad_fractions():
    with pytest.raises(TaskError, match="has only the label 'pos': a classification task needs at least 2"):
        build_task("classification", {"train": [Example(f"t{i}", "pos") for i in range(10)]})
    with pytest.raises(TaskError, match="dev_fraction must be between 0 and 1"):
        build_task("classification", {"train": [Example("a", "x")]}, dev_fraction=1.5)


# --- splitting ---------------------------------------------------------------------------------

def labelled(counts):
    return [Example(f"{label} {i}", label) for label, n in counts.items() for i in range(n)]


def test_stratified_split_keeps_proportions_and_rare_labels():
    examples = labelled({"a": 100, "b": 50, "c": 20, "d": 3, "rare": 2, "once": 1})
    kept, taken = stratified_split(examples, 0.1, seed=0)
    assert Counter(e.label for e in taken) == {"a": 10, "b": 5, "c": 2, "d": 1}
    assert sorted(kept + taken, key=examples.index) == examples
    assert kept == [e for e in examples if e not in taken]  # input order kept
    assert stratified_split(examples, 0.1, seed=0) == (kept, taken)
    assert stratified_split(examples, 0.1, seed=1)[1] != taken


def test_stratified_split_never_takes_a_whole_label_or_a_tag_train_lacks():
    kept, taken = stratified_split(labelled({"a": 3, "b": 4}), 0.9, seed=0)
    assert Counter(e.label for e in kept) == {"a": 1, "b": 1}
    unique = [TaggedSentence(("x",), (f"B-T{i}",)) for i in range(5)]  # every tag in one sentence
    common = [TaggedSentence(("y",), ("O",))] * 20
    kept, taken = stratified_split(unique + common, 0.5, seed=0)
    assert taken and all(s.tags == ("O",) for s in taken) and unique == kept[:5]


def test_build_task_carves_test_then_dev_of_the_original_size():
    task, origin = build_task("classification", {"train": labelled({"a": 60, "b": 40})}, seed=3,
                              dev_fraction=0.2, test_fraction=0.1)
    sizes = {s: Counter(e.label for e in items) for s, items in task.splits.items()}
    assert sizes == {"test": {"a": 6, "b": 4}, "dev": {"a": 12, "b": 8}, "train": {"a": 42, "b": 28}}
    assert origin == {"train": "given: train", "dev": "split from train (seed 3, 20%)",
                      "test": "split from train (seed 3, 10%)"}
    assert task.labels == ["a", "b"] and not task.has_pair
    ner, _ = build_task("ner", {"train": [TaggedSentence(("a", "b"), ("B-X", "O"))] * 10})
    assert ner.labels == ["O", "B-X"] and [len(ner.splits[s]) for s in ("train", "dev", "test")] == [8, 1, 1]


HASH_SCRIPT = """
import sys
from core.judge.tasks import ingest_task
print(ingest_task("classification", sys.argv[1], sys.argv[2], seed=7).sha256)
"""


def test_split_is_the_same_in_another_process_with_another_hash_seed(tmp_path):
    train = write_table(tmp_path / "train.jsonl", rows(60, labels=("alpha", "beta", "gamma", "delta")))
    here = ingest_task("classification", train, tmp_path / "a", seed=7)
    env = dict(os.environ, PYTHONHASHSEED="123")
    there = subprocess.run([sys.executable, "-c", HASH_SCRIPT, str(train), str(tmp_path / "b")], env=env,
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    assert there == here.sha256
    assert (tmp_path / "b" / there / "test.jsonl").read_bytes() == (here.path / "test.jsonl").read_bytes()
    assert ingest_task("classification", train, tmp_path / "a", seed=8).sha256 != here.sha256


# --- storing -----------------------------------------------------------------------------------

def test_ingest_is_content_addressed_and_round_trips(tmp_path):
    store = tmp_path / "store"
    first = ingest_task("classification", write_table(tmp_path / "t.csv", rows(pair=True)), store)
    again = ingest_task("classification", write_table(tmp_path / "other.jsonl.gz", rows(pair=True)), store)
    assert again.sha256 == first.sha256 and again.path == first.path == store / first.sha256
    assert [p.name for p in store.iterdir()] == [first.sha256]
    assert again.stats == first.stats and first.stats.origin["train"] == "given: t.csv"  # the first one wins
    task = load_task(first.path)
    assert task == build_task("classification", load_files("classification", tmp_path / "t.csv"),
                              names={"train": "t.csv"})[0]
    assert task.has_pair and task.splits["dev"][0].text_pair.startswith("hypothesis")
    line = json.loads((first.path / "train.jsonl").read_text().splitlines()[0])
    assert set(line) == {"text", "label", "text_pair"} and line["text"].startswith("sentence number")
    assert json.loads((first.path / "task.json").read_text()) == first.stats.to_dict()
    assert first.stats.sizes == {"train": 24, "dev": 3, "test": 3}
    assert first.stats.label_counts["dev"] == {"neg": 1, "neu": 1, "pos": 1}


def test_ingest_ner_round_trips_with_entity_counts(tmp_path):
    train = write_conll(tmp_path / "train.conll", ner_sentences(30))
    dev = tmp_path / "dev.conll"
    dev.write_text("Über B-LOC\nJohn B-PER\nSmith I-PER\nand O\nMary B-PER\n")
    result = ingest_task("ner", train, tmp_path / "store", dev=dev)
    assert result.stats.labels == ["O", "B-LOC", "B-MISC", "B-ORG", "B-PER", "I-PER"]
    assert result.stats.label_counts["dev"] == {"LOC": 1, "MISC": 0, "ORG": 0, "PER": 2}
    assert sum(result.stats.label_counts["train"].values()) + sum(result.stats.label_counts["test"].values()) == 40
    assert result.stats.origin == {"train": "given: train.conll", "dev": "given: dev.conll",
                                   "test": "split from train (seed 0, 10%)"}
    assert '"Über"' in (result.path / "dev.jsonl").read_text(encoding="utf-8")  # not \u-escaped
    task = load_task(result.path)
    assert task.splits["dev"] == [TaggedSentence(("Über", "John", "Smith", "and", "Mary"),
                                                 ("B-LOC", "B-PER", "I-PER", "O", "B-PER"))]
    assert task.splits == build_task("ner", load_files("ner", train, dev=dev))[0].splits


def test_moving_an_example_between_splits_changes_the_hash(tmp_path):
    # the two tasks' split files concatenate to the same bytes; only the split boundary differs
    data = [Example(f"t{i}", "ab"[i % 2]) for i in range(7)]
    write = lambda name, items: write_table(tmp_path / name, [{"text": e.text, "label": e.label} for e in items])
    a = ingest_task("classification", write("a.csv", data[:4]), tmp_path / "s", dev=write("ad.csv", data[4:6]),
                    test=write("at.csv", data[6:]))
    b = ingest_task("classification", write("b.csv", data[:5]), tmp_path / "s", dev=write("bd.csv", data[5:6]),
                    test=write("bt.csv", data[6:]))
    assert a.sha256 != b.sha256
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == sorted([a.sha256, b.sha256])


def test_ingest_leaves_nothing_on_error(tmp_path):
    store = tmp_path / "store"
    train = write_table(tmp_path / "train.csv", rows())
    bad = write_table(tmp_path / "dev.csv", rows(3, labels=("unknown",)))
    with pytest.raises(TaskError, match="labels that train lacks: unknown"):
        ingest_task("classification", train, store, dev=bad)
    assert not store.exists() or list(store.iterdir()) == []
    # a failure after the split files are written: the final name is taken by a dangling link
    sha = ingest_task("classification", train, tmp_path / "elsewhere").sha256
    store.mkdir(exist_ok=True)
    (store / sha).symlink_to(tmp_path / "missing")
    with pytest.raises(OSError):
        ingest_task("classification", train, store)
    assert [p.name for p in store.iterdir()] == [sha]  # the link only, no .tmp-* folder


def test_lone_surrogate_in_jsonl_is_a_task_error(tmp_path):
    (tmp_path / "t.jsonl").write_text('{"text": "ok", "label": "x"}\n{"text": "bad \\ud800", "label": "y"}\n')
    with pytest.raises(TaskError, match=r"t\.jsonl: line 2 .*not valid Unicode"):
        read_classification(tmp_path / "t.jsonl")


def test_load_task_of_a_folder_that_is_not_a_task(tmp_path):
    with pytest.raises(TaskError, match="is not a stored task"):
        load_task(tmp_path)


# --- entities ----------------------------------------------------------------------------------

@pytest.mark.parametrize("tags,expected", [
    # IOB2: every entity starts with B-
    (["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "O", "B-PER"], {"PER": 2, "LOC": 2}),
    # IOB1: I- starts an entity after O or another type; B- only between two of one type
    (["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG", "I-LOC", "I-LOC"], {"PER": 1, "LOC": 3, "ORG": 1}),
    # BIOES: S- is a one-token entity; I-/E- right after E- or S- of one type start a new one
    (["B-PER", "I-PER", "E-PER", "S-PER", "O", "S-LOC", "E-LOC", "B-ORG", "E-ORG", "I-ORG"],
     {"PER": 2, "LOC": 2, "ORG": 2}),
    # BILOU spelling
    (["U-PER", "B-LOC", "L-LOC", "L-LOC"], {"PER": 1, "LOC": 2}),
    (["O", "O"], {}),
    ([], {}),
])
def test_count_entities(tags, expected):
    assert count_entities(tags) == expected
