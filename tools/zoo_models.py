"""The models of `trident zoo`: real definitions from torchvision, timm and transformers with
random weights (nothing is downloaded), each a ZooModel that builds (module, example inputs).

`tiny` builds the transformers models at hidden 32-64, 2 layers and 8 tokens (for the CPU and its
interpreter); torchvision and timm have no tiny form, and are only listed where installed.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

import torch

SEQ, TINY_SEQ, VOCAB_TINY = 128, 8, 100


@dataclass(frozen=True)
class ZooModel:
    name: str
    family: str            # torchvision | timm | transformers
    cnn: bool              # int8 is measured for CNNs
    make: Callable         # (batch, tiny) -> (module, example_inputs)

    def prepared(self, batch: int, tiny: bool) -> tuple:
        """(module in eval mode, example inputs) as the zoo runs the model: random weights, none
        all zero, BatchNorm statistics settled on the example batch."""
        module, inputs = self.make(batch, tiny)
        module.eval()
        randomize_zero_parameters(module)
        settle_batch_norm(module, inputs)
        return module.eval(), inputs


class NotAvailable(Exception):
    """The package or the model is not in this environment (a 'skipped' row, not a failure)."""


def _require(package: str):
    try:
        return importlib.import_module(package)
    except ImportError:
        raise NotAvailable(f"{package} not installed") from None


# ----------------------------------------------------------------------- torchvision ----
TORCHVISION = {  # name: (constructor, image size, constructor keywords)
    "resnet50": ("resnet50", 224, {}), "mobilenet_v3_large": ("mobilenet_v3_large", 224, {}),
    "efficientnet_b0": ("efficientnet_b0", 224, {}), "convnext_tiny": ("convnext_tiny", 224, {}),
    "densenet121": ("densenet121", 224, {}), "resnext50_32x4d": ("resnext50_32x4d", 224, {}),
    "regnet_y_1_6gf": ("regnet_y_1_6gf", 224, {}),
    "inception_v3": ("inception_v3", 299, {"aux_logits": False, "init_weights": True}),
    "shufflenet_v2_x1_0": ("shufflenet_v2_x1_0", 224, {}), "vit_b_16": ("vit_b_16", 224, {}),
    "swin_t": ("swin_t", 224, {}),
}


def _torchvision(name: str):
    ctor, size, kwargs = TORCHVISION[name]

    def make(batch: int, tiny: bool):
        models = _require("torchvision.models")
        model = getattr(models, ctor)(weights=None, **kwargs)
        return model, (torch.randn(batch, 3, size, size),)
    return make


# ----------------------------------------------------------------------------- timm ----
# PyTorch's dynamo benchmark list (benchmarks/dynamo/timm_models_list.txt), as timm names them.
TIMM = ["adv_inception_v3", "beit_base_patch16_224", "convnextv2_nano.fcmae_ft_in22k_in1k",
        "deit_base_distilled_patch16_224", "deit_tiny_patch16_224.fb_in1k", "dm_nfnet_f0",
        "ghostnet_100", "inception_v3", "mobilenetv2_100", "mobilenetv3_large_100",
        "mobilevit_s", "nfnet_l0", "repvgg_a2", "swin_base_patch4_window7_224",
        "tf_efficientnet_b0", "visformer_small", "vit_base_patch14_dinov2.lvd142m",
        "vit_base_patch16_siglip_256"]


def _timm(name: str):
    def make(batch: int, tiny: bool):
        timm = _require("timm")
        try:
            model = timm.create_model(name, pretrained=False)
        except RuntimeError as e:  # "Unknown model": renamed or newer than this timm
            raise NotAvailable(f"not available in timm {timm.__version__}: {e}") from None
        size = model.pretrained_cfg.get("input_size", (3, 224, 224))
        return model, (torch.randn(batch, *size),)
    return make


# --------------------------------------------------------------------- transformers ----
def _hf_configs(t, tiny: bool) -> dict:
    """name: (model class, config) at full size or tiny."""
    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 vocab_size=VOCAB_TINY, max_position_embeddings=64)
    if not tiny:
        return {
            "bert": (t.BertModel, t.BertConfig()), "distilbert": (t.DistilBertModel, t.DistilBertConfig()),
            "roberta": (t.RobertaModel, t.RobertaConfig()), "albert": (t.AlbertModel, t.AlbertConfig()),
            "electra": (t.ElectraModel, t.ElectraConfig()),
            "mobilebert": (t.MobileBertModel, t.MobileBertConfig()),
            "t5_encoder": (t.T5EncoderModel, t.T5Config()),
            "bart_encoder": ("bart", t.BartConfig()), "gpt2": (t.GPT2Model, t.GPT2Config()),
            "gpt2_48_layers": (t.GPT2Model, t.GPT2Config(n_layer=48)),
            "opt": (t.OPTModel, t.OPTConfig()),
            "llama": (t.LlamaModel, t.LlamaConfig(hidden_size=512, intermediate_size=1376,
                                                  num_hidden_layers=4, num_attention_heads=8,
                                                  num_key_value_heads=4, vocab_size=32000)),
        }
    return {
        "bert": (t.BertModel, t.BertConfig(**small)),
        "distilbert": (t.DistilBertModel, t.DistilBertConfig(
            dim=32, n_layers=2, n_heads=2, hidden_dim=64, vocab_size=VOCAB_TINY,
            max_position_embeddings=64)),
        "roberta": (t.RobertaModel, t.RobertaConfig(**small)),
        "albert": (t.AlbertModel, t.AlbertConfig(embedding_size=16, **small)),
        "electra": (t.ElectraModel, t.ElectraConfig(embedding_size=16, **small)),
        "mobilebert": (t.MobileBertModel, t.MobileBertConfig(
            embedding_size=16, intra_bottleneck_size=16, true_hidden_size=16,
            num_feedforward_networks=2, **small)),
        "t5_encoder": (t.T5EncoderModel, t.T5Config(d_model=32, d_kv=16, d_ff=64, num_layers=2,
                                                    num_heads=2, vocab_size=VOCAB_TINY)),
        "bart_encoder": ("bart", t.BartConfig(
            d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
            decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
            vocab_size=VOCAB_TINY, max_position_embeddings=64)),
        "gpt2": (t.GPT2Model, t.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=VOCAB_TINY,
                                           n_positions=64)),
        "gpt2_48_layers": (t.GPT2Model, t.GPT2Config(n_layer=48, n_embd=32, n_head=2,
                                                     vocab_size=VOCAB_TINY, n_positions=64)),
        "opt": (t.OPTModel, t.OPTConfig(hidden_size=32, num_hidden_layers=2, ffn_dim=64,
                                        num_attention_heads=2, vocab_size=VOCAB_TINY,
                                        max_position_embeddings=64, word_embed_proj_dim=32)),
        "llama": (t.LlamaModel, t.LlamaConfig(hidden_size=32, num_hidden_layers=2,
                                              num_attention_heads=2, num_key_value_heads=1,
                                              intermediate_size=64, vocab_size=VOCAB_TINY,
                                              max_position_embeddings=64)),
    }


class LastHidden(torch.nn.Module):
    """A transformers model as a tensor-in, tensor-out module (what both entry points compare)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        return self.model(input_ids).last_hidden_state


HF_NAMES = ["bert", "distilbert", "roberta", "albert", "electra", "mobilebert", "t5_encoder",
            "bart_encoder", "gpt2", "gpt2_48_layers", "opt", "llama"]


def _transformers(name: str):
    def make(batch: int, tiny: bool):
        t = _require("transformers")
        cls, config = _hf_configs(t, tiny)[name]
        model = t.BartModel(config).get_encoder() if cls == "bart" else cls(config)
        vocab = getattr(config, "vocab_size", VOCAB_TINY)
        ids = torch.randint(0, vocab, (batch, TINY_SEQ if tiny else SEQ),
                            generator=torch.Generator().manual_seed(0))
        return LastHidden(model), (ids,)
    return make


def all_models() -> list[ZooModel]:
    models = [ZooModel(f"torchvision/{n}", "torchvision", True, _torchvision(n)) for n in TORCHVISION]
    models += [ZooModel(f"timm/{n}", "timm", True, _timm(n)) for n in TIMM]
    models += [ZooModel(f"transformers/{n}", "transformers", False, _transformers(n))
               for n in HF_NAMES]
    return models


def settle_batch_norm(model: torch.nn.Module, inputs: tuple) -> None:
    """One train-mode pass over the example batch sets BatchNorm's running statistics (random
    init's 0 / 1 lets activations grow layer after layer until fp16 overflows in torch itself)."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:  # momentum None: a cumulative average, so one pass sets the batch's statistics
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        model(*inputs)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum


def randomize_zero_parameters(model: torch.nn.Module, std: float = 0.02) -> list[str]:
    """Gives every all-zero parameter small random values, and returns their names. Some
    definitions zero-initialise a layer (torchvision ViT's classifier head, ConvNeXt-V2's GRN
    scale and shift): with random weights the model's output, or a branch of it, is then exactly
    zero, and a relative error against it measures nothing."""
    names = []
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.is_floating_point() and param.numel() > 0 and not param.any():
                param.copy_(torch.randn(param.shape, generator=generator) * std)
                names.append(name)
    return names


__all__ = ["ZooModel", "NotAvailable", "all_models", "settle_batch_norm", "LastHidden",
           "randomize_zero_parameters"]
