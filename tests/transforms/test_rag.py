"""Beam RAG interop: ``apache_beam.ml.rag`` items through ``EmbedTexts``, ``E5TextEmbeddings`` in
``MLTransform``, and a whole Beam RAG pipeline (Beam's LangChain chunker, beam-e5's embeddings
manager, Beam's Qdrant writer on a local path) on the DirectRunner, checked against
``beam-e5 embed``."""

import json
import uuid

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
import pytest
from apache_beam.ml.rag.chunking.langchain import LangChainChunker
from apache_beam.ml.rag.ingestion.base import VectorDatabaseWriteTransform
from apache_beam.ml.rag.ingestion.qdrant import (
    QdrantConnectionParameters,
    QdrantWriteConfig,
)
from apache_beam.ml.rag.types import Content, EmbeddableItem
from apache_beam.ml.rag.types import Embedding as RagEmbedding
from apache_beam.ml.transforms.base import MLTransform
from beam_helpers import metric_counter
from langchain.text_splitter import RecursiveCharacterTextSplitter
from qdrant_client import QdrantClient, models
from realtext import licence_paragraphs, mixed_length_texts

import beam_e5
from beam_e5.cli import main
from beam_e5.errors import ConfigError
from beam_e5.model.config import EncoderConfig
from beam_e5.model.encoder import Encoder
from beam_e5.model.profiles import ProfileOverrides
from beam_e5.transforms.embed_texts import EmbedTexts
from beam_e5.transforms.rag import (
    E5TextEmbeddings,
    rag_item_record,
    rag_item_text,
    with_dense_embedding,
)

# -- conversion helpers (hand-built items) ----------------------------------------------------


def test_with_dense_embedding_fills_the_vector_and_keeps_id_index_metadata():
    item = EmbeddableItem(content=Content(text="hello"), id="c-1", index=3,
                          metadata={"source": "a.txt"},
                          embedding=RagEmbedding(sparse_embedding=([1, 7], [0.5, 0.25])))
    out = with_dense_embedding(item, np.array([0.6, 0.8], dtype=np.float32))
    assert (out.id, out.index, out.metadata, out.content.text) == ("c-1", 3, {"source": "a.txt"},
                                                                   "hello")
    assert out.dense_embedding == pytest.approx([0.6, 0.8])
    assert all(type(x) is float for x in out.dense_embedding)
    assert out.sparse_embedding == ([1, 7], [0.5, 0.25])  # kept
    assert item.embedding.dense_embedding is None  # the input item is not mutated
    out.metadata["x"] = 1
    assert item.metadata == {"source": "a.txt"}


def test_item_text_and_error_record():
    image = EmbeddableItem.from_image(b"\x89PNG", id="img-1", metadata={"k": "v"})
    assert rag_item_text(image) is None
    assert rag_item_record(image) == {"id": "img-1", "index": 0, "metadata": {"k": "v"},
                                      "text": None}
    assert rag_item_text(EmbeddableItem.from_text("t")) == "t"


# -- E5TextEmbeddings configuration ----------------------------------------------------------


def test_manager_is_public_and_resolves_the_recipe_before_the_pipeline(minilm_dir):
    assert beam_e5.E5TextEmbeddings is E5TextEmbeddings
    e5 = ProfileOverrides(family="e5")  # the E5 recipe for a model not named e5 (--profile e5)
    query = E5TextEmbeddings(minilm_dir, role="query", max_seq_length=64, overrides=e5,
                             max_batch_tokens=2048)
    assert query.spec.prefix == "query: " and query.spec.profile.max_length == 64
    assert query.spec.config.max_batch_tokens == 2048
    assert E5TextEmbeddings(minilm_dir, overrides=e5).spec.prefix == "passage: "  # the default
    assert E5TextEmbeddings(minilm_dir).spec.prefix == ""  # MiniLM's own recipe: no prefix
    cfg = EncoderConfig(minilm_dir, role="query", backend="torch")
    assert E5TextEmbeddings(cfg).spec.config is cfg
    handler = E5TextEmbeddings(minilm_dir, max_batch_size=32).get_model_handler()
    assert handler.batch_elements_kwargs() == {"min_batch_size": 32, "max_batch_size": 32}


def test_manager_misconfiguration_fails_with_a_config_error(minilm_dir, tmp_path):
    with pytest.raises(ConfigError, match="load_model_args key 'token'"):
        E5TextEmbeddings(minilm_dir, load_model_args={"token": "hf_x"})
    with pytest.raises(ConfigError, match="inference_args key 'chunk_size'"):
        E5TextEmbeddings(minilm_dir, inference_args={"chunk_size": 8})
    with pytest.raises(ConfigError, match="unknown options normalize"):
        E5TextEmbeddings(minilm_dir, normalize=True)
    with pytest.raises(ConfigError, match="EncoderConfig and role"):
        E5TextEmbeddings(EncoderConfig(minilm_dir), role="query")
    with pytest.raises(ConfigError, match="contradicts"):
        E5TextEmbeddings(minilm_dir, max_seq_length=64, overrides=ProfileOverrides(max_length=128))
    with pytest.raises(ConfigError, match="--role"):
        E5TextEmbeddings(minilm_dir, role="document")
    (tmp_path / "not-a-model").mkdir()  # reachable, but wrong: refused before the pipeline
    with pytest.raises(ConfigError, match="has no config.json"):
        E5TextEmbeddings(str(tmp_path / "not-a-model"))


# -- EmbedTexts with RAG items ---------------------------------------------------------------


def _collect(pcoll, path, to_json):
    return pcoll | f"Json{path.name}" >> beam.Map(to_json) | f"Write{path.name}" >> \
        beam.io.WriteToText(str(path / "part"))


def _read(path):
    return [json.loads(line) for f in sorted(path.glob("part*"))
            for line in f.read_text().splitlines()]


def _item_json(item):
    return json.dumps({"type": type(item).__name__, "id": item.id, "index": item.index,
                       "metadata": item.metadata, "text": item.content.text,
                       "embedding": item.dense_embedding})


def test_embed_texts_takes_and_returns_rag_items(minilm_dir, tmp_path):
    texts = mixed_length_texts(12)
    items = [EmbeddableItem.from_text(t, id=f"c{i}", index=i, metadata={"doc": f"d{i // 4}"})
             for i, t in enumerate(texts)]
    bad = EmbeddableItem.from_image(b"\x89PNG", id="img-1")
    spec = EncoderConfig(minilm_dir, beam_batch_size=8).resolve()
    p = beam.Pipeline()
    embedded, errors = (p | beam.Create(items + [bad])
                        | EmbedTexts(spec, with_errors=True))
    _collect(embedded, tmp_path / "emb", _item_json)
    _collect(errors, tmp_path / "err", json.dumps)
    result = p.run()
    result.wait_until_finish()

    out = {r["id"]: r for r in _read(tmp_path / "emb")}
    assert sorted(out) == sorted(f"c{i}" for i in range(12))
    ref, _ = Encoder.load(spec).encode(texts)
    for i, t in enumerate(texts):
        r = out[f"c{i}"]
        assert (r["type"], r["index"], r["metadata"], r["text"]) == (
            "EmbeddableItem", i, {"doc": f"d{i // 4}"}, t)
        assert float(np.dot(np.asarray(r["embedding"], np.float32), ref[i])) > 0.99999
    errors = _read(tmp_path / "err")
    assert [(e["id"], e["reason"]) for e in errors] == [("img-1", "text is NoneType, not a string")]
    assert metric_counter(result, "texts_embedded") == 12


# -- E5TextEmbeddings in MLTransform ---------------------------------------------------------


@pytest.mark.slow
def test_mltransform_applies_the_role_prefix_to_items_and_dict_columns(tiny_models,
                                                                      tmp_path):
    path = tiny_models("bert", "e5-small-v2")
    # short texts: the two prefix tokens move a (random-weight) mean-pooled vector visibly
    texts = [" ".join(p.split()[:5]) for p in licence_paragraphs(10)]
    items = [EmbeddableItem.from_text(t, id=f"q{i}", index=i, metadata={"n": i})
             for i, t in enumerate(texts)]
    rows = [{"id": f"r{i}", "text": t, "lang": "en"} for i, t in enumerate(texts)]
    p = beam.Pipeline()
    embedded = (p | "Items" >> beam.Create(items)
                | "EmbedItems" >> MLTransform(write_artifact_location=str(tmp_path / "a1"))
                .with_transform(E5TextEmbeddings(path, role="query", max_batch_size=4)))
    _collect(embedded, tmp_path / "items", _item_json)
    dicts = (p | "Rows" >> beam.Create(rows)
             | "EmbedRows" >> MLTransform(write_artifact_location=str(tmp_path / "a2"))
             .with_transform(E5TextEmbeddings(path, role="query", columns=["text"])))
    _collect(dicts, tmp_path / "rows", json.dumps)
    result = p.run()
    result.wait_until_finish()

    query = Encoder.load(EncoderConfig(path, role="query").resolve()).encode(texts)[0]
    passage = Encoder.load(EncoderConfig(path, role="passage").resolve()).encode(texts)[0]
    got_items = {r["id"]: r for r in _read(tmp_path / "items")}
    got_rows = {r["id"]: r for r in _read(tmp_path / "rows")}
    for i in range(len(texts)):
        item, row = got_items[f"q{i}"], got_rows[f"r{i}"]
        assert (item["index"], item["metadata"], item["text"]) == (i, {"n": i}, texts[i])
        assert row["lang"] == "en"
        for vec in (item["embedding"], row["text"]):
            v = np.asarray(vec, np.float32)
            assert float(v @ query[i]) > 0.99999
            assert float(v @ passage[i]) < 0.999  # the "query: " prefix reached the model
    assert metric_counter(result, "texts_embedded") == 20

    # MLTransform's read mode rebuilds beam-e5's manager from the saved artifacts
    p = beam.Pipeline()
    again = (p | beam.Create(items)
             | MLTransform(read_artifact_location=str(tmp_path / "a1")))
    _collect(again, tmp_path / "again", _item_json)
    p.run().wait_until_finish()
    rebuilt = {r["id"]: r for r in _read(tmp_path / "again")}
    assert sorted(rebuilt) == sorted(got_items)
    for i in range(len(texts)):
        assert float(np.asarray(rebuilt[f"q{i}"]["embedding"], np.float32) @ query[i]) > 0.99999


@pytest.mark.slow
def test_one_line_swap_for_huggingface_text_embeddings_keeps_the_vectors(minilm_dir,
                                                                         tmp_path):
    """A model without a prefix (MiniLM): Beam's manager and beam-e5's give the same vectors."""
    from apache_beam.ml.rag.embeddings.huggingface import HuggingfaceTextEmbeddings

    texts = mixed_length_texts(12)
    items = [EmbeddableItem.from_text(t, id=f"c{i}", index=i) for i, t in enumerate(texts)]
    p = beam.Pipeline()
    for name, manager in (("beam", HuggingfaceTextEmbeddings(model_name=minilm_dir)),
                          ("e5", E5TextEmbeddings(model_name=minilm_dir))):
        out = (p | f"Create{name}" >> beam.Create(items)
               | f"Embed{name}" >> MLTransform(write_artifact_location=str(tmp_path / name))
               .with_transform(manager))
        _collect(out, tmp_path / f"out-{name}", _item_json)
    p.run().wait_until_finish()
    beam_vecs = {r["id"]: np.asarray(r["embedding"]) for r in _read(tmp_path / "out-beam")}
    e5_vecs = {r["id"]: np.asarray(r["embedding"]) for r in _read(tmp_path / "out-e5")}
    assert sorted(beam_vecs) == sorted(e5_vecs) == sorted(f"c{i}" for i in range(12))
    for cid, v in e5_vecs.items():
        w = beam_vecs[cid]
        assert float(v @ w / (np.linalg.norm(v) * np.linalg.norm(w))) >= 0.9999


# -- a Beam RAG pipeline end to end ----------------------------------------------------------

COLLECTION = "licences"


def _chunk_uuid(doc_id: str, index: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"beam-e5-test/{doc_id}/{index}"))


def _chunk_id(chunk: EmbeddableItem) -> str:
    return _chunk_uuid(chunk.metadata["doc_id"], chunk.index)


def _splitter():
    return RecursiveCharacterTextSplitter(chunk_size=400, chunk_overlap=40)


@pytest.mark.slow
def test_beam_rag_pipeline_into_qdrant_matches_beam_e5_embed(minilm_dir, tmp_path):
    paras = licence_paragraphs(60)
    docs = [{"doc_id": f"doc-{d}", "text": "\n\n".join(paras[d * 5:(d + 1) * 5])}
            for d in range(12)]
    # the existing Beam RAG pipeline's one line that changes:
    # HuggingfaceTextEmbeddings(model_name=...) -> E5TextEmbeddings(model_name=..., ...)
    embeddings = E5TextEmbeddings(minilm_dir,
                                  overrides=ProfileOverrides(passage_prefix="passage: "),
                                  max_batch_size=16)
    qdrant_dir = tmp_path / "qdrant"
    client = QdrantClient(path=str(qdrant_dir))
    client.create_collection(COLLECTION, vectors_config={"dense": models.VectorParams(
        size=384, distance=models.Distance.COSINE)})
    client.close()

    with beam.Pipeline(runner="DirectRunner") as p:
        _ = (p
             | beam.Create(docs)
             | MLTransform(write_artifact_location=str(tmp_path / "artifacts"))
             .with_transform(LangChainChunker(text_splitter=_splitter(), document_field="text",
                                              metadata_fields=["doc_id"], chunk_id_fn=_chunk_id))
             .with_transform(embeddings)
             | VectorDatabaseWriteTransform(QdrantWriteConfig(
                 connection_params=QdrantConnectionParameters.local(str(qdrant_dir)),
                 collection_name=COLLECTION, batch_size=10)))

    client = QdrantClient(path=str(qdrant_dir))
    try:
        points, _next = client.scroll(COLLECTION, limit=10_000, with_vectors=True,
                                      with_payload=True)
    finally:
        client.close()

    # the same chunks through `beam-e5 embed`
    chunks = {_chunk_uuid(d["doc_id"], i): (d["doc_id"], t)
              for d in docs for i, t in enumerate(_splitter().split_text(d["text"]))}
    assert len(chunks) > len(docs)  # the chunker did split
    corpus = tmp_path / "chunks.jsonl"
    corpus.write_text("".join(json.dumps({"id": cid, "text": t}) + "\n"
                              for cid, (_doc, t) in chunks.items()))
    out = tmp_path / "embed-out"
    assert main(["embed", "--input", str(corpus), "--output", str(out), "--model", minilm_dir,
                 "--passage-prefix", "passage: ", "--no-exact-dedupe"]) == 0
    table = pq.read_table(sorted(out.glob("vectors-*.parquet")))
    reference = dict(zip(table.column("id").to_pylist(),
                         np.stack(table.column("embedding").to_numpy(zero_copy_only=False))))
    assert sorted(reference) == sorted(chunks)

    assert sorted(str(pt.id) for pt in points) == sorted(chunks)
    cosines = []
    for pt in points:
        assert pt.payload == {"doc_id": chunks[str(pt.id)][0]}
        v = np.asarray(pt.vector["dense"], np.float32)
        ref = reference[str(pt.id)]
        cosines.append(float(v @ ref / (np.linalg.norm(v) * np.linalg.norm(ref))))
    assert min(cosines) >= 0.9999, min(cosines)
    print(f"{len(points)} chunks of {len(docs)} documents in Qdrant; min cosine to "
          f"`beam-e5 embed`: {min(cosines):.7f}")
