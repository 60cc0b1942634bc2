"""The task's tokenizer: byte-level BPE trained on the task's text, every digit its own token.

Single-digit tokens keep each arithmetic step local (one digit in, one digit out); words and punctuation merge.
The chat template, end-of-text and turn tokens are those of `multiverse.tiny`, the structure tags are added.
"""
from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from multiverse.tags import TAGS
from multiverse.tiny import CHAT_TEMPLATE, EOS, IM_END, IM_START


def task_tokenizer(corpus: list[str], vocab_size: int = 320) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS)
    hf.chat_template = CHAT_TEMPLATE
    hf.add_tokens(list(TAGS), special_tokens=True)
    return hf
