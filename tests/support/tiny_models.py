"""Tiny, randomly initialised models of real families, in the exact layouts the real ones ship in:
what the tests (and the examples test) serve where the real model is too large for this machine.

- a BERT sentence-transformers folder (CLS or mean pooling, Normalize), like BAAI/bge-small-en-v1.5,
  optionally with the ONNX export Hub repositories ship beside it (``onnx/model.onnx``, token states);
- a BERT sequence classifier with labels, like a sentiment model;
- an XLM-RoBERTa cross-encoder (one score, a Unigram tokenizer), like BAAI/bge-reranker-base;
- an ONNX image classifier with its preprocessing contract and labels, like resnet50 exported;
- a TorchScript detector with YOLOv8's tensors ([N, 3, 640, 640] -> [N, 84, 8400]).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

__all__ = ["WORDS", "export_token_states", "write_bert_classifier", "write_onnx_classifier", "write_onnx_tensors",
           "write_sentence_bert", "write_tiny_llama", "write_xlmr_cross_encoder", "write_yolo_torchscript"]

_TEXT = ("the a an of to and in is it that for on with as gpu gpus slice mig model models inference "
         "batch cost cheap fast slow hello world quick brown fox jumps over lazy dog cat embedding "
         "sentence text kernel worker pool queue latency price memory good bad great terrible")
WORDS = _TEXT.split()
_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _bert_tokenizer(directory: Path) -> int:
    from transformers import PreTrainedTokenizerFast

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab_list = _SPECIAL + list(dict.fromkeys(WORDS + letters + [f"##{c}" for c in letters] + list(".,!?")))
    vocab = {t: i for i, t in enumerate(vocab_list)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tok.decoder = decoders.WordPiece()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=64)
    fast.save_pretrained(str(directory))
    return len(vocab)


def _bert_config(vocab_size: int, **extra: object) -> object:
    from transformers import BertConfig

    return BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=64, **extra)


def write_sentence_bert(directory: Path, *, pooling: str = "cls", normalize: bool = True, seed: int = 0) -> Path:
    """A sentence-transformers folder (sentence-transformers 2-5 layout, which 6.x also reads)."""
    from transformers import BertModel

    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    vocab = _bert_tokenizer(directory)
    BertModel(_bert_config(vocab)).eval().save_pretrained(str(directory))
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (directory / "2_Normalize").mkdir(exist_ok=True)
    (directory / "modules.json").write_text(json.dumps(modules, indent=2))
    (directory / "1_Pooling").mkdir(exist_ok=True)
    flags = {"pooling_mode_cls_token": pooling == "cls", "pooling_mode_mean_tokens": pooling == "mean",
             "pooling_mode_max_tokens": pooling == "max", "pooling_mode_mean_sqrt_len_tokens": False}
    (directory / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, **flags}))
    (directory / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64, "do_lower_case": True}))
    return directory


def export_token_states(directory: Path) -> Path:
    """``onnx/model.onnx`` for the BERT folder at ``directory``, as Hub sentence-transformers
    repositories ship it (what Optimum's export writes): the graph takes input_ids, attention_mask
    and token_type_ids and returns the token states (``last_hidden_state``); pooling is the server's."""
    import warnings

    from transformers import BertModel

    bert = BertModel.from_pretrained(str(directory), attn_implementation="eager").eval()

    class TokenStates(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    token_type_ids: torch.Tensor) -> torch.Tensor:
            return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids).last_hidden_state

    ids = torch.tensor([[2, 5, 6, 3], [2, 7, 3, 0]])
    mask = (ids != 0).long()
    (directory / "onnx").mkdir(exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter is deprecated, and what Optimum used
        torch.onnx.export(TokenStates(), (ids, mask, torch.zeros_like(ids)), str(directory / "onnx" / "model.onnx"),
                          input_names=["input_ids", "attention_mask", "token_type_ids"],
                          output_names=["last_hidden_state"], opset_version=17, dynamo=False,
                          dynamic_axes={n: {0: "batch", 1: "tokens"} for n in
                                        ("input_ids", "attention_mask", "token_type_ids", "last_hidden_state")})
    return directory / "onnx" / "model.onnx"


def write_bert_classifier(directory: Path, labels: tuple[str, ...] = ("negative", "positive"), seed: int = 0) -> Path:
    from transformers import BertForSequenceClassification

    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    vocab = _bert_tokenizer(directory)
    config = _bert_config(vocab, num_labels=len(labels), id2label=dict(enumerate(labels)),
                          label2id={label: i for i, label in enumerate(labels)})
    BertForSequenceClassification(config).eval().save_pretrained(str(directory))
    return directory


def write_xlmr_cross_encoder(directory: Path, seed: int = 0) -> Path:
    """XLMRobertaForSequenceClassification with one label and a Unigram (SentencePiece-style)
    tokenizer: bge-reranker-base's family and layout, 2 layers of 32."""
    from transformers import PreTrainedTokenizerFast, XLMRobertaConfig, XLMRobertaForSequenceClassification

    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    pieces = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("▁" + w, -2.0) for w in WORDS] + [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz.,!?"]
    pieces += [("▁", -3.0), ("<mask>", 0.0)]
    tok = Tokenizer(models.Unigram(pieces, unk_id=3))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                            pad_token="<pad>", cls_token="<s>", sep_token="</s>", mask_token="<mask>",
                            model_max_length=64).save_pretrained(str(directory))
    config = XLMRobertaConfig(vocab_size=len(pieces), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=64, max_position_embeddings=66, num_labels=1, pad_token_id=1,
                              bos_token_id=0, eos_token_id=2, id2label={0: "LABEL_0"}, label2id={"LABEL_0": 0})
    XLMRobertaForSequenceClassification(config).eval().save_pretrained(str(directory))
    return directory


def write_onnx_classifier(directory: Path, *, classes: int = 10, size: int = 224, seed: int = 0) -> Path:
    """Conv -> ReLU -> global pool -> Gemm, float32 NCHW [N, 3, size, size] -> logits [N, classes],
    with ImageNet normalization declared in preprocessor_config.json and labels in config.json."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    conv_w = numpy_helper.from_array(rng.standard_normal((8, 3, 7, 7)).astype(np.float32) * 0.1, "conv_w")
    fc_w = numpy_helper.from_array(rng.standard_normal((8, classes)).astype(np.float32), "fc_w")
    fc_b = numpy_helper.from_array(rng.standard_normal((classes,)).astype(np.float32) * 0.1, "fc_b")
    nodes = [helper.make_node("Conv", ["pixel_values", "conv_w"], ["c"], strides=[4, 4], pads=[3, 3, 3, 3]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]), helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"])]
    graph = helper.make_graph(
        nodes, "tiny_resnet", [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT,
                                                             ["batch", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])], [conv_w, fc_w, fc_b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(directory / "model.onnx"))
    (directory / "preprocessor_config.json").write_text(json.dumps({
        "do_resize": True, "size": {"shortest_edge": int(size * 256 / 224)}, "do_center_crop": True,
        "crop_size": {"height": size, "width": size}, "do_rescale": True, "rescale_factor": 1 / 255,
        "do_normalize": True, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}))
    (directory / "config.json").write_text(json.dumps({"id2label": {str(i): f"class_{i}" for i in range(classes)}}))
    return directory


def write_onnx_tensors(path: Path) -> Path:
    """y = x @ W + b with a symbolic batch: the graph's own metadata, no task."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    path.parent.mkdir(parents=True, exist_ok=True)
    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3), "w")
    b = numpy_helper.from_array(np.ones(3, dtype=np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["scores"])],
        "affine", [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", 3])], [w, b])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def write_tiny_llama(directory: Path, seed: int = 0) -> Path:
    """A 2-layer LlamaForCausalLM in the Hugging Face layout Llama-3.1 ships in (config.json,
    model.safetensors, generation_config.json), with a byte-level BPE tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    vocab = {"<|begin_of_text|>": 0, "<|end_of_text|>": 1, **{chr(c): 2 + i for i, c in enumerate(range(97, 123))}}
    tok = Tokenizer(models.BPE(vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>",
                            eos_token="<|end_of_text|>").save_pretrained(str(directory))
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    LlamaForCausalLM(config).eval().save_pretrained(str(directory))
    return directory


class _TinyYolo(torch.nn.Module):
    """Three strided heads whose cells flatten to YOLOv8's 8400 anchors (80x80 + 40x40 + 20x20)."""

    def __init__(self) -> None:
        super().__init__()
        self.p3 = torch.nn.Conv2d(3, 84, kernel_size=8, stride=8)
        self.p4 = torch.nn.Conv2d(3, 84, kernel_size=16, stride=16)
        self.p5 = torch.nn.Conv2d(3, 84, kernel_size=32, stride=32)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        heads = [self.p3(images).flatten(2), self.p4(images).flatten(2), self.p5(images).flatten(2)]
        return torch.cat(heads, dim=2).sigmoid()


def write_yolo_torchscript(directory: Path, seed: int = 0) -> Path:
    from gpupool_worker.engine.models.tensor_program import torchscript_allowed

    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    with torchscript_allowed():
        torch.jit.script(_TinyYolo().eval()).save(str(directory / "model.pt"))  # type: ignore[no-untyped-call]
    return directory
