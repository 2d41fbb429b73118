"""Protocol plugins (lazy registry)."""
from benchmark.registry import Registry

PROTOCOLS = Registry("protocol", entry_point_group="segbench.protocols")
PROTOCOLS.add("synthetic_parts", "protocols.synthetic_parts:SyntheticPartsProtocol",
              "landmark error, foreground IoU and Hungarian part mIoU on synthetic_parts")
