"""Bayesian and batched layers for Keras 3."""

from keras_bayes.layers.batched import (
    BatchedConv1D,
    BatchedConv1DTranspose,
    BatchedConv2D,
    BatchedConv2DTranspose,
    BatchedConv3D,
    BatchedConv3DTranspose,
    BatchedDense,
    BatchedDepthwiseConv1D,
    BatchedDepthwiseConv2D,
)
from keras_bayes.layers.conv import (
    Conv1DFlipout,
    Conv1DReparameterization,
    Conv2DFlipout,
    Conv2DReparameterization,
    Conv3DFlipout,
    Conv3DReparameterization,
    Convolution1DFlipout,
    Convolution1DReparameterization,
    Convolution2DFlipout,
    Convolution2DReparameterization,
    Convolution3DFlipout,
    Convolution3DReparameterization,
)
from keras_bayes.layers.conv_transpose import (
    Conv1DTransposeFlipout,
    Conv1DTransposeReparameterization,
    Conv2DTransposeFlipout,
    Conv2DTransposeReparameterization,
    Conv3DTransposeFlipout,
    Conv3DTransposeReparameterization,
)
from keras_bayes.layers.dense import (
    DenseFlipout,
    DenseLocalReparameterization,
    DenseReparameterization,
)
from keras_bayes.layers.depthwise import (
    DepthwiseConv1DFlipout,
    DepthwiseConv1DReparameterization,
    DepthwiseConv2DFlipout,
    DepthwiseConv2DReparameterization,
)
from keras_bayes.layers.einsum_dense import (
    EinsumDenseFlipout,
    EinsumDenseRank1,
    EinsumDenseReparameterization,
)
from keras_bayes.layers.members_average import MemberAverage
from keras_bayes.layers.members_in_batch import MembersFromBatch, MembersInBatch
from keras_bayes.layers.rank1 import (
    Conv1DRank1,
    Conv1DTransposeRank1,
    Conv2DRank1,
    Conv2DTransposeRank1,
    Conv3DRank1,
    Conv3DTransposeRank1,
    DenseRank1,
)
from keras_bayes.layers.separable import (
    SeparableConv1DFlipout,
    SeparableConv1DReparameterization,
    SeparableConv2DFlipout,
    SeparableConv2DReparameterization,
)
from keras_bayes.layers.variational import VariationalLayer
