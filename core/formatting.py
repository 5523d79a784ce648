"""How numbers are shown to people, the same in the dashboard and the command line: one way for
each kind of number.

- Parameters in millions, one decimal: '22.7M', `parameters`.
- Model and corpus sizes in decimal units, 1 kB = 1,000 B and 1 MB = 1,000,000 B: '97.1 MB',
  `human_bytes`; in tables, megabytes with one decimal.
- Latency in milliseconds with two decimals: '9.49 ms', `latency_ms`.
- Throughput in sequences per second with one decimal, `throughput`; speed-ups with one decimal
  and an x: '4.6x', `speedup`; tokens per word with three decimals, `tokens_per_word`.
- Counts in messages have thousands separators and a noun that agrees with them: count(25733,
  "new token") is '25,733 new tokens'.

Tables keep their numbers numbers (they sort) and show them through TABLE_FORMATS, printf formats
that print what the functions above print (the values scaled by `table_value` first)."""

SIZE_UNITS = ("B", "kB", "MB", "GB", "TB")
UNKNOWN = "—"
# kind: (printf format for a table column, scale applied to the value first)
TABLE_FORMATS = {"parameters": ("%.1fM", 1e-6), "size": ("%.1f MB", 1e-6), "latency": ("%.2f", 1.0),
                 "throughput": ("%.1f", 1.0), "speedup": ("%.1fx", 1.0), "tokens_per_word": ("%.3f", 1.0)}


def table_value(kind: str, value: float | None) -> float | None:
    """A number as a table column of that kind holds it (parameters and sizes in millions)."""
    return None if value is None else value * TABLE_FORMATS[kind][1]


def table_number(kind: str, value: float | None) -> str:
    """A number as a table column of its kind shows it ('9.49', '22.7M', '4.6x'), for text tables."""
    return UNKNOWN if value is None else TABLE_FORMATS[kind][0] % table_value(kind, value)


def parameters(n: int | None) -> str:
    """'22.7M', '1.9M' (a BERT's embeddings alone are millions); '—' when unknown."""
    return UNKNOWN if n is None else f"{n / 1e6:,.1f}M"


def latency_ms(ms: float | None) -> str:
    """'9.49 ms'; '—' when not measured."""
    return UNKNOWN if ms is None else f"{ms:,.2f} ms"


def throughput(per_second: float | None) -> str:
    """'312.4/s' sequences per second; '—' when not measured."""
    return UNKNOWN if per_second is None else f"{per_second:,.1f}/s"


def speedup(ratio: float | None) -> str:
    """'4.6x'; '—' when not measured."""
    return UNKNOWN if ratio is None else f"{ratio:.1f}x"


def tokens_per_word(value: float | None) -> str:
    """'1.017'; '—' when not measured."""
    return UNKNOWN if value is None else f"{value:.3f}"


def human_bytes(size: int) -> str:
    """'512 B', '1.5 kB', '90.9 MB', '1,200.0 TB': decimal units, one decimal above bytes."""
    value = float(size)
    if abs(value) < 1000:
        return f"{value:,.0f} B"
    for unit in SIZE_UNITS[1:]:
        value /= 1000
        if abs(round(value, 1)) < 1000 or unit == SIZE_UNITS[-1]:
            return f"{value:,.1f} {unit}"


def count(n: int, noun: str, plural: str | None = None) -> str:
    """'1 document', '25,733 documents': thousands separated, the noun agreeing."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def describe_workers(pool: list[dict], order: tuple[str, ...] = ("cpu", "gpu")) -> str:
    """'1 worker: cpu, gpu queues; no GPU', '3 workers: gpu queue; 8 GPUs': workers (processes), not
    queue subscriptions, with the queues they serve and the GPUs they have."""
    if not pool:
        return "no worker running"
    served = sorted({q for w in pool for q in w["queues"]}, key=lambda q: (order.index(q) if q in order else 99, q))
    gpus = sum(int(w.get("cuda") or 0) for w in pool)
    devices = count(gpus, "GPU") if gpus else ("Apple GPU" if any(w.get("mps") for w in pool) else "no GPU")
    return f"{count(len(pool), 'worker')}: {', '.join(served)} {'queue' if len(served) == 1 else 'queues'}; {devices}"


def where_runs_go(pool: list[dict], queue: str = "gpu") -> tuple[str, str]:
    """(level, line) saying where a training run will go: 'warning' when no worker serves its queue."""
    serving = [w for w in pool if queue in w["queues"]]
    if not serving:
        return "warning", (f"No worker serves the {queue} queue, so a launched run waits: start one with "
                           f"`adapt-distill worker --queues {queue}` (or `adapt-distill up`).")
    gpus = sum(int(w.get("cuda") or 0) for w in serving)
    if gpus:
        return "info", (f"Runs go to {count(len(serving), 'worker')} on the {queue} queue with "
                        f"{count(gpus, 'GPU')} (device auto uses them).")
    return "info", (f"Runs go to {count(len(serving), 'worker')} on the {queue} queue, which "
                    f"{'has' if len(serving) == 1 else 'have'} no GPU: they train on its CPU (fine for small runs).")


def score_interval(interval) -> str:
    """'0.7612 to 0.8070' (a 95% interval), or '' when there is none."""
    return f"{interval[0]:.4f} to {interval[1]:.4f}" if interval else ""


def seeds_spread(seeds, std) -> str:
    """'1 seed' (no spread to show), '3 seeds, ± 0.0123' (standard deviation over the seeds)."""
    if not seeds:
        return ""
    return count(seeds, "seed") + (f", ± {std:.4f}" if seeds > 1 and std is not None else "")


def points_difference(difference, interval) -> str:
    """'+3.1 (+1.2 to +5.0)': a score difference in points (hundredths) with its 95% interval."""
    if difference is None:
        return ""
    text = f"{100 * difference:+.1f}"
    return text + (f" ({100 * interval[0]:+.1f} to {100 * interval[1]:+.1f})" if interval else "")


def printable(text: str) -> str:
    """The text with every character a terminal would act on written as its escape ('\\x1b[31m',
    '\\n'): a name can never colour, move or clear a terminal, or pass for another line."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
