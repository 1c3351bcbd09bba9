"""Quantities as people read them."""


def human_size(count: int) -> str:
    """Bytes as people read them: 512 B, 3.4 MB, 12.0 GB (powers of 1000, as `ls -h --si`)."""
    value, unit = float(count), "B"
    for bigger in ("kB", "MB", "GB", "TB"):
        if value < 1000:
            break
        value, unit = value / 1000, bigger
    return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
