"""The `adapt-distill` console script, run as a user runs it."""

import json
import os
import subprocess
import sys

import pytest
from conftest import write_corpus

POINT_KEYS = {"vocab_size", "added_tokens", "log_occurrence", "relative_gain", "tokens_per_word", "split_word_share"}


@pytest.fixture
def cli(home):
    env = {**os.environ, "ADAPT_DISTILL_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    env.pop("DATABASE_URL", None)

    def run(*args, ok=True, extra_env=None, timeout=300):
        result = subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True, text=True,
                                env={**env, **(extra_env or {})}, timeout=timeout)
        if ok:
            assert result.returncode == 0, result.stderr
        return result

    return run


def one_json(result):
    data = json.loads(result.stdout)  # the whole of stdout is one JSON object
    assert isinstance(data, dict)
    return data


def test_add_analyze_expand_with_json_output(cli, corpus_file, tmp_path):
    added = one_json(cli("corpus", "add", str(corpus_file), "--name", "oncology", "--json"))
    assert set(added) >= {"corpus_id", "documents", "bytes"} and added["documents"] == 600
    again = one_json(cli("corpus", "add", str(corpus_file), "--json"))
    assert again["corpus_id"] == added["corpus_id"] and again["created"] is False
    listing = one_json(cli("corpus", "list", "--json"))
    assert [c["name"] for c in listing["corpora"]] == ["oncology"]

    curve = one_json(cli("vocab", "analyze", "--corpus", str(added["corpus_id"]), "--step", "100",
                         "--max-added", "300", "--threshold", "0.05", "--json"))
    assert curve["base_vocab_size"] == 30522
    assert [p["vocab_size"] for p in curve["points"]] == [30522, 30622, 30722, 30822]
    assert all(POINT_KEYS <= set(p) for p in curve["points"])
    gains = [p["relative_gain"] for p in curve["points"][1:]]
    expected = next((p["vocab_size"] for p in curve["points"][1:] if p["relative_gain"] <= 0.05),
                    curve["points"][-1]["vocab_size"])
    assert curve["picked_vocab_size"] == expected, gains

    shown = one_json(cli("vocab", "show", str(curve["analysis_id"]), "--threshold", "0.9", "--json"))
    assert shown["picked_vocab_size"] == 30622  # the first gain is below 90%: the pick moves, nothing recomputed

    out = tmp_path / "expanded"
    made = one_json(cli("vocab", "expand", "--analysis", str(curve["analysis_id"]), "--size", "30722",
                        "--out", str(out), "--json"))
    assert made["output_dir"] == str(out) and made["vocab_size"] == 30722 and made["added_tokens"] == 200
    from transformers import AutoTokenizer

    assert len(AutoTokenizer.from_pretrained(out)) == 30722
    # the same size again, with no folder of its own: the model made first is reused, not copied
    first = one_json(cli("vocab", "expand", "--analysis", str(curve["analysis_id"]), "--size", "30622", "--json"))
    again = one_json(cli("vocab", "expand", "--analysis", str(curve["analysis_id"]), "--size", "30622", "--json"))
    assert first["reused"] is False and again["reused"] is True
    assert (again["run_id"], again["output_dir"]) == (first["run_id"], first["output_dir"])
    assert "reused: run" in cli("vocab", "expand", "--analysis", str(curve["analysis_id"]), "--size", "30622").stdout
    listing = one_json(cli("runs", "list", "--json"))["runs"]
    assert len([r for r in listing if r["kind"] == "expansion"]) == 2  # --out's and the default one

    human = cli("vocab", "show", str(curve["analysis_id"]))
    assert "<- pick" in human.stdout


@pytest.mark.parametrize("args,message", [
    (["corpus", "add", "{bad}"], "looks binary"),
    (["corpus", "add", "{missing}"], "no such file"),
    (["vocab", "analyze", "--corpus", "99"], "no corpus with id 99"),
    (["vocab", "analyze", "--corpus", "1", "--step", "0"], "step must be a whole number from 1"),
    (["vocab", "analyze", "--corpus", "{corpus}", "--base", "{missing}"], "no such model folder"),
    (["vocab", "expand", "--analysis", "5", "--size", "10", "--out", "x"], "no vocabulary analysis with id 5"),
])
def test_user_mistakes_get_one_line_and_no_traceback(cli, tmp_path, args, message):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\x00\x01\x02binary")
    corpus = ""
    if "{corpus}" in args:
        corpus = one_json(cli("corpus", "add", str(write_corpus(tmp_path / "c.txt", 50)), "--json"))["corpus_id"]
    args = [a.format(bad=bad, missing=tmp_path / "missing", corpus=corpus) for a in args]
    result = cli(*args, ok=False)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    as_json = cli(*args, "--json", ok=False)
    assert message in one_json(as_json)["error"]


def test_queued_analysis_through_a_real_worker(cli, home, redis, redis_url, corpus_file):
    worker = subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--queues", "cpu"],
                              env={**os.environ, "ADAPT_DISTILL_HOME": str(home), "REDIS_URL": redis_url},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        corpus = one_json(cli("corpus", "add", str(corpus_file), "--json"))
        env = {"REDIS_URL": redis_url}
        queued = one_json(cli("vocab", "analyze", "--corpus", str(corpus["corpus_id"]), "--step", "100",
                              "--max-added", "200", "--queue", "--json", extra_env=env))
        assert queued["reused"] is False and queued["status"] == "queued"
        done = one_json(cli("vocab", "analyze", "--corpus", str(corpus["corpus_id"]), "--step", "100",
                            "--max-added", "200", "--queue", "--wait", "--json", extra_env=env))
        assert done["reused"] is True and done["analysis_id"] == queued["analysis_id"]
        assert done["status"] == "succeeded" and len(done["points"]) == 3
        again = one_json(cli("vocab", "analyze", "--corpus", str(corpus["corpus_id"]), "--step", "100",
                             "--max-added", "200", "--queue", "--json", extra_env=env))
        assert again == {"analysis_id": queued["analysis_id"], "run_id": queued["run_id"], "reused": True,
                         "status": "succeeded"}
    finally:
        worker.terminate()
        worker.wait(20)


@pytest.mark.tried('the dashboard is started on 0.0.0.0 without a login')
def test_the_dashboard_listens_on_this_machine_only_unless_told(cli):
    from app.cli.serving import dashboard_command

    command = dashboard_command(8501)
    assert command[command.index("--server.address") + 1] == "127.0.0.1"
    for name in ("up", "dashboard"):
        result = cli(name, "--host", "0.0.0.0", ok=False)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr
        assert "no login is configured" in lines[0] and "adapt-distill hash-password" in lines[0]
        assert "--allow-remote" in lines[0]
    assert dashboard_command(8501, "0.0.0.0")[command.index("--server.address") + 1] == "0.0.0.0"


def test_a_login_lets_the_dashboard_listen_beyond_this_machine(monkeypatch, tmp_path):
    from app.access import PASSWORD_ENV, hash_password
    from core.errors import ConfigError
    from app.cli.serving import check_host

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    with pytest.raises(ConfigError, match="no login is configured"):
        check_host("0.0.0.0", allow_remote=False)
    assert check_host("0.0.0.0", allow_remote=True) == "0.0.0.0"
    assert check_host(" localhost ", allow_remote=False) == "localhost"

    monkeypatch.setenv(PASSWORD_ENV, hash_password("correct horse battery", n=16))
    assert check_host("0.0.0.0", allow_remote=False) == "0.0.0.0"
    assert check_host("192.168.1.20", allow_remote=False) == "192.168.1.20"

    monkeypatch.setenv(PASSWORD_ENV, "not a hash")  # a broken login is no login: said at once, on any host
    for host in ("127.0.0.1", "0.0.0.0"):
        with pytest.raises(ConfigError, match="ADAPT_DISTILL_PASSWORD_HASH is not a password hash"):
            check_host(host, allow_remote=True)

    monkeypatch.delenv(PASSWORD_ENV)
    (tmp_path / ".streamlit").mkdir()
    (tmp_path / ".streamlit" / "secrets.toml").write_text('[auth]\nredirect_uri = "http://host:8501/oauth2callback"\n')
    assert check_host("0.0.0.0", allow_remote=False) == "0.0.0.0"  # Streamlit's OIDC login


def test_hash_password_prints_the_line_for_the_environment(cli):
    from app.access import verify_password

    result = subprocess.run([sys.executable, "-m", "app.cli", "hash-password"], input="correct horse battery\n",
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    name, value = line.split("=", 1)
    assert name == "ADAPT_DISTILL_PASSWORD_HASH" and value.startswith("scrypt:32768:8:1:")
    assert verify_password("correct horse battery", value) and not verify_password("correct horse", value)

    short = subprocess.run([sys.executable, "-m", "app.cli", "hash-password"], input="hunter2\n",
                           capture_output=True, text=True, timeout=60)
    assert short.returncode == 2 and short.stdout == ""
    assert short.stderr.strip().splitlines() == ["error: the password is too short: use 8 characters or more"]

    broken = cli("dashboard", "--host", "0.0.0.0", ok=False, timeout=60,
                 extra_env={"ADAPT_DISTILL_PASSWORD_HASH": value.rsplit(":", 1)[0]})  # a field short
    assert broken.returncode == 2 and len(broken.stderr.strip().splitlines()) == 1
    assert "ADAPT_DISTILL_PASSWORD_HASH is not a password hash" in broken.stderr


def test_a_reader_that_goes_away_is_not_a_traceback(home):
    """`adapt-distill ... --json | head`: the pipe closes before the command writes."""
    env = {**os.environ, "ADAPT_DISTILL_HOME": str(home)}
    env.pop("DATABASE_URL", None)
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written
    process = subprocess.run([sys.executable, "-m", "app.cli", "corpus", "list", "--json"], env=env,
                             stdout=write, stderr=subprocess.PIPE, text=True, timeout=120)
    os.close(write)
    assert process.returncode == 141 and "Traceback" not in process.stderr, process.stderr


def test_the_help_says_the_whole_sentence_and_the_dashboard_hides_deploy(cli):
    from app.cli.parser import DESCRIPTION
    from app.cli.serving import dashboard_command

    assert DESCRIPTION.endswith(".") and " ".join(DESCRIPTION.split()) in " ".join(cli("--help").stdout.split())
    command = dashboard_command(8501)
    assert command[command.index("--client.toolbarMode") + 1] == "minimal"


def test_every_option_says_what_it_does_and_its_default():
    import argparse

    from app.cli.parser import HelpFormatter, build_parser

    missing, undefaulted = [], []

    def walk(parser, path):
        formatter = HelpFormatter(parser.prog)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, path + [name])
            elif action.dest != "help":
                where = " ".join(path + [action.option_strings[0] if action.option_strings else action.dest])
                text = formatter._get_help_string(action)
                if not text:
                    missing.append(where)
                elif action.option_strings and action.default not in (None, False) and "default" not in text:
                    undefaulted.append(where)

    walk(build_parser(), ["adapt-distill"])
    assert missing == [] and undefaulted == [], (missing, undefaulted)


def test_counts_agree_with_their_noun():
    from core.formatting import count

    assert count(1, "document") == "1 document" and count(0, "document") == "0 documents"
    assert count(25_733, "new token") == "25,733 new tokens" and count(2, "analysis", "analyses") == "2 analyses"


def test_workers_are_counted_as_processes_with_their_queues_and_gpus():
    from core.formatting import describe_workers

    assert describe_workers([]) == "no worker running"
    assert describe_workers([{"queues": ["gpu", "cpu"], "cuda": 0}]) == "1 worker: cpu, gpu queues; no GPU"
    assert describe_workers([{"queues": ["gpu"], "cuda": 4}, {"queues": ["gpu"], "cuda": 4},
                             {"queues": ["cpu"], "cuda": 0}]) == "3 workers: cpu, gpu queues; 8 GPUs"
    assert describe_workers([{"queues": ["gpu"], "cuda": 1}]) == "1 worker: gpu queue; 1 GPU"


def test_the_train_page_says_where_runs_go():
    from core.formatting import where_runs_go

    assert where_runs_go([{"queues": ["cpu"], "cuda": 0}])[0] == "warning"
    assert where_runs_go([{"queues": ["cpu", "gpu"], "cuda": 0}]) == (
        "info", "Runs go to 1 worker on the gpu queue, which has no GPU: they train on its CPU (fine for small runs).")
    assert where_runs_go([{"queues": ["gpu"], "cuda": 2}, {"queues": ["gpu"], "cuda": 2}])[1].startswith(
        "Runs go to 2 workers on the gpu queue with 4 GPUs")


@pytest.mark.tried("a corpus named with terminal escape codes and a newline, then listed")
def test_a_name_with_terminal_escapes_is_printed_as_text_never_acted_on(cli, corpus_file):
    name = "evil\x1b[2J\x1b[31mred\nsecond line\x07"
    cli("corpus", "add", str(corpus_file), "--name", name)
    listed = cli("corpus", "list").stdout
    assert "\x1b" not in listed and "\x07" not in listed  # nothing a terminal would act on
    (line,) = [x for x in listed.splitlines() if "evil" in x]  # the newline did not start a line of its own
    assert "evil\\x1b[2J\\x1b[31mred\\nsecond line\\x07" in line
    assert "second line" not in listed.replace(line, "")
