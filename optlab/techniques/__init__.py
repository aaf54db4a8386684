"""Techniques make candidates from recipes: one private handler module per toolkit,
dispatched by `registry.apply`."""
