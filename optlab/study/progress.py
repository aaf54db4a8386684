"""The study's progress bar, whose saved output ends in its final state.

`tqdm.auto` shows a widget in a notebook. A saved notebook keeps, beside the widget, the text
the bar had when it was first displayed ("0/5"); a viewer that cannot draw the widget (an
untrusted notebook in JupyterLab, nbviewer, GitHub, papermill's output) shows that text, so a
study whose five candidates all ran read "0/5". Here the widget bar is displayed under a display
id and displayed again under it when it closes: the saved output then carries the final text
("5/5") as well as the final widget state. Outside a notebook it is plain `tqdm.auto`.
"""
from __future__ import annotations

from typing import Any

from tqdm.auto import tqdm


def _notebook_class() -> type | None:
    """tqdm's notebook bar when `tqdm.auto` chose it (an IPython kernel with ipywidgets), else None."""
    try:
        from tqdm.notebook import tqdm as notebook_tqdm
    except ImportError:
        return None
    return notebook_tqdm if issubclass(tqdm, notebook_tqdm) else None


def progress_bar(**options: Any):
    """A `tqdm.auto` bar (same keywords) that, in a notebook, leaves its final state in the output."""
    notebook = _notebook_class()
    if notebook is None or options.get("disable"):
        return tqdm(**options)
    return _FinalStateBar(**options)


class _FinalStateBar(tqdm):
    """A notebook bar displayed under a display id and displayed again when it closes."""

    def __init__(self, **options: Any):
        super().__init__(display=False, **options)
        self._handle = None
        container = getattr(self, "container", None)
        if container is not None:
            from IPython.display import display

            self._handle = display(container, display_id=True)
            self.displayed = True

    def close(self) -> None:
        closed = self.disable  # tqdm sets disable on close: a second close does nothing
        super().close()
        if not closed and self._handle is not None and self.leave:
            self._handle.update(self.container)
