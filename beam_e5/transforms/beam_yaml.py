"""``E5TextEmbeddings`` from a Beam YAML pipeline.

Beam YAML's ``MLTransform`` (``apache_beam/yaml/yaml_ml.py``) builds each entry of its
``transforms:`` list by looking its ``type`` up in a table filled, when that module is
imported, from the modules of ``apache_beam.ml.transforms`` only; there is no way to name a
class from another package there (``Unknown ML transform type: 'E5TextEmbeddings'``). Beam
YAML's ``PyTransform`` does construct any PTransform by its import path, so
:class:`E5MLTransform` is an ``MLTransform`` holding ``E5TextEmbeddings`` in one
PTransform that YAML can name::

    - type: PyTransform
      config:
        constructor: beam_e5.E5MLTransform
        kwargs:
          write_artifact_location: /tmp/artifacts
          model_name: intfloat/e5-small-v2
          columns: [text]
          role: passage

Rows in, the same rows out with each column replaced by its vector (``list[float]``), with
the output schema declared as ``yaml_ml.ml_transform`` declares it for Beam's own embeddings.
"""

from __future__ import annotations

from typing import Any, Optional

import apache_beam as beam
from apache_beam.ml.transforms.base import MLTransform
from apache_beam.typehints import List
from apache_beam.typehints.row_type import RowTypeConstraint
from apache_beam.typehints.schemas import named_fields_from_element_type

from beam_e5.transforms.rag import E5TextEmbeddings


class E5MLTransform(beam.PTransform):
    """``MLTransform(write_artifact_location=...).with_transform(E5TextEmbeddings(
    model_name, columns, **kwargs))`` as one PTransform (for Beam YAML's ``PyTransform``)."""

    def __init__(self, model_name: str, columns: list[str],
                 write_artifact_location: Optional[str] = None,
                 read_artifact_location: Optional[str] = None, **kwargs: Any) -> None:
        super().__init__()
        self._columns = list(columns)
        self._ml = MLTransform(write_artifact_location=write_artifact_location,
                               read_artifact_location=read_artifact_location)
        if read_artifact_location is None:
            self._ml = self._ml.with_transform(E5TextEmbeddings(model_name, self._columns,
                                                                **kwargs))

    def expand(self, pcoll):
        try:
            fields = named_fields_from_element_type(pcoll.element_type)
        except TypeError:  # no schema: leave the output untyped, as yaml_ml does
            return pcoll | self._ml
        schema = RowTypeConstraint.from_fields(
            [(name, List[float] if name in self._columns else typ) for name, typ in fields])
        return pcoll | self._ml.with_output_types(schema)
