"""ONet (48 px): hard examples mined with PNet + RNet, and landmark crops."""

from facedata.samples import STAGE_SIZE
from facedata.stages.base import STAGES
from facedata.stages.mined import MinedStage

STAGES.register("onet")(MinedStage("onet", STAGE_SIZE["onet"]))
