"""Views read DataFrames only: plots, the live widgets and the HTML report.

Importing this package switches altair to optlab's offline renderer (see
optlab.views.rendering): charts draw with no network and keep a PNG for kernel-less viewers.
"""
from optlab.views import rendering as _rendering

_rendering.enable()
