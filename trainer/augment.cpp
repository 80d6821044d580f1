// Implements: DiffAugment's translation and cutout (see augment.h).
#include "trainer/augment.h"

#include <stdexcept>

namespace gantry {
namespace {

// floor(u * n) as int64, for u in [0, 1): a uniform integer in [0, n).
torch::Tensor uniform_int(const torch::Tensor& u, int64_t n) {
  return (u.to(torch::kFloat64) * static_cast<double>(n)).floor().clamp_max(static_cast<double>(n - 1)).to(torch::kLong);
}

}  // namespace

AugmentPolicy parse_augment(const std::string& spec) {
  if (spec == "none") return {};
  if (spec == "translation") return {true, false};
  if (spec == "cutout") return {false, true};
  if (spec == "translation,cutout") return {true, true};
  throw std::invalid_argument("train.augment must be none, translation, cutout or translation,cutout; got '" + spec +
                              "'");
}

torch::Tensor diff_augment(const torch::Tensor& x, const torch::Tensor& u_in, AugmentPolicy policy) {
  if (!policy.any()) return x;
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  const torch::Tensor u = u_in.to(x.device());
  const auto long_options = torch::TensorOptions().dtype(torch::kLong).device(x.device());
  torch::Tensor out = x;
  if (policy.translation) {
    const int64_t radius = policy.translation_radius;
    const int64_t ry = radius > 0 ? radius : (h + 4) / 8, rx = radius > 0 ? radius : (w + 4) / 8;  // round(H / 8), round(W / 8)
    const torch::Tensor ty = uniform_int(u.select(1, 0), 2 * ry + 1) - ry, tx = uniform_int(u.select(1, 1), 2 * rx + 1) - rx;
    const torch::Tensor padded = torch::constant_pad_nd(out, {rx, rx, ry, ry}, 0);
    const torch::Tensor rows = (torch::arange(h, long_options) + ry).view({1, 1, h, 1}) + ty.view({n, 1, 1, 1});
    const torch::Tensor cols = (torch::arange(w, long_options) + rx).view({1, 1, 1, w}) + tx.view({n, 1, 1, 1});
    out = padded.gather(2, rows.expand({n, c, h, w + 2 * rx})).gather(3, cols.expand({n, c, h, w}));
  }
  if (policy.cutout) {
    const int64_t sy = (h + 1) / 2, sx = (w + 1) / 2;  // round(H / 2), round(W / 2)
    const torch::Tensor top = uniform_int(u.select(1, 2), h + 1 - sy % 2) - sy / 2;
    const torch::Tensor left = uniform_int(u.select(1, 3), w + 1 - sx % 2) - sx / 2;
    const torch::Tensor i = torch::arange(h, long_options).view({1, 1, h, 1}) - top.view({n, 1, 1, 1});
    const torch::Tensor j = torch::arange(w, long_options).view({1, 1, 1, w}) - left.view({n, 1, 1, 1});
    const torch::Tensor cut = (i >= 0).logical_and(i < sy).logical_and((j >= 0).logical_and(j < sx));
    out = out * cut.logical_not().to(out.scalar_type());
  }
  return out;
}

}  // namespace gantry
