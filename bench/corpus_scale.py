"""Memory and start-up time against corpus size: does a run's memory grow with its corpus?

    python bench/corpus_scale.py                    # 100 MB and 1 GB corpora (generated once into bench/data)
    python bench/corpus_scale.py --mb 10 100        # other sizes

For each size it generates a synthetic corpus (bench/make_corpus.py), then in a fresh process each:
- adaptation, cold: a short CPU adaptation of the bundled model (5 steps, batch 8, 128 tokens) that
  first tokenizes the corpus into the token cache (core.train.tokens) and memory-maps it;
- adaptation, warm: the same run again, which finds the cache and starts training at once;
- adaptation, in memory: the same run on the plain text, tokenized into memory as before the cache
  (the comparison: what the cache saves);
- vocabulary analysis: the curve of the paper's method at a small scale (step 1,000, up to 2,000
  tokens), whose word counts are held in memory.
It prints peak RSS (the process's maximum resident set) and the time to the first training step
(or to the end of the analysis), and the RSS ratio of the largest corpus to the smallest.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT / "bench" / "data"
MODES = ("cold", "warm", "memory", "analysis")


def child(mode: str, corpus: Path, sha: str, documents: int, cache: Path) -> dict:
    """One measurement, in this (fresh) process."""
    began = time.perf_counter()
    from core.model_io import bundled_path

    model = bundled_path()
    if mode == "analysis":
        from core.configs import VocabConfig
        from core.corpus import read_documents
        from core.model_io import load_tokenizer
        from core.vocab.curve import analyze

        analyze(lambda: read_documents(corpus), load_tokenizer(model), VocabConfig(step=1000, max_added=2000), 384,
                corpus.stat().st_size)
        first = time.perf_counter() - began
    else:
        from core.configs import AdaptConfig, TrainConfig
        from core.corpus import read_documents
        from core.train.adapt import adapt
        from core.train.tokens import CachedCorpus

        source = (lambda: read_documents(corpus)) if mode == "memory" else CachedCorpus(corpus, sha, documents, cache)
        seen: list[float] = []

        def metrics(step, values):
            if step >= 1 and not seen:
                seen.append(time.perf_counter() - began)

        config = AdaptConfig(seq_len=128, head_warmup=0,
                             train=TrainConfig(steps=5, batch_size=8, eval_every=1000, device="cpu", log_every=1))
        with tempfile.TemporaryDirectory() as out:
            adapt(model, source, Path(out) / "model", config, on_metrics=metrics)
        first = seen[0]
    return {"seconds": first, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def corpus_for(mb: float) -> tuple[Path, str, int]:
    """The corpus of `mb` MB (generated once), its sha256 and its document count."""
    import hashlib

    path = DATA / f"scale-{mb:g}mb.txt"
    if not path.is_file():
        DATA.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(ROOT / "bench" / "make_corpus.py"), str(path), "--mb", str(mb)],
                       check=True)
    digest, lines = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            digest.update(block)
            lines += block.count(b"\n")
    return path, digest.hexdigest(), lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, nargs="+", default=[100, 1000], help="corpus sizes in MB")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--child", nargs=5, metavar=("MODE", "CORPUS", "SHA", "DOCS", "CACHE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, corpus, sha, docs, cache = args.child
        print(json.dumps(child(mode, Path(corpus), sha, int(docs), Path(cache))))
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        for mb in args.mb:
            corpus, sha, docs = corpus_for(mb)
            for mode in args.modes:
                env = {**os.environ, "HF_HUB_OFFLINE": "1"}
                out = subprocess.run([sys.executable, __file__, "--child", mode, str(corpus), sha, str(docs), cache],
                                     env=env, capture_output=True, text=True)
                if out.returncode != 0:
                    print(out.stderr[-2000:], file=sys.stderr)
                    return 1
                result = json.loads(out.stdout.strip().splitlines()[-1])
                rows.append((mb, mode, result))
                print(f"  {mb:g} MB {mode}: {result['seconds']:.1f} s, {result['peak_rss_mb']:.0f} MB", file=sys.stderr,
                      flush=True)
    labels = {"cold": "adapt, cold cache (tokenizes)", "warm": "adapt, warm cache", "memory": "adapt, in memory (no cache)",
              "analysis": "vocabulary analysis"}
    print(f"\n{'corpus':>8} | {'run':<30} | {'to first step (s)':>17} | {'peak RSS (MB)':>13}")
    print(f"{'-' * 8}-+-{'-' * 30}-+-{'-' * 17}-+-{'-' * 13}")
    for mb, mode, r in rows:
        print(f"{mb:>5g} MB | {labels[mode]:<30} | {r['seconds']:>17.1f} | {r['peak_rss_mb']:>13,.0f}")
    sizes = sorted(set(args.mb))
    if len(sizes) > 1:
        print()
        for mode in args.modes:
            rss = {mb: r["peak_rss_mb"] for mb, m, r in rows if m == mode}
            print(f"{labels[mode]}: RSS at {sizes[-1]:g} MB / at {sizes[0]:g} MB = {rss[sizes[-1]] / rss[sizes[0]]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
