"""trident.models"""
from trident.compiler import config as _config  # noqa: F401

# Models for the tests, the benchmarks and the bundled example, in plain torch. Each entry is
# name -> (constructor, example_input_fn): constructor() gives the model in eval mode with
# deterministic weights; example_input_fn(batch, **kw) gives a tuple of fresh random inputs
# (keywords: size= for images, seq= / with_mask= for BERT, dtype= for all).
from functools import partial

from trident.models.bert import (BERT_BASE_VOCAB, BERT_TINY_VOCAB, BertEncoder, bert_base,
                                 bert_tiny, token_inputs)
from trident.models.mlp import feature_inputs, mlp, mlp_gelu
from trident.models.multibranch import InceptionNet, MultiHead, inception_tiny, multihead
from trident.models.resnet import ResNet, image_inputs, resnet50, resnet_tiny

MODELS = {
    "resnet50": (resnet50, partial(image_inputs, size=224)),
    "resnet_tiny": (resnet_tiny, partial(image_inputs, size=32)),
    "bert_base": (bert_base, partial(token_inputs, seq=128, vocab=BERT_BASE_VOCAB)),
    "bert_tiny": (bert_tiny, partial(token_inputs, seq=16, vocab=BERT_TINY_VOCAB)),
    "mlp": (mlp, partial(feature_inputs, features=64)),
    "mlp_gelu": (mlp_gelu, partial(feature_inputs, features=64)),
    "inception_tiny": (inception_tiny, partial(image_inputs, size=32)),
    "multihead": (multihead, partial(feature_inputs, features=64)),
}

__all__ = ["MODELS", "BertEncoder", "InceptionNet", "MultiHead", "ResNet", "bert_base",
           "bert_tiny", "image_inputs", "inception_tiny", "mlp", "mlp_gelu", "multihead",
           "resnet50", "resnet_tiny", "token_inputs", "feature_inputs"]
