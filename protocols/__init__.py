"""Protocol plugins (lazy registry)."""
from segbench.benchmark.registry import Registry

PROTOCOLS = Registry("protocol", entry_point_group="segbench.protocols")
PROTOCOLS.add("synthetic_parts", "segbench.protocols.synthetic_parts:SyntheticPartsProtocol",
              "landmark error, foreground IoU and Hungarian part mIoU on synthetic_parts")
PROTOCOLS.add("cub_photos_fid", "segbench.protocols.fid:CubPhotosFid",
              "FID of generated samples vs the 5,902 real CUB photos (offline TF-Inception)")
PROTOCOLS.add("pascal_s", "segbench.protocols.pascal_s:PascalSProtocol",
              "saliency accuracy / IoU / max F-beta and foreground IoU on 850 PASCAL-S images")
PROTOCOLS.add("faces_wild", "segbench.protocols.faces_wild:FacesWildProtocol",
              "wild-CelebA landmark regression (K=8) on 3,462 real faces, identity-disjoint test")
PROTOCOLS.add("celeba_wild", "segbench.protocols.celeba:CelebAWildProtocol",
              "GANSeg Tab.1 wild CelebA landmark regression error (K=8; K=4 via --set num_parts=4)")
PROTOCOLS.add("celeba_aligned", "segbench.protocols.celeba:CelebAAlignedProtocol",
              "GANSeg Tab.1 aligned CelebA landmark regression error (K=10)")
PROTOCOLS.add("cub_fg", "segbench.protocols.foreground:CubForegroundProtocol",
              "GANSeg Tab.2 CUB foreground IoU (K=8; --option iou=ganseg|redo|melas)")
PROTOCOLS.add("flowers_fg", "segbench.protocols.foreground:FlowersForegroundProtocol",
              "GANSeg Tab.2 Flowers foreground IoU (K=8; --option iou=ganseg|redo|melas)")
PROTOCOLS.add("cub_kp", "segbench.protocols.cub_kp:CubKeypointProtocol",
              "GANSeg Sec.4.4 CUB keypoints (Lorenz protocol): error / image edge (K=8)")
PROTOCOLS.add("taichi", "segbench.protocols.taichi:TaichiProtocol",
              "GANSeg Tab.3 Taichi keypoint MAE (sum of 36 per-axis MAEs) and foreground IoU (K=10)")
for _dataset in ("celeba_wild", "cub", "flowers", "taichi"):
    PROTOCOLS.add(f"fid_{_dataset}", f"segbench.protocols.fid:{''.join(p.title() for p in _dataset.split('_'))}Fid",
                  f"FID of samples vs the {_dataset} GAN-training images (GANSeg supp. §C: fid50k)")
