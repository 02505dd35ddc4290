"""A small printable summary: a title, one table and notes (like statsmodels' Summary)."""

from __future__ import annotations

import pandas as pd

__all__ = ["Summary"]


class Summary:
    """Printable summary; ``tables`` holds the DataFrames, ``extra_txt`` the notes."""

    def __init__(self, title: str, table: pd.DataFrame, notes: list[str] = (), info: dict | None = None,
                 float_format: str = "{:.4f}"):
        self.title = title
        self.tables = [table]
        self.extra_txt = list(notes)
        self.info = dict(info or {})
        self._fmt = float_format

    def as_text(self) -> str:
        body = self.tables[0].to_string(
            float_format=lambda x: self._fmt.format(x), na_rep=""
        )
        width = max(len(line) for line in body.splitlines()) if body else 40
        width = max(width, len(self.title))
        lines = [self.title.center(width), "=" * width]
        if self.info:
            items = [f"{k}: {v}" for k, v in self.info.items()]
            half = (len(items) + 1) // 2
            left, right = items[:half], items[half:]
            w = max(len(s) for s in left) + 4
            for i in range(half):
                r = right[i] if i < len(right) else ""
                lines.append(left[i].ljust(w) + r)
            lines.append("-" * width)
        lines += [body, "=" * width]
        lines += self.extra_txt
        return "\n".join(lines)

    def as_html(self) -> str:
        notes = "".join(f"<p>{t}</p>" for t in self.extra_txt)
        return f"<h4>{self.title}</h4>" + self.tables[0].to_html(float_format=self._fmt.format) + notes

    def __str__(self) -> str:
        return self.as_text()

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return self.as_html()
