"""Things that predict: Candidate, the model zoo and its architectures, training, a user's
ONNX / torch models, ONNX signatures, and the fresh-process runtime loaders."""
