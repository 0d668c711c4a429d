"""stages.build_stage and training/objectives.py: the backend-neutral wiring of every stage."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from cascade_tf import config as config_lib
from cascade_tf import losses
from cascade_tf.models import cascade as cascade_lib
from cascade_tf.training import objectives
from cascade_tf.training import stages

SMALL = {"loss.lambda_per": 0.0, "generator.num_levels": 2, "generator.num_res_blocks": 1,
         "restorer.num_encode": 2, "restorer.num_decode": 2, "critic.convs_per_group": "1,1"}


@pytest.fixture(scope="module")
def cfg():
  return config_lib.with_overrides(config_lib.tiny(), SMALL)


def _batch(seed=0):
  rng = np.random.default_rng(seed)
  return {k: tf.constant(rng.uniform(0, 1, (2, 32, 32, 3)).astype("float32"))
          for k in ("corrupted", "clean")}


@pytest.mark.parametrize("stage, trained, critic, outputs", [
    ("pretrain", ["generator"], False, ["inpainted"]),
    ("gan", ["generator"], True, ["inpainted"]),
    ("dd", ["restorer"], False, ["restored"]),
    ("joint", ["generator", "restorer"], True, ["inpainted", "restored"]),
])
def test_build_stage_wires_each_stage(cfg, stage, trained, critic, outputs):
  wired = stages.build_stage(cfg, stage, global_batch_size=2)
  assert sorted(wired.nets) == sorted(stages.SPECS[stage].models)
  assert [wired.nets[name] for name in trained] == list(wired.main.trained)
  assert wired.main.optimizer == "optimizer" and wired.main.clip is None
  assert len(wired.main.variables) == sum(len(wired.nets[n].trainable_variables) for n in trained)
  if critic:
    assert [u.name for u in wired.updates] == ["critic", "main"]
    assert wired.critic.trained == (wired.nets["critic"],)
    assert wired.critic.clip == cfg.train.clip and wired.critic.optimizer == "critic_optimizer"
  else:
    assert wired.critic is None and [u.name for u in wired.updates] == ["main"]
  batch = _batch()
  assert list(wired.outputs(objectives.model_inputs(batch)[0])) == outputs
  total, terms = wired.main.objective(batch)
  assert np.isfinite(float(total)) and "total" not in terms


def test_reconstruction_objective_is_eq1_on_the_final_output(cfg):
  wired = stages.build_stage(cfg, "dd", global_batch_size=4)  # Twice the batch: halves the mean.
  batch = _batch(1)
  total, terms = wired.main.objective(batch)
  restorer = wired.nets["restorer"]
  restored = restorer(batch["corrupted"] * 2 - 1, training=True)
  expected = np.mean((restored.numpy() - (batch["clean"].numpy() * 2 - 1)) ** 2) / 2
  assert float(total) == float(terms["mse"]) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("loss, term, per_image", [
    ("l1", "l1", lambda error: np.mean(np.abs(error), axis=(1, 2, 3))),
    # Minus the PSNR on the [0, 1] scale (errors on [-1, 1] are twice as large).
    ("psnr", "neg_psnr", lambda error: 10 * np.log10(
        np.mean(error**2, axis=(1, 2, 3)) / 4 + losses.NEG_PSNR_FLOOR)),
])
def test_other_reconstruction_losses_are_optimised_and_mse_logged(cfg, loss, term, per_image):
  other_cfg = config_lib.with_overrides(cfg, {"loss.reconstruction": loss})
  wired = stages.build_stage(other_cfg, "dd", global_batch_size=2)
  batch = _batch(1)
  total, terms = wired.main.objective(batch)
  restored = wired.nets["restorer"](batch["corrupted"] * 2 - 1, training=True).numpy()
  error = restored - (batch["clean"].numpy() * 2 - 1)
  assert float(total) == float(terms[term]) == pytest.approx(np.mean(per_image(error)), rel=1e-5)
  assert float(terms["mse"]) == pytest.approx(np.mean(error**2), rel=1e-5)


def test_unknown_reconstruction_loss_is_refused(cfg):
  with pytest.raises(ValueError, match="loss.reconstruction='ssim'"):
    config_lib.with_overrides(cfg, {"loss.reconstruction": "ssim"})


@pytest.mark.parametrize("optimizer,decay", [("rmsprop", "constant"), ("adam", "cosine")])
def test_new_optimizer_follows_the_config_and_the_critic_keeps_rmsprop(cfg, optimizer, decay):
  c = config_lib.with_overrides(cfg, {"train.optimizer": optimizer, "train.lr_decay": decay,
                                      "train.joint_lr": 1e-3, "train.joint_steps": 10})
  main, critic = (stages.new_optimizer(c, "joint", u) for u in ("main", "critic"))
  assert isinstance(critic, keras.optimizers.RMSprop)
  assert float(critic.learning_rate) == pytest.approx(1e-3)
  assert isinstance(main, {"rmsprop": keras.optimizers.RMSprop,
                           "adam": keras.optimizers.Adam}[optimizer])
  if decay == "cosine":
    rates = []
    for step in (0, 5, 10):
      main.iterations.assign(step)
      rates.append(float(main.learning_rate))
    assert rates == pytest.approx([1e-3, 5e-4, 0.0], abs=1e-9)
  else:
    assert float(main.learning_rate) == pytest.approx(1e-3)


def test_per_stage_batch_sizes(cfg):
  c = config_lib.with_overrides(cfg, {"train.batch_size": 4, "train.dd_batch_size": 2})
  assert [c.stage_batch_size(s) for s in config_lib.STAGES] == [4, 4, 2, 4]
  with pytest.raises(ValueError, match="train.dd_batch_size=0"):
    config_lib.with_overrides(cfg, {"train.dd_batch_size": 0})


def test_critic_and_generator_objectives_by_their_equations(cfg):
  wired = stages.build_stage(cfg, "joint", global_batch_size=2)
  batch = _batch(2)
  x, y = batch["corrupted"] * 2 - 1, batch["clean"] * 2 - 1
  nets = wired.nets
  critic_total, critic_terms = wired.critic.objective(batch)
  fake = nets["generator"](x, training=True)
  real_scores, fake_scores = nets["critic"](y), nets["critic"](fake)
  expected = float(np.mean(fake_scores.numpy()) - np.mean(real_scores.numpy()))
  assert float(critic_total) == pytest.approx(expected, rel=1e-4, abs=1e-7)
  assert float(critic_terms["wasserstein"]) == pytest.approx(-expected, rel=1e-4, abs=1e-7)

  total, terms = wired.main.objective(batch)
  inpainted = nets["generator"](x, training=True)
  restored = nets["restorer"](inpainted, training=True)
  mse = float(np.mean((restored.numpy() - y.numpy()) ** 2))
  adversarial = -float(np.mean(nets["critic"](inpainted).numpy()))
  assert float(terms["mse"]) == pytest.approx(mse, rel=1e-4)
  assert float(terms["adversarial"]) == pytest.approx(adversarial, rel=1e-4, abs=1e-7)
  assert float(terms["perceptual"]) == 0.0  # lambda_per = 0: not computed.
  mse_intermediate = float(np.mean((inpainted.numpy() - y.numpy()) ** 2))
  assert float(terms["mse_intermediate"]) == pytest.approx(mse_intermediate, rel=1e-4)
  # Eq. (7) on R(G(x)), and its MSE on G(x) too (lambda_intermediate, default 1).
  assert float(total) == pytest.approx(
      cfg.loss.lambda_mse * (mse + cfg.loss.lambda_intermediate * mse_intermediate)
      + cfg.loss.lambda_adv * adversarial, rel=1e-4)
  assert cfg.loss.lambda_intermediate == 1.0


def test_joint_without_the_intermediate_term_trains_g_only_through_r(cfg):
  """lambda_intermediate=0: G(x)'s MSE is logged but adds no gradient; with 1 it does."""
  batch = _batch(3)
  grads = {}
  for weight in (0.0, 1.0):
    c = config_lib.with_overrides(cfg, {"loss.lambda_intermediate": weight,
                                        "loss.lambda_adv": 0.0})
    keras.utils.set_random_seed(5)
    wired = stages.build_stage(c, "joint", global_batch_size=2)
    generator = wired.nets["generator"]
    with tf.GradientTape() as tape:
      total, terms = wired.main.objective(batch)
    restorer_only = wired.nets["restorer"](generator(batch["corrupted"] * 2 - 1, training=True),
                                           training=True)
    grads[weight] = tape.gradient(total, generator.trainable_variables)[-1].numpy()
    assert float(terms["mse_intermediate"]) > 0
    if weight == 0.0:
      assert float(total) == pytest.approx(float(terms["mse"]), rel=1e-5)
  assert not np.allclose(grads[0.0], grads[1.0])


def test_wgan_gp_critic_adds_the_penalty_and_needs_no_clipping(cfg):
  c = config_lib.with_overrides(cfg, {"loss.critic_constraint": "gp", "loss.lambda_gp": 10.0})
  wired = stages.build_stage(c, "gan", global_batch_size=2)
  assert wired.critic.clip is None
  optimizer = stages.new_optimizer(c, "gan", "critic")
  assert isinstance(optimizer, keras.optimizers.Adam) and float(optimizer.beta_1) == 0.5
  batch = _batch(4)
  batch["mix"] = tf.constant([0.25, 0.75])
  total, terms = wired.critic.objective(batch)
  # The penalty by hand: the critic's input gradient at the interpolates.
  x, y = batch["corrupted"] * 2 - 1, batch["clean"] * 2 - 1
  fake = wired.nets["generator"](x, training=True)
  mix = tf.reshape(batch["mix"], (-1, 1, 1, 1))
  mixed = mix * y + (1 - mix) * fake
  with tf.GradientTape() as tape:
    tape.watch(mixed)
    scores = tf.reduce_sum(wired.nets["critic"](mixed, training=True))
  norms = tf.norm(tf.reshape(tape.gradient(scores, mixed), (2, -1)), axis=1).numpy()
  penalty = float(np.mean((norms - 1.0) ** 2))
  assert float(terms["gradient_penalty"]) == pytest.approx(penalty, rel=1e-3)
  assert float(total) == pytest.approx(float(terms["critic_loss"]) + 10.0 * penalty, rel=1e-3)
  with pytest.raises(ValueError, match="loss.critic_constraint"):
    config_lib.with_overrides(cfg, {"loss.critic_constraint": "spectral"})


def test_image_budgets_set_the_steps(cfg):
  c = config_lib.with_overrides(cfg, {"train.batch_size": 4, "train.gan_images": 10,
                                      "train.dd_images": 8, "train.dd_batch_size": 3})
  assert c.stage_steps("gan") == 3 and c.stage_steps("dd") == 3  # ceil(10/4), ceil(8/3).
  assert c.stage_steps("pretrain") == c.train.steps
  with pytest.raises(ValueError, match="both set the length"):
    config_lib.with_overrides(cfg, {"train.gan_images": 10, "train.gan_steps": 2})


def test_generator_objective_needs_vgg_for_the_perceptual_term(cfg):
  with_per = config_lib.with_overrides(cfg, {"loss.lambda_per": 1.0})
  wired = stages.build_stage(with_per, "gan", global_batch_size=2)
  with pytest.raises(ValueError, match="lambda_per > 0 needs the VGG16"):
    wired.main.objective(_batch())


def test_build_stage_and_networks_reject_bad_names(cfg):
  with pytest.raises(ValueError, match="Unknown stage 'gans'"):
    stages.build_stage(cfg, "gans", global_batch_size=2)
  with pytest.raises(ValueError, match="needs the networks \\['critic'\\]"):
    stages.build_stage(cfg, "gan", global_batch_size=2,
                       nets=stages.build_networks(cfg, ["generator"]))
  with pytest.raises(ValueError, match="Unknown networks \\['vgg'\\]"):
    stages.build_networks(cfg, ["vgg"])


def test_logged_values_names_the_critic_values():
  logged = stages.logged_values({"mse": 1.0, "total": 2.0, "grad_norm": 3.0},
                                {"critic_loss": -1.0, "wasserstein": 1.0, "total": -1.0,
                                 "grad_norm": 0.5})
  assert logged == {"mse": 1.0, "total": 2.0, "grad_norm": 3.0, "critic_loss": -1.0,
                    "wasserstein": 1.0, "critic/grad_norm": 0.5}
  assert stages.logged_values({"mse": 1.0}) == {"mse": 1.0}


def test_forward_and_build_cascade_agree(cfg):
  nets = stages.build_networks(cfg, ["generator", "restorer"])
  x = objectives.model_inputs(_batch(3))[0]
  model = cascade_lib.build_cascade(nets["generator"], nets["restorer"])
  direct = cascade_lib.forward(x, nets["generator"], nets["restorer"], training=False)
  via_model = model(cascade_lib.cascade_inputs(x), training=False)
  assert list(direct) == list(via_model) == ["inpainted", "restored"]
  for name in direct:
    np.testing.assert_allclose(direct[name].numpy(), via_model[name].numpy(), atol=1e-6)
  np.testing.assert_array_equal(cascade_lib.final_output(direct).numpy(),
                                direct["restored"].numpy())
  with pytest.raises(ValueError, match="needs a generator, a restorer or both"):
    cascade_lib.forward(x)


def test_clip_values_and_global_norm_by_hand():
  clipped = losses.clip_values([tf.constant([-1.0, 0.005, 2.0]), keras.Variable([[0.3]])], 0.01)
  np.testing.assert_allclose(clipped[0].numpy(), [-0.01, 0.005, 0.01])
  np.testing.assert_allclose(np.asarray(clipped[1]), [[0.01]])
  with pytest.raises(ValueError, match="must be > 0"):
    losses.clip_values([tf.constant([1.0])], -1)
  norm = losses.global_norm([tf.constant([3.0]), None, tf.constant([[4.0, 12.0]])])
  assert float(norm) == pytest.approx(13.0)
  assert float(losses.global_norm([])) == 0.0


def test_unmet_warm_starts_follow_the_run_order():
  assert stages.unmet_warm_starts(["pretrain", "gan", "dd", "joint"], set()) == {}
  assert stages.unmet_warm_starts(["dd", "joint"], set()) == {"joint": ["generator", "critic"]}
  assert stages.unmet_warm_starts(["joint"], {"generator", "critic"}) == {"joint": ["restorer"]}
  assert stages.unmet_warm_starts(["gan", "joint"], set()) == {"gan": ["generator"],
                                                              "joint": ["restorer"]}


def test_joint_without_the_adversary_trains_no_critic(cfg):
  """train.n_critic=0 (needs lambda_adv=0): no critic update, the critic is not even run."""
  with pytest.raises(ValueError, match="n_critic=0 trains no critic"):
    config_lib.with_overrides(cfg, {"train.n_critic": 0})
  c = config_lib.with_overrides(cfg, {"train.n_critic": 0, "loss.lambda_adv": 0.0})
  for stage in ("gan", "joint"):
    wired = stages.build_stage(c, stage, global_batch_size=2)
    assert wired.critic is None and [u.name for u in wired.updates] == ["main"]
  calls = []
  wired.nets["critic"].call = lambda *a, **k: calls.append(1)  # Must not be reached.
  total, terms = wired.main.objective(_batch(3))
  assert not calls and float(terms["adversarial"]) == 0.0
  assert float(total) == pytest.approx(float(terms["mse"]) + float(terms["mse_intermediate"]),
                                       rel=1e-5)
  with pytest.raises(ValueError, match="must be >= 0"):
    config_lib.with_overrides(cfg, {"train.n_critic": -1, "loss.lambda_adv": 0.0})
