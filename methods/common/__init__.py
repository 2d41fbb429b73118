"""Components shared by several method plugins.

``pairs``: the ``PairSource`` protocol for (image, label) pairs streamed from a generator.
``segmenter``: building, training (resumable) and running a supervised segmenter on such pairs
(DeepLabV3-ResNet50 for GANSeg, the UNet of Melas-Kyriazi et al. for the latent-direction method).
``unet``: that UNet.
"""
