"""What runs the encoder's forward pass: one module per runtime, one function that chooses.

- :mod:`~beam_e5.model.backends.base`: the interface (:class:`InferenceBackend`) and what a
  backend loads from (:class:`LoadRequest`);
- :mod:`~beam_e5.model.backends.torch_backend`: PyTorch (CPU or CUDA, any dtype, any model);
- :mod:`~beam_e5.model.backends.onnxruntime_backend`: ONNX Runtime on CPU (``onnx``,
  ``onnx-int8``) over the graph of :mod:`beam_e5.model.onnx_graph`;
- :mod:`~beam_e5.model.backends.openvino_backend`: OpenVINO Runtime on CPU (``openvino``)
  over its own conversion of the weights;
- :mod:`~beam_e5.model.backends.choose`: the ``--backend`` names, the checks before the run,
  and :func:`~beam_e5.model.backends.choose.load_backend` (choice and fallback).

A new runtime is one module with an :class:`InferenceBackend` subclass and one line in
``choose.RUNTIMES``. Only the torch backend imports torch: the CPU runtimes pool in NumPy and
need torch only to build their graph on a cache miss, so their workers never import it.
"""
