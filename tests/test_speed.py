"""core.speed on tiny random BERTs built on the fly: one clearly bigger than the other."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core.errors import Cancelled, ModelError
from core.speed import SpeedResult, count_parameters, folder_size, measure_speed

VOCAB = 100


def _bert(folder: Path, layers: int, hidden: int, heads: int) -> Path:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=4 * hidden, max_position_embeddings=128)
    BertModel(config).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    """(big, small): 4 x 128 against 1 x 32, far apart enough for a loaded 2-core machine."""
    root = tmp_path_factory.mktemp("speed")
    return _bert(root / "big", 4, 128, 4), _bert(root / "small", 1, 32, 2)


def test_count_parameters_matches_the_loaded_model(pair):
    from transformers import AutoModel

    for folder in pair:
        model = AutoModel.from_pretrained(str(folder), use_safetensors=True)
        assert count_parameters(folder) == sum(p.numel() for p in model.parameters())


def test_folder_size_counts_every_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.bin").write_bytes(b"x" * 10)
    (tmp_path / "sub" / "b.txt").write_bytes(b"y" * 5)
    assert folder_size(tmp_path) == 15


def test_the_smaller_model_is_faster(pair):
    big, small = pair
    stages: list[tuple[str, float]] = []
    results = measure_speed([("big", big), ("small", small)], device="cpu", seq_len=64, batch_size=8,
                            latency_repeats=15, throughput_repeats=3, warmup=2,
                            progress=lambda stage, fraction: stages.append((stage, fraction)))
    assert [r.name for r in results] == ["big", "small"]
    first, second = results
    assert isinstance(first, SpeedResult)
    assert first.speedup_vs_first == 1.0 and first.throughput_speedup_vs_first == 1.0
    assert second.speedup_vs_first > 1.0
    assert second.throughput_speedup_vs_first > 1.0
    for result in results:
        assert result.params > 0 and result.size_bytes > 0
        assert result.latency_ms_p50 > 0 and result.latency_ms_p95 >= result.latency_ms_p50
        assert result.throughput_per_s > 0
        assert (result.device, result.seq_len, result.batch_size) == ("cpu", 64, 8)
        assert result.to_dict()["name"] == result.name
    assert first.params > second.params and first.size_bytes > second.size_bytes
    assert {stage for stage, _ in stages} == {"measuring speed"}
    fractions = [fraction for _, fraction in stages]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)


def test_threads_are_restored(pair):
    before = torch.get_num_threads()
    measure_speed([("small", pair[1])], seq_len=16, batch_size=2, latency_repeats=1, throughput_repeats=1,
                  warmup=0, threads=1)
    assert torch.get_num_threads() == before


def test_cancel_raises_cancelled(pair):
    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 3  # after loading, during the repetitions

    with pytest.raises(Cancelled):
        measure_speed([("big", pair[0]), ("small", pair[1])], seq_len=16, batch_size=2, latency_repeats=50,
                      warmup=0, cancel=cancel)


def test_a_folder_without_weights_is_a_model_error(pair, tmp_path):
    empty = tmp_path / "no-weights"
    empty.mkdir()
    (empty / "config.json").write_text((pair[1] / "config.json").read_text())
    with pytest.raises(ModelError, match="'broken'"):
        measure_speed([("small", pair[1]), ("broken", empty)], seq_len=16, batch_size=2, latency_repeats=1)
    with pytest.raises(ModelError, match="'missing'"):
        measure_speed([("missing", tmp_path / "nowhere")], seq_len=16, batch_size=2, latency_repeats=1)
    with pytest.raises(ModelError, match="no .safetensors"):
        count_parameters(empty)
