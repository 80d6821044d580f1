// Implements: the image-folder reader (data.name: images). Every PNG/JPEG under a folder is one
// record, decoded on demand (libpng, libjpeg-turbo: image_decode.h) in the thread that reads it
// (the prefetch workers), centre-cropped to a square, resized to resolution x resolution and
// converted to 1 or 3 channels. Files whose header cannot be read are skipped when the folder is
// opened; a file that fails to decode later is skipped by reading the next readable image in its
// place. Enlarging uses stb_image_resize (Debian's libstb-dev header, compiled here privately).
#define STB_IMAGE_RESIZE_STATIC
#define STB_IMAGE_RESIZE_IMPLEMENTATION
#include <stb_image_resize.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <filesystem>
#include <memory>
#include <mutex>
#include <set>

#include "datasets/dataset.h"
#include "datasets/image_decode.h"

namespace gantry::datasets {
namespace fs = std::filesystem;
namespace {

bool is_image_file(const fs::path& p) {
  std::string ext = p.extension().string();
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg";
}

// Which source pixels cover each of `out` destination pixels when `in` pixels shrink to `out`,
// and by how much (the weights of one destination pixel sum to 1).
struct Tap {
  int first;
  std::vector<float> weights;
};
std::vector<Tap> area_taps(int in, int out) {
  const double scale = static_cast<double>(in) / out;
  std::vector<Tap> taps(static_cast<size_t>(out));
  for (int o = 0; o < out; ++o) {
    const double lo = o * scale, hi = (o + 1) * scale;
    taps[o].first = static_cast<int>(lo);
    for (int i = taps[o].first; i < in && i < hi; ++i)
      taps[o].weights.push_back(static_cast<float>((std::min<double>(i + 1, hi) - std::max<double>(i, lo)) / scale));
  }
  return taps;
}

// Shrinks a side x side image (rows `stride` bytes apart, c channels interleaved) to r x r by area
// averaging: separable, rows first. (stb_image_resize's box filter gives the same averages but
// took as long as decoding the JPEG.)
void area_shrink(const uint8_t* in, int side, size_t stride, int r, int c, uint8_t* out) {
  const std::vector<Tap> taps = area_taps(side, r);
  thread_local std::vector<float> rows;  // side rows of r pixels
  rows.assign(static_cast<size_t>(side) * r * c, 0.0f);
  for (int y = 0; y < side; ++y)
    for (int ox = 0; ox < r; ++ox)
      for (size_t k = 0; k < taps[ox].weights.size(); ++k) {
        const uint8_t* px = in + y * stride + static_cast<size_t>(taps[ox].first + static_cast<int>(k)) * c;
        float* acc = &rows[(static_cast<size_t>(y) * r + ox) * c];
        for (int ch = 0; ch < c; ++ch) acc[ch] += taps[ox].weights[k] * px[ch];
      }
  for (int oy = 0; oy < r; ++oy)
    for (int i = 0; i < r * c; ++i) {
      float v = 0;
      for (size_t k = 0; k < taps[oy].weights.size(); ++k)
        v += taps[oy].weights[k] * rows[static_cast<size_t>(taps[oy].first + static_cast<int>(k)) * r * c + i];
      out[static_cast<size_t>(oy) * r * c + i] = static_cast<uint8_t>(std::min(255.0f, v + 0.5f));
    }
}

class ImageFolder : public Dataset {
 public:
  ImageFolder(std::string folder, std::vector<std::string> files, int64_t resolution, int64_t channels,
              std::function<void(const std::string&)> warn)
      : folder_(std::move(folder)), files_(std::move(files)), resolution_(resolution), channels_(channels),
        warn_(std::move(warn)) {}

  std::string name() const override { return "images"; }
  int64_t size() const override { return static_cast<int64_t>(files_.size()); }
  RecordShape shape() const override { return {channels_, resolution_, resolution_}; }

  void read(const int64_t* indices, int64_t n, float* out) const override {
    const int64_t r = resolution_, c = channels_;
    thread_local std::vector<uint8_t> pixels;  // HWC, interleaved as stb gives them
    pixels.resize(static_cast<size_t>(r * r * c));
    for (int64_t i = 0; i < n; ++i) {
      decode_or_substitute(indices[i], pixels.data());
      float* dst = out + i * c * r * r;  // CHW, as the other readers
      for (int64_t ch = 0; ch < c; ++ch)
        for (int64_t p = 0; p < r * r; ++p) dst[ch * r * r + p] = pixels[p * c + ch] * (2.0f / 255.0f) - 1.0f;
    }
  }

 private:
  // Decodes record `index`; a file that no longer decodes is skipped by taking the next record
  // that does (the same on every rank, so replicas still see the same global batch).
  void decode_or_substitute(int64_t index, uint8_t* out) const {
    std::string why;
    for (int64_t k = 0; k < size(); ++k) {
      const int64_t j = (index + k) % size();
      std::string reason;
      if (decode(files_[j], out, reason)) {
        if (k > 0) report_skip(files_[index], why, files_[j]);
        return;
      }
      if (k == 0) why = files_[index] + ": " + reason;
    }
    throw DataError("data.path " + folder_ + ": no image decodes any more (first failure: " + why + ")");
  }

  void report_skip(const std::string& file, const std::string& why, const std::string& instead) const {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!reported_.insert(file).second) return;
    }
    const int64_t count = ++skipped_while_reading_;
    if (warn_)
      warn_("gantry: warning: image " + why + "; skipped (" + std::to_string(count) +
            " so far while training), read " + instead + " in its place");
  }

  // Decodes `file` into out (resolution x resolution x channels); false with the reason when it
  // cannot be decoded.
  bool decode(const std::string& file, uint8_t* out, std::string& why) const {
    thread_local std::vector<uint8_t> image;  // the whole decoded file, reused by this thread
    ImageSize size;
    const int c = static_cast<int>(channels_);
    if (!decode_image(file, c, image, size, why)) return false;
    const int w = size.width, h = size.height;
    // Centre crop to the largest square, then resize it: area average when it shrinks,
    // Catmull-Rom (stb_image_resize) when it grows.
    const int side = std::min(w, h);
    const uint8_t* crop = image.data() + (static_cast<size_t>((h - side) / 2) * w + (w - side) / 2) * c;
    const int r = static_cast<int>(resolution_);
    if (side == r) {
      for (int y = 0; y < r; ++y) std::copy_n(crop + static_cast<size_t>(y) * w * c, r * c, out + static_cast<size_t>(y) * r * c);
      return true;
    }
    if (side > r) {
      area_shrink(crop, side, static_cast<size_t>(w) * c, r, c, out);
      return true;
    }
    if (!stbir_resize_uint8_generic(crop, side, side, w * c, out, r, r, r * c, c, STBIR_ALPHA_CHANNEL_NONE, 0,
                                    STBIR_EDGE_CLAMP, STBIR_FILTER_CATMULLROM, STBIR_COLORSPACE_LINEAR, nullptr)) {
      why = "cannot resize from " + std::to_string(side) + "x" + std::to_string(side);
      return false;
    }
    return true;
  }

  std::string folder_;
  std::vector<std::string> files_;
  int64_t resolution_, channels_;
  std::function<void(const std::string&)> warn_;
  mutable std::mutex mutex_;
  mutable std::set<std::string> reported_;
  mutable std::atomic<int64_t> skipped_while_reading_{0};
};

}  // namespace

std::unique_ptr<Dataset> open_image_folder(const std::string& folder, int64_t resolution, int64_t channels,
                                           const std::function<void(const std::string&)>& warn) {
  if (channels != 1 && channels != 3)
    throw DataError("data.channels must be 1 or 3 for an image folder, got " + std::to_string(channels));
  if (resolution < 1 || resolution > 4096)
    throw DataError("data.resolution must be 1..4096, got " + std::to_string(resolution));
  std::error_code ec;
  if (!fs::is_directory(folder, ec))
    throw DataError("data.path " + folder + ": not a folder (images: a folder of PNG/JPEG files)");
  // Sorted paths: every rank numbers the records alike.
  std::vector<std::string> candidates;
  for (fs::recursive_directory_iterator it(folder, fs::directory_options::follow_directory_symlink, ec), end;
       !ec && it != end; it.increment(ec))
    if (it->is_regular_file(ec) && is_image_file(it->path())) candidates.push_back(it->path().string());
  if (ec) throw DataError("data.path " + folder + ": cannot list it: " + ec.message());
  std::sort(candidates.begin(), candidates.end());

  // The header check reads only the first bytes of each file; pixels are decoded when read.
  std::vector<std::string> files, skipped;
  for (auto& file : candidates) {
    std::string why;
    ImageSize size;
    if (probe_image(file, size, why)) files.push_back(std::move(file));
    else skipped.push_back(file + " (" + why + ")");
  }
  if (files.empty())
    throw DataError("data.path " + folder + ": no readable PNG or JPEG image (" + std::to_string(candidates.size()) +
                    " file(s) named *.png/*.jpg/*.jpeg, " + std::to_string(skipped.size()) + " unreadable" +
                    (skipped.empty() ? "" : ", e.g. " + skipped.front()) + ")");
  if (!skipped.empty() && warn) {
    constexpr size_t kNamed = 10;
    std::string names;
    for (size_t i = 0; i < std::min(skipped.size(), kNamed); ++i) names += (i ? ", " : "") + skipped[i];
    if (skipped.size() > kNamed) names += ", and " + std::to_string(skipped.size() - kNamed) + " more";
    warn("gantry: warning: data.path " + folder + ": skipped " + std::to_string(skipped.size()) + " unreadable image(s) of " +
         std::to_string(candidates.size()) + ": " + names);
  }
  return std::make_unique<ImageFolder>(folder, std::move(files), resolution, channels, warn);
}

}  // namespace gantry::datasets
