"""scripts/table2.py: the Table 2 variants' budgets and train.py calls (its end-to-end run is
the one documented in docs/results.md)."""

import pytest

from cascade_tf import config
from scripts import table2

SPLIT = {"pretrain": 0.4, "gan": 0.2, "dd": 0.2, "joint": 0.2}


@pytest.mark.parametrize("variant,stages", [("intact", ["pretrain", "gan", "dd", "joint"]),
                                            ("only_gan", ["pretrain", "gan"]),
                                            ("no_pretrain", ["joint"])])
def test_every_variant_sees_the_same_images(variant, stages):
  budgets = table2.stage_budgets(variant, 60001, SPLIT)
  assert list(budgets) == stages
  assert sum(budgets.values()) == 60001
  if variant == "only_gan":  # pretrain : gan as in intact.
    assert budgets["pretrain"] == pytest.approx(2 * budgets["gan"], abs=2)


def test_split_is_checked():
  assert table2.parse_split(["pretrain:0.5", "gan:0.1", "dd:0.2", "joint:0.2"])["gan"] == 0.1
  for bad in (["pretrain:0.5"], ["pretrain:0.5", "gan:0.5", "dd:0.5", "joint:0.5"],
              ["pretrain:x", "gan:0.2", "dd:0.2", "joint:0.6"], ["warm:1"]):
    with pytest.raises(ValueError, match="--split"):
      table2.parse_split(bad)


def test_critic_images_count_n_critic_batches_per_adversarial_step():
  cfg = config.with_overrides(config.tiny(), {"train.n_critic": 5, "train.batch_size": 4})
  assert table2.critic_images(cfg, "gan", 10) == 3 * 5 * 4  # 3 steps of batch 4.
  assert table2.critic_images(cfg, "dd", 10) == 0


def test_train_commands_pass_budget_seed_workdir_and_scratch():
  commands = table2.train_commands("/r/no_pretrain_s1", "no_pretrain", "1", {"joint": 100},
                                   ["--preset=cpu"])
  [command] = commands
  assert command[1].endswith("train.py") and "--preset=cpu" in command
  assert {"--workdir=/r/no_pretrain_s1", "--seed=1", "--stage=joint",
          "--set=train.joint_images=100", "--init_from=scratch"} <= set(command)
  intact = table2.train_commands("/r/i", "intact", "0", {"pretrain": 1, "gan": 1}, [])
  assert [c[-1] for c in intact] == ["--set=train.pretrain_images=1", "--set=train.gan_images=1"]


def test_training_flags_must_be_name_value():
  cfg = table2._config(["--preset=tiny", "--set=train.n_critic=3"])
  assert cfg.train.n_critic == 3 and cfg.preset == "tiny"
  with pytest.raises(ValueError, match="--name=value"):
    table2._config(["--preset", "tiny"])
