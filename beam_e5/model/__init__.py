"""The encoder, without Beam: model profiles (prefixes, pooling), loading and staging model files, token-budget batching, pooling, the torch and ONNX Runtime backends, the model signature."""
