"""The workloads of the source documents, built fresh (no downloaded weights): the classic
CNN, the LSTM text model, VGG16 transfer learning, ResNet-50 and a transformer block."""

from tpusim.models.zoo import (
    bert_base_shapes,
    classic_cnn,
    lstm_text_model,
    resnet50,
    transformer_block,
    transformer_block_params,
    transformer_example,
    vgg16_transfer,
)

__all__ = ["bert_base_shapes", "classic_cnn", "lstm_text_model", "resnet50", "transformer_block", "transformer_block_params", "transformer_example", "vgg16_transfer"]
