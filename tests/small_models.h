// Test fixture: the smallest DCGAN config for 28x28x1 data (z 8, widths 4), for tests that run
// real GanStep updates and need them fast.
#pragma once

#include <string>

#include "trainer/config.h"

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

}  // namespace gantry::testing
