"""Build a tiny random-init Llama and a BPE tokenizer trained on local text.

For tests, demos and benchmarks that must run offline on a CPU: nothing is
downloaded. The tokenizer uses Llama-3's special tokens and a Llama-3-style chat
template, so the host's stock ``model=Llama-3.2-1B-Instruct`` config applies with
only the paths overridden.

    python -m gru_plugin.tiny_model OUT_DIR --data DIR_WITH_TOFU_JSON
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

BOS, EOS, PAD = "<|begin_of_text|>", "<|eot_id|>", "<|pad|>"
SPECIAL_TOKENS = [
    BOS,
    EOS,
    PAD,
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|end_of_text|>",
]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{{ message['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}"
    "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
TEXT_FILES = ("full.json", "real_authors.json", "world_facts.json")


def iter_texts(data_dir: Path) -> Iterator[str]:
    """Questions and answers of the TOFU-style JSON-lines files in ``data_dir``."""
    for name in TEXT_FILES:
        path = data_dir / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                yield f"{row['question']} {row['answer']}"


def build_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer with Llama-3's special tokens."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    bos_id = tokenizer.token_to_id(BOS)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        chat_template=CHAT_TEMPLATE,
        model_max_length=512,
    )


def build_model(
    tokenizer,
    hidden: int,
    layers: int,
    seed: int,
    *,
    intermediate: int | None = None,
    heads: int = 4,
    kv_heads: int = 2,
    vocab_size: int | None = None,
    device: str = "cpu",
):
    """A random-init Llama sized for a 2-core CPU, or (the keywords) any Llama shape;
    ``vocab_size`` may exceed the tokenizer's (rows it never uses)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=max(vocab_size or 0, len(tokenizer)),
        hidden_size=hidden,
        intermediate_size=intermediate or 2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.device(device):  # random init of 1 B parameters is slow on a CPU
        return LlamaForCausalLM(config)


def make_tiny_model(
    out_dir: str | Path,
    data_dir: str | Path,
    vocab_size: int = 1024,
    hidden: int = 64,
    layers: int = 4,
    seed: int = 0,
) -> Path:
    """Write model and tokenizer to ``out_dir`` (``save_pretrained`` layout)."""
    out_dir = Path(out_dir)
    texts = list(iter_texts(Path(data_dir)))
    if not texts:
        raise FileNotFoundError(
            f"no TOFU text in {data_dir}: expected some of {list(TEXT_FILES)}"
        )
    tokenizer = build_tokenizer(texts, vocab_size)
    model = build_model(tokenizer, hidden, layers, seed)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--data", required=True, help="folder with TOFU json files")
    parser.add_argument("--vocab-size", type=int, default=1024)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = make_tiny_model(
        args.out_dir, args.data, args.vocab_size, args.hidden, args.layers, args.seed
    )
    print(path)


if __name__ == "__main__":
    main()
