"""The bottom layer: datasets (generators, splits, request streams), a user's inputs, content hashes and the on-disk cache."""
