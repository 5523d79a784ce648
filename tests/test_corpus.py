import csv
import gzip
import json
import tracemalloc

import pytest

from core.corpus import MIN_DOCUMENTS, ingest, iter_documents, preview, read_documents
from core.errors import CorpusError

DOCS = [f"Document number {i} talks about cytokine signalling and lymphoma." for i in range(30)]


def write(path, docs=DOCS, fmt="txt", field="text"):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8", newline="") as out:
        if fmt == "txt":
            out.write("\n".join(docs) + "\n")
        elif fmt == "jsonl":
            for i, d in enumerate(docs):
                out.write(json.dumps({"id": i, field: d}) + "\n")
        else:
            writer = csv.writer(out, delimiter="," if fmt == "csv" else "\t")
            writer.writerow(["id", field])
            writer.writerows([i, d] for i, d in enumerate(docs))
    return path


@pytest.mark.parametrize("name,fmt", [("c.txt", "txt"), ("c.jsonl", "jsonl"), ("c.csv", "csv"), ("c.tsv", "tsv"),
                                      ("c.txt.gz", "txt"), ("c.jsonl.gz", "jsonl"), ("c.csv.gz", "csv")])
def test_every_format_reads_the_same_documents_and_hashes_the_same(tmp_path, name, fmt):
    reference = ingest(write(tmp_path / "ref.txt"), tmp_path / "store")
    got = ingest(write(tmp_path / name, fmt=fmt), tmp_path / "store")
    assert list(iter_documents(tmp_path / name)) == DOCS
    assert got.sha256 == reference.sha256  # same content, same corpus, whatever the container
    assert got.stats.documents == 30


def test_stats(tmp_path):
    docs = ["alpha beta  gamma", "alpha\tbeta", "alpha\tbeta", "", "delta epsilon zeta eta"] + DOCS[:10]
    result = ingest(write(tmp_path / "s.txt", docs), tmp_path / "store")
    stats = result.stats
    assert stats.documents == 14  # the empty line is not a document
    assert stats.duplicate_documents == 1  # "alpha beta" twice after whitespace normalization
    assert stats.words == 3 + 2 + 2 + 4 + sum(len(d.split()) for d in DOCS[:10])
    assert stats.distinct_words == len({w for d in docs for w in d.split()})
    assert result.path.read_text().splitlines()[0] == "alpha beta gamma"
    assert stats.bytes == result.path.stat().st_size
    assert stats.mean_length == pytest.approx(sum(len(" ".join(d.split())) for d in docs if d) / 14)
    assert preview(result.path, 2) == ["alpha beta gamma", "alpha beta"]


def test_documents_keep_multiline_csv_fields_as_one_line(tmp_path):
    docs = [f"first line {i}\nsecond line" for i in range(MIN_DOCUMENTS)]
    result = ingest(write(tmp_path / "m.csv", docs, fmt="csv"), tmp_path / "store")
    assert result.stats.documents == MIN_DOCUMENTS
    assert list(read_documents(result.path))[0] == "first line 0 second line"


def test_text_field_option(tmp_path):
    path = write(tmp_path / "c.jsonl", fmt="jsonl", field="body")
    assert ingest(path, tmp_path / "store", text_field="body").stats.documents == 30


@pytest.mark.parametrize("content,fragment", [
    (b"", "has no text"),
    (b"\n\n   \n", "has no text"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "looks binary"),
    ("ok line one\n".encode() * 3 + b"caf\xe9 latin-1\n", "line 4 is not UTF-8"),
    (b"short\n" * (MIN_DOCUMENTS - 1), "too small"),
    ("a domain text line\n".encode("utf-16") * 40, "is UTF-16 .*re-save it as UTF-8"),
    ("a domain text line\n".encode("utf-16-be") * 40, "looks binary"),  # no mark: nothing says UTF-16
    ("a domain text line\n".encode("utf-32") * 40, "is UTF-32"),
])
@pytest.mark.tried('bad corpus files: binary, UTF-16 with a BOM, empty, too small')
def test_bad_files_get_one_clear_error_and_leave_nothing(tmp_path, content, fragment):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    store = tmp_path / "store"
    with pytest.raises(CorpusError, match=fragment) as info:
        ingest(path, store)
    assert "\n" not in str(info.value)
    assert list(store.iterdir()) == []


def test_wrong_field_and_column_name_what_exists(tmp_path):
    with pytest.raises(CorpusError, match=r"line 1 has no field 'text' \(it has: id, body\)"):
        ingest(write(tmp_path / "c.jsonl", fmt="jsonl", field="body"), tmp_path / "store")
    with pytest.raises(CorpusError, match=r"no column 'text' \(columns: id, body\)"):
        ingest(write(tmp_path / "c.csv", fmt="csv", field="body"), tmp_path / "store")
    bad = tmp_path / "broken.jsonl"
    bad.write_text('{"text": "fine document"}\n{"text": oops}\n')
    with pytest.raises(CorpusError, match="line 2 is not valid JSON"):
        ingest(bad, tmp_path / "store")
    assert [p.name for p in (tmp_path / "store").iterdir()] == []


def test_bad_gzip_and_unknown_format(tmp_path):
    fake = tmp_path / "c.txt.gz"
    fake.write_bytes(b"not gzip at all\n" * 20)
    with pytest.raises(CorpusError, match="not a valid gzip file"):
        ingest(fake, tmp_path / "store")
    other = tmp_path / "c.docx"
    other.write_text("x")
    with pytest.raises(CorpusError, match="pass --format"):
        ingest(other, tmp_path / "store")


def test_reading_streams_in_constant_memory(tmp_path):
    line = ("word " * 40 + "\n").encode()
    small, large = tmp_path / "small.txt", tmp_path / "large.txt"
    small.write_bytes(line * 5_000)  # 1 MB
    large.write_bytes(line * 100_000)  # 20 MB

    def peak(path):
        tracemalloc.start()
        count = sum(1 for _ in iter_documents(path))
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return count, top

    (n_small, peak_small), (n_large, peak_large) = peak(small), peak(large)
    assert (n_small, n_large) == (5_000, 100_000)
    assert peak_large < 2 * peak_small + 1_000_000
