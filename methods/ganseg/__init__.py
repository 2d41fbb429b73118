"""GANSeg: hierarchical point -> mask -> image GAN and a segmenter trained on its pairs
(He, Wandt, Rhodin, CVPR 2022). The plugin class is ``methods.ganseg.method:GANSeg``."""
