"""The paper's four training stages (Sec. 3.4), what each trains and where it starts.

    pretrain  generator alone, MSE only, `inpaint` track      (step 1)
    gan       generator + critic, eq. (7), `inpaint` track     (step 2)
    dd        restorer alone, MSE, `restore` track (blur+noise) (step 3)
    joint     generator -> restorer end to end, critic still
              training against the generator, `joint` track   (step 4)

`gan` warm-starts its generator from `pretrain`; `joint` takes generator
and critic from `gan` and the restorer from `dd`. `dd` does not depend on
the inpainting stages and can run in parallel with them (another process,
same workdir).

Ablations of the paper's Table 2 come from the same stages: "No
pre-training" is `--stage=joint --init_from=scratch` (all networks start
from random weights); "Only GAN" is the generator after `gan`, scored
without the restorer (evaluate.py's `cascade_intermediate` row, or the
`gan` stage's own validation PSNR).
"""

from __future__ import annotations

import dataclasses

STAGES = ("pretrain", "gan", "dd", "joint")
ALL = "all"


@dataclasses.dataclass(frozen=True)
class StageSpec:
  """What one stage trains."""

  name: str
  track: str  # Corruption track of its training data (PROTOCOL.md).
  models: tuple[str, ...]  # Networks the stage builds and checkpoints.
  adversarial: bool  # Whether a critic is trained alongside (n_critic steps per step).
  warm_start: tuple[tuple[str, str], ...]  # (network, stage it is taken from).


SPECS = {
    "pretrain": StageSpec("pretrain", "inpaint", ("generator",), False, ()),
    "gan": StageSpec("gan", "inpaint", ("generator", "critic"), True,
                     (("generator", "pretrain"),)),
    "dd": StageSpec("dd", "restore", ("restorer",), False, ()),
    "joint": StageSpec("joint", "joint", ("generator", "restorer", "critic"), True,
                       (("generator", "gan"), ("critic", "gan"), ("restorer", "dd"))),
}


def stages_to_run(stage: str) -> tuple[str, ...]:
  """`all` -> the four stages in order; a single stage -> itself."""
  if stage == ALL:
    return STAGES
  if stage not in SPECS:
    raise ValueError(f"--stage={stage!r}: expected one of {STAGES + (ALL,)}.")
  return (stage,)
