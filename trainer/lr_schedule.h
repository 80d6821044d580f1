// Implements: the learning-rate schedule (optim.schedule), one factor that scales both optimizers'
// learning rates at each step: a linear warm-up over optim.warmup_steps (as Goyal et al. 2017
// ramp large-batch SGD), then, from the fraction optim.decay_start of train.steps on (and not
// before the warm-up ends), a linear or cosine (Loshchilov & Hutter 2017) decay toward
// optim.final_lr_ratio at train.steps. The factor depends only on the step and train.steps, so a
// resumed run with the same train.steps, at any world size, follows the same schedule.
// Also train.g_topk's schedule: how many fakes G's top-k update keeps at each step.
#pragma once

#include <cstdint>

#include "trainer/config.h"

namespace gantry {

// The factor for step `step` (G updates done before it, from 0) of a run of `steps` steps; the
// step's D updates and its G update all use it.
double lr_factor(const OptimConfig& optim, int64_t step, int64_t steps);

// train.g_topk's k at step `step`: max(g_topk, g_topk_gamma^epochs) x batch_size, rounded, at least
// 1, where epochs = step x batch_size x d_steps / records, D's passes over the `records` training
// records so far (Sinha et al. 2020 decay k by gamma each epoch). A pure function of the step, as
// lr_factor: resumed runs and every world size keep the same k.
int64_t g_topk_count(const TrainConfig& train, int64_t step, int64_t records);

}  // namespace gantry
