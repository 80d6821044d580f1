// Fuzz target: the CIFAR-10 binary batch reader (records of one label byte and 3x32x32 pixels),
// through open_cifar10 and read_labels. Each must succeed or throw one DataError.
#include "datasets/dataset.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace gantry;
  const auto dir = fuzz::fresh_dir("cifar");
  fuzz::write_file(dir / "test_batch.bin", data, size);
  try {
    fuzz::read_first_and_last(*datasets::open_cifar10({(dir / "test_batch.bin").string()}));
    fuzz::read_test_labels("cifar10", dir);
  } catch (const datasets::DataError&) {
  }
  return 0;
}
