// Fuzz target: the MNIST/Fashion-MNIST IDX readers. The first byte picks what the rest is: an
// images file (raw, or .gz when it starts with gzip's magic) or a labels file beside a valid
// two-image file. Opening and reading records must succeed or throw one DataError.
#include <array>

#include "datasets/dataset.h"
#include "fuzz/fuzz_util.h"

namespace {

// A valid idx3 file of two 2x2 images.
const std::array<uint8_t, 24> kTwoImages = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2, 1, 2, 3, 4, 5, 6, 7, 8};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  using namespace gantry;
  const bool labels = data[0] & 1;
  ++data, --size;
  const auto dir = fuzz::fresh_dir("idx");
  try {
    if (!labels) {
      const bool gz = size >= 2 && data[0] == 0x1f && data[1] == 0x8b;
      const auto file = dir / (gz ? "t10k-images-idx3-ubyte.gz" : "t10k-images-idx3-ubyte");
      fuzz::write_file(file, data, size);
      fuzz::read_first_and_last(*datasets::open_idx_images(file.string(), "mnist", (dir / "cache").string()));
    } else {
      fuzz::write_file(dir / "t10k-images-idx3-ubyte", kTwoImages.data(), kTwoImages.size());
      fuzz::write_file(dir / "t10k-labels-idx1-ubyte", data, size);
      fuzz::read_test_labels("mnist", dir);
    }
  } catch (const datasets::DataError&) {
  }
  return 0;
}
