"""Dataset plugins (lazy registry: listing them imports nothing heavy)."""
from segbench.benchmark.registry import Registry

DATASETS = Registry("dataset", entry_point_group="segbench.datasets")
DATASETS.add("synthetic_parts", "segbench.datasets.synthetic_parts:SyntheticParts",
             "embedded procedural articulated figures with part/mask/landmark ground truth")
DATASETS.add("faces_wild", "segbench.datasets.faces_wild:FacesWild",
             "3,462 real in-the-wild faces with 5 landmarks, identity-disjoint fit/test (../shared/data)")
DATASETS.add("pascal_s", "segbench.datasets.pascal_s:PascalS", "850 PASCAL-S images with salient-object masks (../shared/data)")
DATASETS.add("cub_photos", "segbench.datasets.cub_photos:CubPhotos", "5,902 real CUB bird photos, no masks (../shared/data)")
DATASETS.add("celeba_wild", "segbench.datasets.celeba:CelebAWild",
             "CelebA in the wild (official layout): face-area >= 0.3 filter, MAFL splits 45,609/5,379/283")
DATASETS.add("celeba_aligned", "segbench.datasets.celeba:CelebAAligned",
             "aligned CelebA (official layout): celebA_training 161,962 / MAFL 19,000 / 1,000")
DATASETS.add("cub", "segbench.datasets.cub:CUB",
             "CUB-200-2011 (official layout): ReDO split 10,000/788/1,000, masks, 15 part locations")
DATASETS.add("flowers", "segbench.datasets.flowers:Flowers",
             "Oxford 102 Flowers (official layout): setid.mat tstid 6,149 train / trnid 1,020 test, segmim masks")
DATASETS.add("taichi", "segbench.datasets.taichi:Taichi",
             "Tai-Chi-HD: GAN frames train/<video>/, 5,000/300 keypoint frames (pickles), 300 test masks")
