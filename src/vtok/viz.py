"""Labelled image sheets: what a person looks at after training, evaluating or a demo."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

__all__ = ["image_sheet"]


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def image_sheet(
    rows: list[list[Image.Image]],
    labels: list[list[str]] | None = None,
    title: str | None = None,
    cell: int | None = None,
    cell_height: int | None = None,
) -> Image.Image:
    """A grid of images, each with up to three lines of caption under it. Cells are `cell`
    wide and `cell_height` high (default: square)."""
    if not rows or not rows[0]:
        raise ValueError("nothing to draw")
    cell = cell or max(96, max(im.width for row in rows for im in row))
    cell_h = cell_height or cell
    pad, caption = 6, 44
    top = 28 if title else 0
    cols = max(len(r) for r in rows)
    sheet = Image.new("RGB", (pad + cols * (cell + pad), top + pad + len(rows) * (cell_h + caption + pad)), "white")
    draw = ImageDraw.Draw(sheet)
    font = _font(12)
    if title:
        draw.text((pad, 6), title, fill="black", font=_font(16))
    for r, row in enumerate(rows):
        for c, im in enumerate(row):
            x, y = pad + c * (cell + pad), top + pad + r * (cell_h + caption + pad)
            if im.size != (cell, cell_h):
                im = im.resize(
                    (cell, cell_h), Image.Resampling.NEAREST if im.width < cell else Image.Resampling.BICUBIC
                )
            sheet.paste(im, (x, y))
            if labels and r < len(labels) and c < len(labels[r]):
                for i, line in enumerate(labels[r][c].split("\n")[:3]):
                    draw.text((x + 2, y + cell_h + 2 + 13 * i), line, fill="black", font=font)
    return sheet


def save_image_atomic(im: Image.Image, path: str | Path) -> Path:
    from .files import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")
    return path


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend, or the error that names the `plot` extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        from .errors import OptionalDependencyError

        raise OptionalDependencyError("matplotlib", "plot", "plots") from exc
    return plt


def save_figure_atomic(fig, path: str | Path, dpi: int = 110) -> Path:
    """Write a matplotlib figure (format from the suffix) whole or not at all, and close it."""
    from .files import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    pyplot().close(fig)
    return path
