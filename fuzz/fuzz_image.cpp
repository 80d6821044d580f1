// Fuzz target: the image-folder reader and its decoders (libpng, libjpeg-turbo): header checks when the
// folder is opened, then decoding, centre-cropping and resizing a record, gray and RGB. A file
// that does not decode is skipped with a warning; none decoding is one DataError.
#include "datasets/dataset.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  using namespace gantry;
  const int64_t channels = (data[0] & 1) ? 3 : 1;
  const int64_t resolution = 4 + (data[0] >> 1) % 29;  // 4..32
  ++data, --size;
  const auto dir = fuzz::fresh_dir("images");
  const bool jpeg = size >= 2 && data[0] == 0xff && data[1] == 0xd8;
  fuzz::write_file(dir / (jpeg ? "a.jpg" : "a.png"), data, size);
  try {
    auto d = datasets::open_image_folder(dir.string(), resolution, channels, [](const std::string&) {});
    const int64_t index = 0;
    std::vector<float> out(static_cast<size_t>(d->shape().numel()));
    d->read(&index, 1, out.data());
  } catch (const datasets::DataError&) {
  }
  return 0;
}
