"""PNet (12 px): IoU crops sampled around the faces, from geometry alone, and landmark crops."""

from facedata.samples import STAGE_SIZE
from facedata.stages.base import STAGES, Stage

STAGES.register("pnet")(Stage("pnet", STAGE_SIZE["pnet"]))
