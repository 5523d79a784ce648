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
