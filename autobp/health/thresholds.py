"""Every threshold of the judgement and every constant of the fixes it proposes: defined here once, read by
the judgement, the pages that draw its bands and the sweeps that stop on it."""

from __future__ import annotations

import math

from autobp.rundir.logs import GRAD_MEAN, GRAD_NORM_B, GRAD_NORM_W, GRAD_STD, OUT_GRAD_NORM, WEIGHT_NORM

SIGNAL_RATIO = 100.0  # vanishing/exploding: median ‖∂L/∂f‖ of a layer vs the output layer's, either way
INACTIVE_FRACTION = 0.5  # dead (ReLU) or saturated (tanh, sigmoid) share of a layer's units; at the first logged
# step, reaching it (half the units) already makes the initialisation or the data the cause
DYING = ("relu",)  # activations whose units stop learning for good below zero (leaky_relu and elu keep a gradient)
SATURATION = 3.0  # a squashing unit is saturated where |pre-activation| exceeds this for the whole batch
MIN_GRAD_NORM = 1e-8  # vanishing: a layer's median ‖∂L/∂W‖ below this
UPDATE_RATIO_HIGH = 1e-1  # learning rate: median ‖ΔW‖/‖W‖ over the logged steps of the layer that moves most
UPDATE_RATIO_JUMP = 0.5  # learning rate high: a logged step changed a layer's weights by half their norm or more
UPDATE_RATIO_LOW = 1e-4
HEALTHY_UPDATE_RATIO = 1e-3  # a healthy median update ratio, which a lowered learning rate aims at…
HEALTHY_LARGEST_STEP = 2e-2  # …and a healthy largest one (the first steps of a healthy run are about this)
EARLY_UPDATE_RATIO = 1e-2  # a raised learning rate aims at the update ratio of a healthy run's early steps
INIT_SCALE_HIGH = 4.0  # initialisation: a layer's first weight norm against the norm of its fitting init (he or
INIT_SCALE_LOW = 1 / 8  # xavier for its shape), above or below which the initialisation is the cause
LR_STEP = 10.0  # a learning-rate fix changes optimizer.lr by at least this factor…
MAX_LR_CUT = 1e3  # …and at most this one down (a run that blew up has absurd update ratios)…
MAX_LR_RAISE = 1e4  # …or up
CLIMB = 0.5  # learning rate high: the training loss ends more than 50% above its lowest value…
CLIMB_SHARE = 0.2  # …and the climb is at least a fifth of the first epoch's loss above that lowest value
UNSTABLE_SHARE = 0.3  # learning rate high: at least this share of the epochs raise the training loss…
UNSTABLE_RISE = 0.05  # …each by more than this share of the loss's range over the run and of its level
OVERFIT_MIN_EPOCHS = 6  # overfitting: judged from this many epochs with both losses on, when the validation loss
OVERFIT_RISE = 0.2  # ends more than 20% above its best value, while the training loss fell after that epoch…
OVERFIT_SHARE = 0.1  # …and the rise is at least a tenth of what the validation loss had gained up to its best
FIT_MIN_EPOCHS = 10  # under this many epochs a poor fit means too little training, not too small a network
FALLING_SHARE = 0.25  # not converged: the last third of the epochs made this share of the whole decline…
FALLING_LEVEL = 0.01  # …and lowered the loss by at least this share of its level there
UNDERFIT_SCORE = 0.9  # underfitting: the best training accuracy or R² stays below this…
UNDERFIT_GAP = 0.8  # …while the training loss is at least this share of the validation loss (nothing memorised)
EPOCHS_FACTOR = 4  # not converged: train this many times as long
WIDEN_FACTOR = 4  # underfitting: hidden layers this many times wider…
MIN_FIX_WIDTH = 32  # …and at least this wide
EARLY_STOPPING = {"monitor": "val_loss", "patience": 10}  # overfitting's fix
WEIGHT_DECAY = 1e-3
DROPOUT = 0.2
CLIP_GRAD_NORM = 1.0
ADAPTIVE = {"name": "adam", "lr": 1e-3}  # the optimizer a plain-SGD run is moved to as an alternative

# The causes for which `early_terminate: health` stops a sweep's trial: a blow-up, vanishing, dead or saturated
# layers, a learning rate far off. Overfitting, underfitting, not converging and noise are left to the trial's own
# end (early stopping, its ranking): a few epochs in, they are no reason to give up on it.
FATAL_KINDS = frozenset({"exploding_gradients", "vanishing_gradients", "dead_units", "saturated_units",
                         "learning_rate_high", "learning_rate_low"})  # fmt: skip
# A learning rate is far off, and fatal, when the update ratio is this many times beyond its threshold, or (too
# high) the loss or a single step shows it too: the first steps of a good rate can cross the threshold itself
# (Adam's first steps move small weights a lot) while the loss falls as it should.
FAR_OFF = 10.0

# Gradient-log columns whose non-finite values mean the run blew up; update_ratio is left out because it is
# infinite by definition for a weight matrix of zeros.
BLOW_UP_COLUMNS = (GRAD_NORM_W, GRAD_NORM_B, WEIGHT_NORM, OUT_GRAD_NORM, GRAD_MEAN, GRAD_STD)

# --- instruments (instruments.csv) ----------------------------------------------------------------------------
# gradient_noise: the smoothed noise scale B_noise at least this many times the batch size B. Training at B needs
# (1 + B_noise/B) times the fewest possible steps (McCandlish et al. 2018): at this factor, five times.
NOISE_SCALE_FACTOR = 4.0
# Norm and inner-product tests: the norm test squared is the (unsmoothed) noise scale over the batch size, so the
# same factor decides, recently rather than early.
NORM_TEST_LIMIT = math.sqrt(NOISE_SCALE_FACTOR)
ORTHO_TEST_LIMIT = 5.84  # orthogonality test ν: Bollapragada et al. (2018)'s suggested value
ALPHA_LOW = -0.5  # step quality α persistently below: the steps barely move along the fitted quadratic
ALPHA_HIGH = 1.0  # α persistently above: the steps overshoot the minimum along their direction
STABILITY_LIMIT = 2.0  # lr·λ_max beyond it, gradient descent on the local quadratic diverges (Cohen et al. 2021)
TREND_CHANGE = 0.1  # a window's fitted change, relative to its median, that counts as rising or falling
MIN_INSTRUMENTED = 3
