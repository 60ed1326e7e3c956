"""A .litertlm bundle: the prefill/decode .tflite, its tokenizer.json and the LLM metadata in one file, what
LiteRT-LM's runtime (litert-lm-api, or the litert_lm_main binary) loads. Written with Google's litert-lm-builder
(installed with litert-quantizer); no TensorFlow.

The metadata says the start token (<bos>), the stop token (<eos>) and the context (max_num_tokens); the model is
declared a generic model, so the runtime applies no chat template of its own.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from edgecompress.errors import UserError
from edgecompress.fileio import atomic_path, check_output
from edgecompress.text.bpe import BOS, EOS, load_tokenizer


def write_litertlm(tflite: str | Path, tokenizer: str | Path, output: str | Path, context: int,
                   force: bool = False) -> Path:
    try:
        from litert_lm_builder import litertlm_builder as builder_api
        from litert_lm_builder import litertlm_core
        from litert_lm_builder.runtime.proto import llm_metadata_pb2
    except ImportError:
        raise UserError("a .litertlm bundle needs litert-lm-builder: pip install 'edgecompress[quantize]'") from None
    out = check_output(output, force)
    words = load_tokenizer(tokenizer)
    metadata = llm_metadata_pb2.LlmMetadata()
    metadata.start_token.token_ids.ids.append(words.vocab[BOS])
    metadata.stop_tokens.add().token_ids.ids.append(words.vocab[EOS])
    metadata.max_num_tokens = context
    metadata.llm_model_type.generic_model.SetInParent()
    with tempfile.TemporaryDirectory(prefix="edgecompress-litertlm-") as folder:
        meta = Path(folder) / "llm_metadata.pb"
        meta.write_bytes(metadata.SerializeToString())
        bundle = builder_api.LitertLmFileBuilder()
        bundle.add_system_metadata(builder_api.Metadata(key="Authors", value="edgecompress",
                                                        dtype=builder_api.DType.STRING))
        bundle.add_tflite_model(str(tflite), builder_api.TfLiteModelType.PREFILL_DECODE)
        bundle.add_hf_tokenizer(str(tokenizer))
        bundle.add_llm_metadata(str(meta))
        with atomic_path(out) as temporary:
            with litertlm_core.open_file(str(temporary), "wb") as fh:
                bundle.build(fh)
    return out
