"""How numbers are shown to people, the same in the dashboard and the command line."""


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            break
        value /= 1024
    return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"


def count(n: int, noun: str, plural: str | None = None) -> str:
    """'1 document', '25,733 documents': thousands separated, the noun agreeing."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"
