"""Dataset plugins (lazy registry: listing them imports nothing heavy)."""
from benchmark.registry import Registry

DATASETS = Registry("dataset", entry_point_group="segbench.datasets")
DATASETS.add("synthetic_parts", "datasets.synthetic_parts:SyntheticParts",
             "embedded procedural articulated figures with part/mask/landmark ground truth")
