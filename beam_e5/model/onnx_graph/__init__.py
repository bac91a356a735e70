"""The ONNX graph that the ONNX Runtime backend runs, built from the Hugging Face weights.

- :mod:`~beam_e5.model.onnx_graph.export`: export with PyTorch's ONNX exporter, then fusion
  into ONNX Runtime's transformer operators;
- :mod:`~beam_e5.model.onnx_graph.quantize`: int8 MatMuls with one activation scale per token;
- :mod:`~beam_e5.model.onnx_graph.cache`: the cached build (cache directory and keys, locks,
  atomic writes), once per machine.
"""

# Encoder families the exporter and ORT's BERT optimiser handle (graph: embeddings, then
# post-LN self-attention blocks). Others are refused up front rather than failing on workers.
# Here, not in export (which imports torch): the backends' checks read it on every worker.
ONNX_MODEL_TYPES = ("bert", "xlm-roberta", "roberta", "distilbert", "mpnet", "electra")
