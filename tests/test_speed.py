"""core.judge.speed on tiny random BERTs built on the fly: one clearly bigger than the other; how a
measurement is taken (threads, repeats, noise) and how the Models page keeps contexts apart."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core.errors import Cancelled, ConfigError, ModelError
from core.judge.settings import MIN_LATENCY_REPEATS
from core.judge.speed import SpeedResult, measure_speed, noise_reason
from core.model_io import count_parameters, folder_size

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
                            latency_repeats=30, throughput_repeats=3, warmup=2,
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


@pytest.mark.parametrize("threads", [1, 2])
def test_threads_are_applied_to_every_forward_recorded_and_restored(pair, threads):
    seen: set[int] = set()
    hook = torch.nn.modules.module.register_module_forward_hook(lambda *_: seen.add(torch.get_num_threads()))
    before = torch.get_num_threads()
    try:
        (result,) = measure_speed([("small", pair[1])], seq_len=16, batch_size=2, throughput_repeats=1, warmup=1,
                                  threads=threads)
    finally:
        hook.remove()
    assert seen == {threads}, "every forward, warm-up included, ran on the threads asked for"
    assert torch.get_num_threads() == before
    assert result.threads == threads and result.latency_repeats == MIN_LATENCY_REPEATS
    assert (result.throughput_repeats, result.warmup) == (1, 1)
    assert result.torch_version == torch.__version__ and result.cpu_model
    assert all(isinstance(load, float) for load in (result.load_before, result.load_after))  # Linux has one
    assert result.latency_ms_iqr >= 0 and result.seconds > 0
    assert result.noisy == bool(result.noisy_reason)


def test_the_default_is_one_thread_and_at_least_30_batch_1_forwards(pair):
    (result,) = measure_speed([("small", pair[1])], seq_len=16, batch_size=2, throughput_repeats=1, warmup=0)
    assert (result.threads, result.latency_repeats) == (1, 30)
    for repeats in (1, 29):
        with pytest.raises(ConfigError, match="latency repeats must be at least 30 .*raise them to 30 or more"):
            measure_speed([("small", pair[1])], seq_len=16, batch_size=2, latency_repeats=repeats)
    with pytest.raises(ConfigError, match="threads must be at least 1"):
        measure_speed([("small", pair[1])], seq_len=16, batch_size=2, threads=0)


def test_the_parameters_are_those_of_the_encoder_that_is_timed(tmp_path):
    """An MLM checkpoint: its head is on disk and not timed; AutoModel adds a pooler that is."""
    from transformers import AutoModel, BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    folder = tmp_path / "mlm"
    BertForMaskedLM(config).save_pretrained(str(folder))
    (result,) = measure_speed([("mlm", folder)], seq_len=16, batch_size=2, throughput_repeats=1, warmup=0)
    encoder = AutoModel.from_pretrained(str(folder), use_safetensors=True)
    assert result.params == sum(p.numel() for p in encoder.parameters())
    assert result.params != count_parameters(folder), "not the checkpoint's count"
    assert result.size_bytes == folder_size(folder)


@pytest.mark.parametrize("p50, p95, before, after, seconds, threads, reason", [
    (10.0, 42.0, None, None, 10.0, 1, "p95 is 4.2x p50"),
    (10.0, 30.0, 0.3, 0.3, 10.0, 1, ""),  # 3x exactly is not over
    (10.0, 12.0, 0.3, 1.6, 10.0, 1, "the load average rose from 0.30 to 1.60, more than the measurement itself "
                                    "explains (+0.15)"),
    (10.0, 12.0, 0.0, 1.73, 120.0, 2, ""),  # two busy threads for two minutes: the measurement's own load
    (10.0, 12.0, 1.0, 1.3, 60.0, 1, ""),
    (10.0, 12.0, 2.0, 1.37, 60.0, 1, ""),  # 2 threads of earlier work (a fine-tuning) winding down
    (10.0, 12.0, 3.0, 2.4, 60.0, 1, "the load average fell from 3.00 to 2.40: other work (about 1.1 threads) ran "
                                    "and stopped meanwhile"),
    (10.0, 12.0, 3.0, 2.4, 10.0, 1, ""),  # too short to tell a fall apart
    (10.0, 50.0, 0.2, 2.0, 5.0, 1, "p95 is 5.0x p50; the load average rose from 0.20 to 2.00, more than the "
                                   "measurement itself explains (+0.08)"),
])
def test_a_measurement_is_noisy_when_its_tail_is_long_or_the_load_changed(p50, p95, before, after, seconds, threads,
                                                                          reason):
    assert noise_reason(p50, p95, before, after, seconds, threads) == reason


def test_a_measurement_is_noisy_when_other_work_crowds_the_cores():
    """2 threads on 2 cores for 150 s with the load going 2.65 -> 4.00: about 2 other threads
    competed throughout; the same load on 8 cores, or a quiet machine, is not noisy."""
    crowded = noise_reason(10.0, 25.0, 2.65, 4.00, 150.0, 2, cores=2)
    assert crowded == "the machine was crowded: about 2.1 other threads ran beside its 2 on 2 cores (load average " \
                      "2.65 to 4.00)"
    assert noise_reason(10.0, 25.0, 2.65, 4.00, 150.0, 2, cores=8) == ""
    assert noise_reason(10.0, 12.0, 1.33, 1.80, 70.0, 2, cores=2) == ""  # its own 2 threads: n = 2.0
    assert noise_reason(10.0, 12.0, 2.65, 2.70, 10.0, 2, cores=2) == "", "too short to tell"


def test_the_stored_context_differs_by_device_sequence_batch_and_threads():
    from worker.evaluation import bench_params, speed_context

    base = speed_context("cpu", 128, 32, 1)
    assert base == "cpu · seq 128 · batch 1 and 32 · 1 thread"
    others = {speed_context("cpu", 128, 32, 2), speed_context("cuda:0", 128, 32, 1), speed_context("cpu", 64, 32, 1),
              speed_context("cpu", 128, 16, 1)}
    assert len(others) == 4 and base not in others
    assert bench_params(None)["threads"] == 1 and bench_params(None)["latency_repeats"] == 30
    with pytest.raises(ConfigError, match=r"latency-repeats must be at least 30 .*\(bench --repeats\) to 30 or more"):
        bench_params({"latency_repeats": 10})
    with pytest.raises(ConfigError, match="threads must be a whole number from 1 to"):
        bench_params({"threads": 0})


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
        measure_speed([("small", pair[1]), ("broken", empty)], seq_len=16, batch_size=2)
    with pytest.raises(ModelError, match="'missing'"):
        measure_speed([("missing", tmp_path / "nowhere")], seq_len=16, batch_size=2)
    with pytest.raises(ModelError, match="no .safetensors"):
        count_parameters(empty)


def test_the_models_page_compares_speed_only_within_one_context(sessions, tmp_path):
    """Two real benchmarks (1 and 2 threads) and a measurement stored before threads were recorded:
    three contexts, each its own table, never mixed; a noisy row is flagged."""
    from conftest import build_tiny_bert
    from sqlalchemy import select
    from test_app_judging import frame, open_page

    from db.models import Measurement
    from worker.catalogue import ensure_model
    from worker.evaluation import create_benchmark
    from worker.lifecycle import execute_run

    first, second = (str(build_tiny_bert(tmp_path / name, seed=seed)) for seed, name in enumerate(("first", "second")))
    settings = {"device": "cpu", "seq_len": 16, "batch_size": 2, "throughput_repeats": 1, "warmup": 0}
    for models, threads in (([first, second], 1), ([first], 2)):
        execute_run(sessions, create_benchmark(sessions, models, {**settings, "threads": threads}).id)
    old = "cpu · seq 128 · batch 1 and 32"
    with sessions.begin() as session:
        record = ensure_model(session, second)
        session.add(Measurement(model_id=record.id, kind="speed", context=old, values={
            "latency_ms_p50": 5.0, "latency_ms_p95": 6.0, "throughput_per_s": 300.0, "params": 123, "size_bytes": 1000,
            "batch_size": 32}))
        for measurement in session.scalars(select(Measurement).where(Measurement.context.endswith("1 thread"))):
            # Sub-millisecond forwards on a shared machine are noisy or not by chance: one is set each way.
            noisy = measurement.model_id == record.id
            measurement.values = {**measurement.values, "noisy": noisy,
                                  "noisy_reason": "p95 is 4.2x p50" if noisy else ""}

    at = open_page("models")
    one, two = "cpu · seq 16 · batch 1 and 2 · 1 thread", "cpu · seq 16 · batch 1 and 2 · 2 threads"
    chooser = at.selectbox(key="models_speed_context")
    assert chooser.value == one and chooser.options[0] == f"{one} (2 models)", "the context with the most models first"
    assert sorted(chooser.options[1:]) == [f"{old} · threads not recorded (measured before they were) (1 model)",
                                           f"{two} (1 model)"]
    speed = frame(at, "encoder parameters")
    assert sorted(speed["threads"]) == [1, 1] and len(speed) == 2
    assert (speed["encoder parameters"] > 0).all() and (speed["size"] > 0).all()
    assert sorted(speed["noisy"].fillna("")) == ["", "⚠ p95 is 4.2x p50"]
    models = frame(at, "tokens/word")
    assert models["p50 ms"].notna().sum() == 2 and (models["noisy"] == "⚠").sum() == 1
    assert any("Also measured in" in c.value and two in c.value for c in at.caption)
    assert any("pinned to 1 thread(s)" in c.value and "interleaved" in c.value for c in at.caption)

    chooser.set_value(two).run()
    speed = frame(at, "encoder parameters")
    assert list(speed["threads"]) == [2] and len(speed) == 1
    assert frame(at, "tokens/word")["p50 ms"].notna().sum() == 1, "the other context's latencies are not shown"

    at.selectbox(key="models_speed_context").set_value(old).run()
    speed = frame(at, "encoder parameters")
    assert len(speed) == 1 and speed["encoder parameters"].isna().all(), "old counts were the checkpoint's"
    assert any("Measured before threads" in c.value for c in at.caption)


def test_the_chart_never_puts_two_contexts_on_one_axis():
    from app.data import models as models_data
    from app.charts import tradeoff_figure

    rows = [{"model_id": i, "label": f"m{i}", "parameters": 10 * i, "scores": [
        {"task_id": 1, "mean": 0.5 + i / 10, "std": 0.01, "evaluation_run": i, "metric": "f1"}]} for i in (1, 2, 3)]
    measurements = [
        {"model_id": 1, "context": "a", "run_id": 9, "values": {"latency_ms_p50": 3.0, "noisy": True}},
        {"model_id": 2, "context": "a", "run_id": 9, "values": {"latency_ms_p50": 2.0}},
        {"model_id": 3, "context": "b", "run_id": 8, "values": {"latency_ms_p50": 1.0}},
        {"model_id": 1, "context": "a", "run_id": 7, "values": {"latency_ms_p50": 99.0}},  # older: not shown
    ]
    assert models_data.speed_contexts(rows, measurements, 1) == ["a", "b"]
    speed = models_data.speed_in(measurements, "a")
    points = models_data.tradeoff_rows(rows, 1, speed, "a")
    assert [(p["label"], p["latency_ms_p50"]) for p in points] == [("m1 ⚠", 3.0), ("m2", 2.0)]
    figure = tradeoff_figure(points, "f1")
    assert "measured in a" in figure.layout.xaxis.title.text
    mixed = points + models_data.tradeoff_rows(rows, 1, models_data.speed_in(measurements, "b"), "b")
    with pytest.raises(ValueError, match="different contexts cannot share an axis"):
        tradeoff_figure(mixed, "f1")
