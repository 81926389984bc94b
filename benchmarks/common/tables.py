"""Number formats and Markdown tables of the reports."""

NOT_MEASURED = "—"


def fmt_time(seconds):
    if seconds is None:
        return NOT_MEASURED
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s"


def fmt_bytes(count):
    if count is None:
        return NOT_MEASURED
    for size, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if count >= size:
            return f"{count / size:.3g} {unit}"
    return f"{count} B"


def fmt_count(n):
    """4_000_000 -> '4M', 98_200_000 -> '98.2M', 20_000 -> '20k'."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:.3g}{suffix}"
    return str(n)


def fmt_ratio(x):
    return NOT_MEASURED if x is None else f"{x:.3g}"


def fmt_error(x):
    return NOT_MEASURED if x is None else "0" if x == 0 else f"{x:.1e}"


def markdown_table(headers, rows):
    """First column left-aligned, the others right-aligned."""
    lines = ["| " + " | ".join(headers) + " |",
             "|---|" + "--:|" * (len(headers) - 1)]
    for row in rows:
        lines.append("| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |")
    return "\n".join(lines)
