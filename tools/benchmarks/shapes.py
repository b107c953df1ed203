"""The problem shapes the benchmarks and sweeps share."""

# (C, H=W, OC, kernel, stride, pad, times used in the network) for every distinct ResNet-50 (v1.5) conv.
# ConvNeXt-T's 7x7 depthwise convs: (channels, input size at 224 px, blocks using it)
CONVNEXT_T_DEPTHWISE = [(96, 56, 3), (192, 28, 3), (384, 14, 9), (768, 7, 3)]

RESNET50_CONVS = [
    (3, 224, 64, 7, 2, 3, 1),
    (64, 56, 64, 1, 1, 0, 1), (64, 56, 64, 3, 1, 1, 3), (64, 56, 256, 1, 1, 0, 4), (256, 56, 64, 1, 1, 0, 2),
    (256, 56, 128, 1, 1, 0, 1), (128, 56, 128, 3, 2, 1, 1), (128, 28, 512, 1, 1, 0, 4), (256, 56, 512, 1, 2, 0, 1),
    (512, 28, 128, 1, 1, 0, 3), (128, 28, 128, 3, 1, 1, 3),
    (512, 28, 256, 1, 1, 0, 1), (256, 28, 256, 3, 2, 1, 1), (256, 14, 1024, 1, 1, 0, 6), (512, 28, 1024, 1, 2, 0, 1),
    (1024, 14, 256, 1, 1, 0, 5), (256, 14, 256, 3, 1, 1, 5),
    (1024, 14, 512, 1, 1, 0, 1), (512, 14, 512, 3, 2, 1, 1), (512, 7, 2048, 1, 1, 0, 3), (1024, 14, 2048, 1, 2, 0, 1),
    (2048, 7, 512, 1, 1, 0, 2), (512, 7, 512, 3, 1, 1, 2),
]

SQUARE_GEMM = (8192, 8192, 8192)

# BERT-base's linear layers as (N, K) per token row: QKV, out-proj, FFN up, FFN down.
BERT_GEMMS = [(2304, 768), (768, 768), (3072, 768), (768, 3072)]

# M x N x K of BERT-base's linear layers at batch 32, seq 128 (QKV / out-proj, FFN up, FFN down).
TRANSFORMER_GEMMS = [(4096, 768, 768), (4096, 3072, 768), (4096, 768, 3072)]
