"""Sample media built from public-domain photographs that ship inside installed packages.

``generate_samples`` writes real and manipulated (self-blended, face-swapped) H.264 videos
plus a manifest; ``faces`` lists every source photograph and its credit.
"""

from server.samples.faces import CREDITS, SourcePhoto, load_backgrounds, load_lfw_donors, load_photos
from server.samples.generate import generate_samples

__all__ = ["CREDITS", "SourcePhoto", "generate_samples", "load_backgrounds", "load_lfw_donors", "load_photos"]
