"""Method plugins. Registering a method is one line here (lazy: nothing is imported).

Outside packages register through the ``segbench.methods`` entry-point group, e.g. in
their pyproject.toml::

    [project.entry-points."segbench.methods"]
    my_method = "my_package.module:MyMethod"
"""
from segbench.benchmark.registry import Registry

METHODS = Registry("method", entry_point_group="segbench.methods")
METHODS.add("centre_prior", "segbench.methods.baselines:CentrePrior",
            "image-independent part layout around the image centre (mean-shape floor)")
METHODS.add("dummy", "segbench.methods.baselines:Dummy",
            "random part probabilities; exercises the whole pipeline")
METHODS.add("ganseg", "segbench.methods.ganseg.method:GANSeg",
            "He et al. CVPR 2022: hierarchical point->mask->image GAN, segmenter on its pairs")
METHODS.add("liu_parts", "segbench.methods.liu_parts.method:LiuParts",
            "Liu et al. CVPR 2021: appearance/shape disentangling part segmenter")
METHODS.add("latent_direction", "segbench.methods.latent_direction.method:LatentDirection",
            "Melas-Kyriazi et al. 2022: relighting latent directions of a generator -> masks -> UNet (K=1)")
