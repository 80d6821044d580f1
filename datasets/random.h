// Implements: counter-based random numbers (splitmix64 mixing). A value is a pure function of a
// key built from (seed, stream, indices...), so the latent z of global sample j, a data
// permutation or a Gaussian record are the same at any world size and on any platform.
#pragma once

#include <cmath>
#include <cstdint>
#include <initializer_list>

namespace gantry::random {

// Named streams keep unrelated uses of one seed independent.
enum Stream : uint64_t {
  kPermutation = 1,
  kLatent = 2,
  kGaussianData = 3,
  kFixedLatent = 4,
  kPenaltyMix = 5,
  kModelInit = 6,
  kFlip = 7,
  kEvalLatent = 8,  // gantry sample / eval
  kAugment = 9,     // train.augment's translations and cutouts
  kDropout = 10,    // model.mlp.d_dropout's masks
  kFakeLabel = 11,  // a conditional G's labels in its updates
  kCrShift = 12,      // train.cr_weight's translations
};

inline uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

inline uint64_t key(std::initializer_list<uint64_t> parts) {
  uint64_t h = 0x6a09e667f3bcc909ULL;
  for (uint64_t p : parts) h = mix64(h ^ p);
  return h;
}

// A splitmix64 sequence started from a key.
class Rng {
 public:
  explicit Rng(uint64_t key) : state_(key) {}

  uint64_t next_u64() {
    state_ += 0x9e3779b97f4a7c15ULL;
    uint64_t z = state_;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  // Uniform in the open interval (0, 1).
  double uniform() { return (static_cast<double>(next_u64() >> 11) + 0.5) * 0x1.0p-53; }
  // Uniform integer in [0, n), unbiased (Lemire's multiply-and-reject).
  uint64_t below(uint64_t n) {
    while (true) {
      const unsigned __int128 m = static_cast<unsigned __int128>(next_u64()) * n;
      const uint64_t low = static_cast<uint64_t>(m);
      if (low >= n || low >= (0 - n) % n) return static_cast<uint64_t>(m >> 64);
    }
  }
  // Standard normal values (Box-Muller), written to out[0..n).
  void fill_normal(float* out, int64_t n) {
    for (int64_t i = 0; i < n; i += 2) {
      const double r = std::sqrt(-2.0 * std::log(uniform()));
      const double theta = 2.0 * M_PI * uniform();
      out[i] = static_cast<float>(r * std::cos(theta));
      if (i + 1 < n) out[i + 1] = static_cast<float>(r * std::sin(theta));
    }
  }

 private:
  uint64_t state_;
};

}  // namespace gantry::random
