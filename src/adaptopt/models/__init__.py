"""Models of the paper's experiments (SPEC.md §4)."""

from adaptopt.models.awd_lstm import AWDLSTM
from adaptopt.models.cnn import MnistCNN
from adaptopt.models.gpt import GPT, GPTConfig
from adaptopt.models.resnet import CifarResNet
from adaptopt.models.transformer import Seq2SeqTransformer, TransformerLM

__all__ = [
    "AWDLSTM",
    "GPT",
    "CifarResNet",
    "GPTConfig",
    "MnistCNN",
    "Seq2SeqTransformer",
    "TransformerLM",
]
