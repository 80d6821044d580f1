// Implements: the four GAN objectives on D's logits, in numerically stable log-sigmoid form.
//   minimax        D: -log D(x) - log(1 - D(G(z)))   G: log(1 - D(G(z)))     (Goodfellow 2014)
//   non-saturating D: as minimax                     G: -log D(G(z))
//   wgan-gp        D: D(G(z)) - D(x) + lambda * (||grad D(x_hat)|| - 1)^2    G: -D(G(z))
//   hinge          D: relu(1 - D(x)) + relu(1 + D(G(z)))                     G: -D(G(z))
#pragma once

#include <torch/torch.h>

#include <functional>
#include <string>

namespace gantry {

enum class LossKind { kMinimax, kNonSaturating, kWganGp, kHinge };

LossKind parse_loss(const std::string& name);

// D's loss without the gradient penalty; means over the local batch.
torch::Tensor discriminator_loss(LossKind kind, const torch::Tensor& real_logits, const torch::Tensor& fake_logits);
torch::Tensor generator_loss(LossKind kind, const torch::Tensor& fake_logits);
// G's loss of each sample ([N], for logits [N] or [N, 1]); generator_loss is their mean.
torch::Tensor generator_loss_per_sample(LossKind kind, const torch::Tensor& fake_logits);

// R1's penalty mean(||grad_x D(x)||_2^2) at the real images, with a graph for the double
// backward. The gradient is taken at `real` itself (discriminate may augment it first).
torch::Tensor r1_penalty(const std::function<torch::Tensor(const torch::Tensor&)>& discriminate,
                         const torch::Tensor& real);

// WGAN-GP's penalty mean((||grad_x D(x_hat)||_2 - 1)^2) at x_hat = eps*real + (1-eps)*fake,
// with a graph for the double backward. eps has one value per sample.
torch::Tensor gradient_penalty(const std::function<torch::Tensor(const torch::Tensor&)>& discriminate,
                               const torch::Tensor& real, const torch::Tensor& fake, const torch::Tensor& eps);

}  // namespace gantry
