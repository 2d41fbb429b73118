"""Liu et al. CVPR 2021: unsupervised part segmentation by disentangling appearance and shape.
The plugin class is ``methods.liu_parts.method:LiuParts``."""
