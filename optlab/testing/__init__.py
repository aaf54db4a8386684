"""Tiny real things for tests, examples and benchmarks (importing it imports torch and pandas):

- `exported`: torch models of the shapes analysts bring, exported to real ONNX files;
- `graphs`: ONNX graphs written as other exporters write them (onnx.helper);
- `tiny`: small trainable datasets and models for technique tests;
- `frames`: results frames shaped like `Study.results`, for views.
"""
from optlab.testing.exported import (
                                     ScoresOnly,
                                     TinyCNN,
                                     TokenClassifier,
                                     TwoHeads,
                                     cnn_inputs,
                                     export,
                                     feature_inputs,
                                     token_inputs,
)
from optlab.testing.frames import latency_samples, results_frame
from optlab.testing.graphs import (
                                     constant_weight_mlp_inputs,
                                     constant_weight_mlp_onnx,
                                     dense_map_onnx,
                                     sequence_onnx,
                                     streaming_inputs,
                                     streaming_onnx,
)

__all__ = ["TinyCNN", "TokenClassifier", "TwoHeads", "ScoresOnly", "export", "cnn_inputs", "token_inputs",
           "feature_inputs", "results_frame", "latency_samples", "constant_weight_mlp_onnx",
           "constant_weight_mlp_inputs", "streaming_onnx", "streaming_inputs", "sequence_onnx", "dense_map_onnx"]
