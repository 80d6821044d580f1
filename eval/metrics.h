// Implements: the sample-quality statistics. The Gaussian Parzen-window log-likelihood (Breuleux
// et al. 2011, as Goodfellow et al. 2014 report it) with batched distance matrices and
// log-sum-exp, and the Fréchet distance between Gaussian fits of features (Heusel et al. 2017).
#pragma once

#include <torch/torch.h>

#include <vector>

namespace gantry::eval {

// log p(x_i) for every row x_i of `points` under the mixture (1/M) sum_j N(c_j, sigma^2 I) over
// the rows c_j of `centres`, for every sigma: [sigmas, N] float64. Rows are flattened; the
// distance matrix is made `batch` rows at a time with one matrix product each.
torch::Tensor parzen_log_likelihoods(const torch::Tensor& points, const torch::Tensor& centres,
                                     const std::vector<double>& sigmas, int64_t batch = 500);

// sigma_min .. sigma_max, `n` values spaced evenly in log.
std::vector<double> log_grid(double sigma_min, double sigma_max, int n);

struct ParzenResult {
  double sigma = 0;      // chosen on the validation points
  double mean = 0;       // mean log-likelihood of the test points (nats)
  double std_error = 0;  // standard error of that mean
  int64_t test_points = 0, centres = 0;
};

// Chooses sigma from `grid` by the validation points' mean log-likelihood, then reports the test
// points' mean and standard error with it.
ParzenResult parzen_evaluate(const torch::Tensor& validation, const torch::Tensor& test, const torch::Tensor& centres,
                             const std::vector<double>& grid);

struct GaussianFit {
  torch::Tensor mean;  // [F] float64
  torch::Tensor cov;   // [F, F] float64, unbiased
};
GaussianFit fit_gaussian(const torch::Tensor& features);

// The square root of a symmetric positive semi-definite matrix (eigendecomposition; negative
// eigenvalues from rounding are taken as 0).
torch::Tensor sqrtm_psd(const torch::Tensor& a);

// The Fréchet distance's two parts, and each fit's total variance (its covariance's trace): a
// generator whose samples vary less than the data's shows a smaller variance, one that is merely
// shifted a large mean term.
struct FrechetTerms {
  double mean = 0;        // |mu_a - mu_b|^2
  double covariance = 0;  // tr(S_a + S_b - 2 (S_a S_b)^(1/2))
  double variance_a = 0;  // tr S_a
  double variance_b = 0;  // tr S_b
  double distance() const { return mean + covariance; }
};

// The trace of the square root is taken as tr((S_a^(1/2) S_b S_a^(1/2))^(1/2)), whose argument
// is symmetric PSD.
FrechetTerms frechet_terms(const GaussianFit& a, const GaussianFit& b);
// |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)): frechet_terms(a, b).distance().
double frechet_distance(const GaussianFit& a, const GaussianFit& b);

// How G's samples spread over the classes, as a classifier labels them, against the true labels of
// real records: the mode-coverage measures of the GAN literature (Srivastava et al. 2017's VEEGAN,
// Lin et al. 2018's PacGAN). A class is covered when G's share of it is at least a quarter of the
// real share; kl is KL(G ‖ real) of the two class frequencies, in nats (0 when they agree; log K
// when G draws one class of K equally frequent ones; infinite when G draws a class the real
// records lack). Labels are 0 .. classes - 1; neither set may be empty.
struct ClassCoverage {
  std::vector<double> fake_share, real_share;  // per class, each summing to 1
  int64_t classes = 0;                         // classes the real records hold
  int64_t covered = 0;                         // of those
  double kl = 0;
};
ClassCoverage class_coverage(const torch::Tensor& fake_labels, const torch::Tensor& real_labels, int64_t classes);

// The Fréchet distance within each class: row c holds frechet_terms of a's rows labelled c against
// b's rows labelled c. A class with fewer than two rows on either side gets NaN terms. Labels are
// 0 .. classes - 1 ([N] int64, one per row of the matching features).
std::vector<FrechetTerms> frechet_per_class(const torch::Tensor& a, const torch::Tensor& a_labels,
                                            const torch::Tensor& b, const torch::Tensor& b_labels, int64_t classes);

}  // namespace gantry::eval
