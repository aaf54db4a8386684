"""Views read DataFrames only: plots, the live widgets and the HTML report."""
