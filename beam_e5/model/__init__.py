"""The encoder, without Beam: model profiles (prefixes, pooling), loading and staging model
files, token-budget batching, pooling, the inference backends (torch, ONNX Runtime) and the
ONNX graph build, the model signature."""
