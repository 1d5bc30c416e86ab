"""The linear maps behind the layers: convolution, transposed convolution,
depthwise convolution, dense and einsum.

A map holds a layer's validated geometry and knows everything about shapes
and members; layers pair a map with an estimator (Bayesian layers) or with
plain weights (batched layers).
"""

from keras_bayes.layers.maps.base import LinearMap, map_property
from keras_bayes.layers.maps.conv import ConvMap
from keras_bayes.layers.maps.conv_transpose import ConvTransposeMap
from keras_bayes.layers.maps.dense import DenseMap
from keras_bayes.layers.maps.depthwise import DepthwiseMap
from keras_bayes.layers.maps.einsum import EinsumMap
from keras_bayes.layers.maps.pointwise import PointwiseMap
