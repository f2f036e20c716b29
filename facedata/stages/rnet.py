"""RNet (24 px): hard examples mined with PNet, and landmark crops."""

from facedata.samples import STAGE_SIZE
from facedata.stages.base import STAGES
from facedata.stages.mined import MinedStage

STAGES.register("rnet")(MinedStage("rnet", STAGE_SIZE["rnet"]))
