"""The latent-direction segmenter (Melas-Kyriazi et al., ICLR 2022); see ``method.py``."""
