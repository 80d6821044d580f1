// Test fixture: the smallest DCGAN config for 28x28x1 data (z 8, widths 4), for tests that run
// real GanStep updates and need them fast.
#pragma once

#include <string>
#include <vector>

#include "comm/communicator.h"
#include "trainer/config.h"
#include "trainer/gan_step.h"
#include "trainer/latent.h"

namespace gantry::testing {

inline Config small_dcgan_config(const std::string& loss = "non-saturating") {
  Config c;
  c.data.name = "fashion-mnist";
  c.model.arch = "dcgan";
  c.model.z_dim = 8;
  c.model.dcgan.g_width = 4;
  c.model.dcgan.d_width = 4;
  c.train.loss = loss;
  return c;
}

// The smallest MLP GAN config for 28x28x1 data (z 8, G 8 -> 16 -> 784, D 784 -> 16 -> 8 -> 1): its
// Linear layers are gantry's own (GemmLinear), so GanStep's tests run them through every loss.
inline Config small_mlp_config(const std::string& loss = "non-saturating") {
  Config c = small_dcgan_config(loss);
  c.model.arch = "mlp";
  c.model.mlp.g_hidden = {16};
  c.model.mlp.d_hidden = {16, 8};
  return c;
}

// Ten D and G updates of the small DCGAN on `device`, reduced through `comm` with overlap on or
// off and tiny buckets (many per backward), each rank on its own rows of seeded data; returns
// every parameter of G then D, on the CPU. The same seed gives the same initial models.
inline std::vector<torch::Tensor> train_small_dcgan(comm::Communicator& comm, bool overlap, torch::Device device) {
  Config c = small_dcgan_config("non-saturating");
  c.comm.overlap = overlap ? "true" : "false";
  c.comm.bucket_mb = 0.002;
  c.comm.first_bucket_mb = 0.0005;
  GanModels m = make_models(c, {1, 28, 28});
  m.g->to(device);
  m.d->to(device);
  GanStep step(std::move(m), c, comm);
  const int r = comm.rank();
  for (int64_t s = 0; s < 10; ++s) {
    const torch::Tensor real = latent_rows(7, random::kLatent, s, 4 * r, 4, 784).tanh().view({4, 1, 28, 28});
    const torch::Tensor z = latent_rows(1, random::kLatent, s, 4 * r, 4, 8);
    step.d_update(real, z, uniform_rows(1, random::kPenaltyMix, s, 4 * r, 4));
    step.g_update(z);
    step.sync_buffers();
  }
  std::vector<torch::Tensor> params;
  for (const auto& p : step.models().g->parameters()) params.push_back(p.detach().cpu());
  for (const auto& p : step.models().d->parameters()) params.push_back(p.detach().cpu());
  return params;
}

}  // namespace gantry::testing
