"""E5TextEmbeddings from a Beam YAML pipeline: not through YAML's MLTransform (its table of
transform types holds Beam's own classes only), through PyTransform and E5MLTransform."""

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from beam_e5.model.config import EncoderConfig
from beam_e5.model.encoder import Encoder

LINES = {1: "Error in module A", 2: "Warning in module B", 3: "Info in module C"}
CREATE = """
  - type: Create
    config:
      elements:
""" + "".join(f"        - {{id: {i}, log_message: \"{t}\"}}\n" for i, t in LINES.items())


def _yaml(spec: str):
    from apache_beam.yaml.yaml_transform import YamlTransform  # heavy: imported when used

    return YamlTransform(spec)


def _options():
    return PipelineOptions(pickle_library="cloudpickle", yaml_experimental_features=["ML"])


@pytest.mark.slow  # importing yaml_ml loads every apache_beam.ml.transforms module (~20 s)
def test_yaml_mltransform_cannot_name_e5_text_embeddings(minilm_dir, tmp_path):
    """What the README says: yaml_ml looks the type up among apache_beam.ml.transforms."""
    with pytest.raises(Exception, match="Unknown ML transform type: 'E5TextEmbeddings'"):
        with beam.Pipeline(options=_options()) as p:
            _ = p | _yaml(f"""
type: chain
transforms:
{CREATE}
  - type: MLTransform
    config:
      write_artifact_location: {tmp_path}
      transforms:
        - type: E5TextEmbeddings
          config:
            model_name: {minilm_dir}
            columns: [log_message]
""")


@pytest.mark.slow  # a whole YAML pipeline with the model
def test_yaml_pytransform_runs_e5_text_embeddings(minilm_dir, tmp_path):
    spec = EncoderConfig(minilm_dir, role="query").resolve()
    vectors, _ = Encoder.load(spec).encode(list(LINES.values()))
    expected = dict(zip(LINES, vectors))

    def check_row(row):
        assert isinstance(row.embedding, list) and len(row.embedding) == spec.dim
        assert float(np.asarray(row.embedding) @ expected[row.id]) > 0.99999
        return row.id

    with beam.Pipeline(options=_options()) as p:
        result = p | _yaml(f"""
type: chain
transforms:
{CREATE}
  - type: PyTransform
    config:
      constructor: beam_e5.E5MLTransform
      kwargs:
        write_artifact_location: {tmp_path}
        model_name: {minilm_dir}
        columns: [log_message]
        role: query
        inference_args: {{batch_size: 2}}
  - type: MapToFields
    config:
      language: python
      fields:
        id: id
        embedding: log_message
""")
        assert_that(result | beam.Map(check_row), equal_to(list(LINES)))
