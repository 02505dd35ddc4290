"""A small printable summary, like statsmodels' ``Summary``: a title, a header block, tables
and notes.  Both model kinds print through it.

Layout of :meth:`Summary.as_text` (``width`` is that of the widest table line or header line)::

    title, centred
    ==========
    header: info lines (preformatted), or the info dict as "key: value" in two columns
    ----------
    table 1
    ----------        (between tables)
    table 2
    ==========
    notes, one a line
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

__all__ = ["Summary", "info_columns"]


def info_columns(left: Sequence[tuple[str, str]], right: Sequence[tuple[str, str]],
                 widths: tuple[int, int, int, int] = (18, 12, 20, 12)) -> list[str]:
    """statsmodels' four-column header: ``label value label value``, each left-aligned in a
    fixed width; ``left`` and ``right`` are ``(label, value)`` pairs of equal length."""
    wa, wb, wc, wd = widths
    return [f"{a:<{wa}}{b:<{wb}}{c:<{wc}}{d:<{wd}}" for (a, b), (c, d) in zip(left, right)]


class Summary:
    """Printable summary; ``tables`` holds the DataFrames, ``extra_txt`` the notes.

    Parameters
    ----------
    title : str
    tables : DataFrame or list of DataFrame
        Printed one after the other (floats with ``float_format``, NaN as blank).
    notes : list of str
        Lines after the tables (``extra_txt``).
    info : dict, optional
        Header as ``key: value`` items set in two columns (they do not widen the rules).
    info_lines : list of str, optional
        Header as preformatted lines (e.g. :func:`info_columns`), used instead of ``info``;
        they count toward the width of the rules.
    float_format : str
    """

    def __init__(self, title: str, tables, notes: Sequence[str] = (), info: dict | None = None,
                 float_format: str = "{:.4f}", info_lines: Sequence[str] = ()):
        self.title = title
        self.tables = [tables] if isinstance(tables, pd.DataFrame) else list(tables)
        self.extra_txt = list(notes)
        self.info = dict(info or {})
        self.info_lines = list(info_lines)
        self._fmt = float_format

    def _header(self) -> list[str]:
        if self.info_lines:
            return list(self.info_lines)
        items = [f"{k}: {v}" for k, v in self.info.items()]
        half = (len(items) + 1) // 2
        left, right = items[:half], items[half:]
        w = max((len(s) for s in left), default=0) + 4
        return [left[i].ljust(w) + (right[i] if i < len(right) else "") for i in range(half)]

    def as_text(self) -> str:
        """The summary as plain text (see the module docstring for the layout)."""
        bodies = [t.to_string(float_format=lambda x: self._fmt.format(x), na_rep="")
                  for t in self.tables]
        widths = [len(line) for b in bodies for line in b.splitlines()]
        widths += [len(line) for line in self.info_lines]
        width = max(max(widths, default=40), len(self.title))
        lines = [self.title.center(width), "=" * width]
        header = self._header()
        if header:
            lines += header + ["-" * width]
        for i, body in enumerate(bodies):
            lines += ([] if i == 0 else ["-" * width]) + [body]
        lines += ["=" * width] + self.extra_txt
        return "\n".join(lines)

    def as_html(self) -> str:
        """The title, the tables and the notes as HTML (the header block is text only)."""
        tables = "".join(t.to_html(float_format=self._fmt.format) for t in self.tables)
        notes = "".join(f"<p>{t}</p>" for t in self.extra_txt)
        return f"<h4>{self.title}</h4>" + tables + notes

    def as_latex(self) -> str:
        """The title, the tables (one ``tabular`` each, floats with the summary's format) and
        the notes as LaTeX, as statsmodels' ``Summary.as_latex`` (no jinja2 needed)."""
        def esc(x) -> str:
            text = str(x).replace("\\", r"\textbackslash{}")  # first: the others add some
            for a, b in (("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"),
                         ("_", r"\_"), ("~", r"\textasciitilde{}"),
                         ("^", r"\textasciicircum{}")):
                text = text.replace(a, b)
            return text

        def cell(v) -> str:
            if isinstance(v, float):
                return "" if v != v else esc(self._fmt.format(v))
            return esc(v)

        out = [r"\begin{center}", esc(self.title), r"\end{center}"]
        for t in self.tables:
            out += [r"\begin{tabular}{l" + "r" * t.shape[1] + "}", r"\hline",
                    " & ".join([""] + [esc(c) for c in t.columns]) + r" \\", r"\hline"]
            out += [" & ".join([esc(i)] + [cell(v) for v in row]) + r" \\"
                    for i, row in zip(t.index, t.itertuples(index=False))]
            out += [r"\hline", r"\end{tabular}"]
        out += [esc(n) for n in self.extra_txt]
        return "\n".join(out)

    def __str__(self) -> str:
        return self.as_text()

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return self.as_html()
