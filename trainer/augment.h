// Implements: DiffAugment (Zhao et al. 2020), differentiable augmentation of everything D sees,
// real and fake alike, in D's and G's updates: random translation by up to 1/8 of the image
// (zero fill) and cutout of a random half-size square. With little data D memorises the real
// images (StyleGAN2-ADA's "limited data" regime); augmenting both sides keeps it from doing so
// without teaching G the augmentation.
#pragma once

#include <torch/torch.h>

#include <string>

namespace gantry {

struct AugmentPolicy {
  bool translation = false, cutout = false;
  int64_t translation_radius = 0;  // the largest shift in pixels; 0: DiffAugment's round(H / 8), round(W / 8)
  bool any() const { return translation || cutout; }
};

// train.augment: "none", "translation", "cutout" or "translation,cutout".
AugmentPolicy parse_augment(const std::string& spec);

// Random numbers an augmentation of one image uses: translation in x and y, cutout's x and y.
constexpr int64_t kAugmentDraws = 4;

// x: [N, C, H, W]; u: [N, kAugmentDraws] uniforms in [0, 1) (keyed per global sample by the
// caller, so the augmentation is the same at any world size). Output pixel (i, j) of image n is
// x[n, :, i + ty, j + tx] (0 outside the image), ty, tx uniform integers in [-r, r] with
// r = policy.translation_radius, or round(H / 8), round(W / 8) where that is 0; then a square of s = round(H / 2) x round(W / 2) is set to 0,
// centred on a uniform integer position in [0, H - s mod 2] x [0, W - s mod 2] (DiffAugment's
// range: for an even size the centre may lie one pixel past the last row or column, so the square
// is clipped at every border alike). Differentiable in x.
torch::Tensor diff_augment(const torch::Tensor& x, const torch::Tensor& u, AugmentPolicy policy);

}  // namespace gantry
