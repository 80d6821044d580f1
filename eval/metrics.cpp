// Implements: Parzen-window log-likelihoods and the Fréchet distance (see metrics.h).
#include "eval/metrics.h"

#include <cmath>
#include <limits>
#include <stdexcept>

namespace gantry::eval {

torch::Tensor parzen_log_likelihoods(const torch::Tensor& points, const torch::Tensor& centres,
                                     const std::vector<double>& sigmas, int64_t batch) {
  torch::NoGradGuard no_grad;
  const torch::Tensor x = points.reshape({points.size(0), -1}).to(torch::kFloat64);
  const torch::Tensor c = centres.reshape({centres.size(0), -1}).to(torch::kFloat64);
  if (x.size(1) != c.size(1)) throw std::invalid_argument("parzen: points and centres differ in dimension");
  const double d = static_cast<double>(x.size(1)), m = static_cast<double>(c.size(0));
  const torch::Tensor c_sq = c.pow(2).sum(1);  // [M]
  torch::Tensor out = torch::empty({static_cast<int64_t>(sigmas.size()), x.size(0)}, torch::kFloat64);
  torch::Tensor excess, terms;  // [batch, M], reused across sigmas and batches
  for (int64_t lo = 0; lo < x.size(0); lo += batch) {
    const torch::Tensor xb = x.slice(0, lo, std::min(lo + batch, x.size(0)));
    // |x - c|^2 = |x|^2 + |c|^2 - 2 x.c, one matrix product per batch; rounding can make it a hair negative.
    const torch::Tensor dist = at::addmm(xb.pow(2).sum(1, true) + c_sq.unsqueeze(0), xb, c.t(), 1, -2).clamp_min_(0);
    // log-sum-exp around each row's nearest centre, which is the largest term for every sigma:
    // log sum_j exp(-d_j k) = -d_min k + log sum_j exp(-(d_j - d_min) k), with k = 1 / (2 sigma^2).
    // The sum is at least 1 (the nearest centre's term), so it cannot underflow. The two buffers
    // are reused: torch::logsumexp made two fresh 40 MB tensors per sigma for a 500 x 10,000
    // float64 batch, each mapped and page-faulted in anew.
    const torch::Tensor nearest = std::get<0>(dist.min(1, true));  // [b, 1]
    if (!excess.defined() || excess.sizes() != dist.sizes()) {
      excess = torch::empty_like(dist);
      terms = torch::empty_like(dist);
    }
    at::sub_out(excess, dist, nearest);
    for (size_t s = 0; s < sigmas.size(); ++s) {
      const double k = 0.5 / (sigmas[s] * sigmas[s]);
      at::mul_out(terms, excess, at::scalar_tensor(-k, excess.options())).exp_();
      const torch::Tensor ll = terms.sum(1).log_() - nearest.squeeze(1) * k - std::log(m) -
                               0.5 * d * std::log(2 * M_PI * sigmas[s] * sigmas[s]);
      out[static_cast<int64_t>(s)].slice(0, lo, lo + xb.size(0)).copy_(ll);
    }
  }
  return out;
}

std::vector<double> log_grid(double sigma_min, double sigma_max, int n) {
  std::vector<double> grid;
  for (int i = 0; i < n; ++i)
    grid.push_back(n == 1 ? sigma_min : sigma_min * std::pow(sigma_max / sigma_min, static_cast<double>(i) / (n - 1)));
  return grid;
}

ParzenResult parzen_evaluate(const torch::Tensor& validation, const torch::Tensor& test, const torch::Tensor& centres,
                             const std::vector<double>& grid) {
  const torch::Tensor valid_means = parzen_log_likelihoods(validation, centres, grid).mean(1);
  ParzenResult r;
  r.sigma = grid.at(static_cast<size_t>(valid_means.argmax().item<int64_t>()));
  const torch::Tensor ll = parzen_log_likelihoods(test, centres, {r.sigma})[0];
  r.mean = ll.mean().item<double>();
  r.std_error = ll.numel() > 1 ? ll.std().item<double>() / std::sqrt(static_cast<double>(ll.numel())) : 0.0;
  r.test_points = test.size(0);
  r.centres = centres.size(0);
  return r;
}

GaussianFit fit_gaussian(const torch::Tensor& features) {
  torch::NoGradGuard no_grad;
  const torch::Tensor f = features.reshape({features.size(0), -1}).to(torch::kFloat64);
  if (f.size(0) < 2) throw std::invalid_argument("fit_gaussian: needs at least two rows");
  const torch::Tensor mean = f.mean(0);
  const torch::Tensor centred = f - mean;
  return {mean, centred.t().matmul(centred) / static_cast<double>(f.size(0) - 1)};
}

torch::Tensor sqrtm_psd(const torch::Tensor& a) {
  const torch::Tensor sym = (a + a.t()) * 0.5;
  // ATen's spelling: LibTorch 2.x's <torch/torch.h> no longer declares torch::linalg.
  const auto [values, vectors] = at::linalg_eigh(sym, "L");
  return (vectors * values.clamp_min(0).sqrt().unsqueeze(0)).matmul(vectors.t());
}

FrechetTerms frechet_terms(const GaussianFit& a, const GaussianFit& b) {
  torch::NoGradGuard no_grad;
  const torch::Tensor root_a = sqrtm_psd(a.cov);
  const torch::Tensor inner = root_a.matmul(b.cov).matmul(root_a);
  const torch::Tensor tr_sqrt = at::linalg_eigvalsh((inner + inner.t()) * 0.5, "L").clamp_min(0).sqrt().sum();
  FrechetTerms t;
  t.mean = (a.mean - b.mean).pow(2).sum().item<double>();
  t.variance_a = a.cov.trace().item<double>();
  t.variance_b = b.cov.trace().item<double>();
  t.covariance = t.variance_a + t.variance_b - 2 * tr_sqrt.item<double>();
  return t;
}

double frechet_distance(const GaussianFit& a, const GaussianFit& b) { return frechet_terms(a, b).distance(); }

ClassCoverage class_coverage(const torch::Tensor& fake_labels, const torch::Tensor& real_labels, int64_t classes) {
  if (fake_labels.numel() == 0 || real_labels.numel() == 0)
    throw std::invalid_argument("class_coverage: no labels to count");
  auto shares = [classes](const torch::Tensor& labels) {
    const torch::Tensor counts = torch::bincount(labels.to(torch::kLong).flatten(), {}, classes).to(torch::kFloat64);
    const torch::Tensor share = counts / counts.sum();
    return std::vector<double>(share.data_ptr<double>(), share.data_ptr<double>() + share.numel());
  };
  ClassCoverage c;
  c.fake_share = shares(fake_labels);
  c.real_share = shares(real_labels);
  for (int64_t k = 0; k < classes; ++k) {
    const double p = c.fake_share[k], q = c.real_share[k];
    if (q > 0) ++c.classes;
    if (q > 0 && p >= q / 4) ++c.covered;
    if (p > 0) c.kl += p * std::log(p / q);  // q = 0 < p: G draws a class real records lack, infinite
  }
  return c;
}

std::vector<FrechetTerms> frechet_per_class(const torch::Tensor& a, const torch::Tensor& a_labels,
                                            const torch::Tensor& b, const torch::Tensor& b_labels, int64_t classes) {
  TORCH_CHECK(a_labels.numel() == a.size(0) && b_labels.numel() == b.size(0),
              "frechet_per_class: one label per row of features");
  const double nan = std::numeric_limits<double>::quiet_NaN();
  std::vector<FrechetTerms> out;
  for (int64_t c = 0; c < classes; ++c) {
    const torch::Tensor rows_a = a.index({a_labels.flatten().eq(c)}), rows_b = b.index({b_labels.flatten().eq(c)});
    if (rows_a.size(0) < 2 || rows_b.size(0) < 2) {
      out.push_back({nan, nan, nan, nan});
      continue;
    }
    out.push_back(frechet_terms(fit_gaussian(rows_a), fit_gaussian(rows_b)));
  }
  return out;
}

}  // namespace gantry::eval
