"""The bottom layer: datasets (generators, splits, request streams), a user's inputs,
content hashes, calibration subsets and the on-disk cache."""
