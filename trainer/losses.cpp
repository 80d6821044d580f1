// Implements: GAN losses (see losses.h for the formulas). log(sigmoid(t)) = -softplus(-t) and
// log(1 - sigmoid(t)) = -softplus(t) keep every form finite for any logit.
#include "trainer/losses.h"

#include "trainer/config.h"

namespace gantry {
namespace F = torch::nn::functional;

LossKind parse_loss(const std::string& name) {
  if (name == "minimax") return LossKind::kMinimax;
  if (name == "non-saturating") return LossKind::kNonSaturating;
  if (name == "wgan-gp") return LossKind::kWganGp;
  if (name == "hinge") return LossKind::kHinge;
  throw ConfigError("config error: train.loss: unknown loss '" + name + "'");
}

torch::Tensor discriminator_loss(LossKind kind, const torch::Tensor& real, const torch::Tensor& fake) {
  switch (kind) {
    case LossKind::kMinimax:
    case LossKind::kNonSaturating:
      return F::softplus(-real).mean() + F::softplus(fake).mean();
    case LossKind::kWganGp:
      return fake.mean() - real.mean();
    case LossKind::kHinge:
      return torch::relu(1.0 - real).mean() + torch::relu(1.0 + fake).mean();
  }
  throw std::logic_error("discriminator_loss: unknown loss");
}

torch::Tensor generator_loss_per_sample(LossKind kind, const torch::Tensor& fake) {
  const torch::Tensor t = fake.flatten();
  switch (kind) {
    case LossKind::kMinimax:
      return -F::softplus(t);
    case LossKind::kNonSaturating:
      return F::softplus(-t);
    case LossKind::kWganGp:
    case LossKind::kHinge:
      return -t;
  }
  throw std::logic_error("generator_loss: unknown loss");
}

torch::Tensor generator_loss(LossKind kind, const torch::Tensor& fake) {
  return generator_loss_per_sample(kind, fake).mean();
}

torch::Tensor r1_penalty(const std::function<torch::Tensor(const torch::Tensor&)>& discriminate,
                         const torch::Tensor& real) {
  const torch::Tensor x = real.detach().requires_grad_(true);
  const torch::Tensor out = discriminate(x);
  const torch::Tensor grad = torch::autograd::grad({out.sum()}, {x}, /*grad_outputs=*/{},
                                                   /*retain_graph=*/true, /*create_graph=*/true)[0];
  return grad.flatten(1).square().sum(1).mean();
}

torch::Tensor gradient_penalty(const std::function<torch::Tensor(const torch::Tensor&)>& discriminate,
                               const torch::Tensor& real, const torch::Tensor& fake, const torch::Tensor& eps) {
  std::vector<int64_t> shape(real.dim(), 1);
  shape[0] = real.size(0);
  const torch::Tensor e = eps.view(shape);
  torch::Tensor x_hat = (e * real + (1 - e) * fake.detach()).requires_grad_(true);
  const torch::Tensor out = discriminate(x_hat);
  const torch::Tensor grad = torch::autograd::grad({out.sum()}, {x_hat}, /*grad_outputs=*/{},
                                                   /*retain_graph=*/true, /*create_graph=*/true)[0];
  return (grad.flatten(1).norm(2, 1) - 1).pow(2).mean();
}

}  // namespace gantry
