"""How numbers read: sizes in the decimal units of Streamlit's "bytes" column format, counts with
thousands separators and a noun that agrees."""

import pytest

from core.formatting import count, human_bytes


@pytest.mark.parametrize("size, text", [
    (0, "0 B"), (999, "999 B"), (1_000, "1.0 kB"), (1_500, "1.5 kB"), (999_949, "999.9 kB"),
    (999_950, "1.0 MB"), (90_912_345, "90.9 MB"), (3_000_000_000, "3.0 GB"), (1_234_500_000_000_000, "1,234.5 TB"),
])
def test_sizes_are_decimal_like_the_tables(size, text):
    assert human_bytes(size) == text


def test_counts_are_separated_and_agree():
    assert count(1, "document") == "1 document"
    assert count(0, "document") == "0 documents"
    assert count(25_733, "new token") == "25,733 new tokens"
    assert count(2, "vocabulary analysis", "vocabulary analyses") == "2 vocabulary analyses"


@pytest.mark.parametrize("value", [6_300, 51_000, 1_934_000, 22_713_216, 109_482_240, 1_234_567_890])
def test_parameters_read_the_same_in_text_and_tables(value):
    from core.formatting import parameters, table_number

    text = parameters(value)
    assert text.endswith("M") and float(text[:-1].replace(",", "")) == pytest.approx(value / 1e6, abs=0.051)
    assert table_number("parameters", value) == text.replace(",", "")


@pytest.mark.parametrize("kind, value, text", [
    ("latency", 9.4912, "9.49 ms"), ("latency", 45.449, "45.45 ms"), ("throughput", 312.44, "312.4/s"),
    ("speedup", 4.63, "4.6x"), ("tokens_per_word", 1.0175, "1.018"), ("size", 97_100_000, "97.1 MB"),
    ("size", 97_049_999, "97.0 MB")])
def test_each_kind_of_number_has_one_way(kind, value, text):
    from core import formatting

    shown = {"latency": formatting.latency_ms, "throughput": formatting.throughput, "speedup": formatting.speedup,
             "tokens_per_word": formatting.tokens_per_word, "size": formatting.human_bytes}[kind](value)
    assert shown == text
    table = formatting.table_number(kind, value)
    assert shown.startswith(table) and shown[len(table):] in ("", " ms", "/s"), (shown, table)


def test_no_page_formats_sizes_or_parameters_its_own_way():
    """Streamlit's own 'compact' and 'bytes' formats read '24M' and '97.1MB' where the rest of the
    product writes '23.9M' and '97.1 MB': every page goes through ui.number_column instead."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    found = [f"{path.relative_to(root)}:{n}" for path in (root / "app").rglob("*.py")
             for n, line in enumerate(path.read_text().splitlines(), 1)
             if re.search(r'format="(compact|bytes)"|compact_count\([^)]*param', line)]
    assert not found, found
