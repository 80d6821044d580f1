// Tests: the image-folder reader (data.name: images) on PNG and JPEG files written here with
// stb: exact pixels, centre crop and resize, gray/RGB conversion, corrupt files skipped with a
// warning naming them, no readable image as an error, hflip through the stream, config keys.
#include <gtest/gtest.h>

#include <stb_image_write.h>
#include <unistd.h>
#include <zlib.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <mutex>

#include "datasets/dataset.h"
#include "datasets/stream.h"
#include "fixtures.h"
#include "trainer/config.h"

namespace fs = std::filesystem;
using namespace gantry::datasets;
using namespace gantry::testing;

namespace {

float decoded(int byte) { return static_cast<float>(byte) * (2.0f / 255.0f) - 1.0f; }

// Pixels a known function of (x, y, channel).
uint8_t pattern(int x, int y, int c) { return static_cast<uint8_t>(10 + 40 * x + 7 * y + 60 * c); }

std::vector<uint8_t> image(int w, int h, int comp, const std::function<uint8_t(int, int, int)>& f) {
  std::vector<uint8_t> px(static_cast<size_t>(w * h * comp));
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < comp; ++c) px[(y * w + x) * comp + c] = f(x, y, c);
  return px;
}

void write_png(const fs::path& p, int w, int h, int comp, const std::vector<uint8_t>& px) {
  ASSERT_TRUE(stbi_write_png(p.c_str(), w, h, comp, px.data(), w * comp)) << p;
}

void write_jpg(const fs::path& p, int w, int h, int comp, const std::vector<uint8_t>& px) {
  ASSERT_TRUE(stbi_write_jpg(p.c_str(), w, h, comp, px.data(), 100)) << p;
}

// Warnings, collected from whichever thread reports them.
struct Warnings {
  std::mutex mutex;
  std::vector<std::string> lines;
  std::function<void(const std::string&)> sink() {
    return [this](const std::string& m) {
      std::lock_guard<std::mutex> lock(mutex);
      lines.push_back(m);
    };
  }
  std::string text() {
    std::lock_guard<std::mutex> lock(mutex);
    std::string all;
    for (const auto& l : lines) all += l + "\n";
    return all;
  }
};

std::vector<float> read_all(const Dataset& d) {
  std::vector<int64_t> idx(static_cast<size_t>(d.size()));
  for (int64_t i = 0; i < d.size(); ++i) idx[i] = i;
  std::vector<float> out(static_cast<size_t>(d.size() * d.shape().numel()));
  d.read(idx.data(), d.size(), out.data());
  return out;
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace

// a.png (RGB), b.jpg (one colour: JPEG is lossy, so within 2 levels), c.png (gray) in an RGB
// folder, plus a text file that is not an image: sorted by path, CHW, x / 127.5 - 1.
TEST(ImageFolder, MixedPngJpegAndGrayInAnRgbFolder) {
  const auto dir = fresh_dir("images-mixed");
  write_png(dir / "a.png", 4, 4, 3, image(4, 4, 3, pattern));
  write_jpg(dir / "b.jpg", 8, 8, 3, image(8, 8, 3, [](int, int, int c) { return static_cast<uint8_t>(50 + 80 * c); }));
  write_png(dir / "c.png", 4, 4, 1, image(4, 4, 1, [](int x, int y, int) { return static_cast<uint8_t>(30 * x + y); }));
  std::ofstream(dir / "notes.txt") << "not an image";
  Warnings warnings;
  const auto data = open_image_folder(dir.string(), 4, 3, warnings.sink());
  ASSERT_EQ(data->size(), 3) << warnings.text();
  EXPECT_EQ(data->shape().channels, 3);
  EXPECT_EQ(data->shape().height, 4);
  EXPECT_EQ(data->shape().width, 4);
  EXPECT_TRUE(warnings.lines.empty());
  const auto out = read_all(*data);
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < 4; ++y)
      for (int x = 0; x < 4; ++x) {
        const size_t at = static_cast<size_t>(c * 16 + y * 4 + x);
        EXPECT_EQ(out[at], decoded(pattern(x, y, c))) << "a.png c" << c << " y" << y << " x" << x;
        // 8x8 -> 4x4: an area average of one colour stays that colour.
        EXPECT_NEAR(out[48 + at], decoded(50 + 80 * c), 2 * 2.0 / 255.0) << "b.jpg c" << c;
        EXPECT_EQ(out[96 + at], decoded(30 * x + y)) << "c.png: gray replicated into every channel";
      }
}

// RGB to gray is stb's luma, (77 R + 150 G + 29 B) >> 8; gray stays exact.
TEST(ImageFolder, OneChannelFolderConvertsRgbToLuma) {
  const auto dir = fresh_dir("images-gray");
  write_png(dir / "rgb.png", 2, 2, 3, image(2, 2, 3, pattern));
  write_png(dir / "zgray.png", 2, 2, 1, image(2, 2, 1, [](int x, int y, int) { return static_cast<uint8_t>(200 + x + 2 * y); }));
  const auto data = open_image_folder(dir.string(), 2, 1);
  ASSERT_EQ(data->size(), 2);
  const auto out = read_all(*data);
  for (int y = 0; y < 2; ++y)
    for (int x = 0; x < 2; ++x) {
      const int luma = (77 * pattern(x, y, 0) + 150 * pattern(x, y, 1) + 29 * pattern(x, y, 2)) >> 8;
      EXPECT_EQ(out[y * 2 + x], decoded(luma));
      EXPECT_EQ(out[4 + y * 2 + x], decoded(200 + x + 2 * y));
    }
}

// A 6x4 image is centre-cropped to its middle 4x4; an 8x8 image of 2x2 blocks shrinks to the
// blocks' values exactly (area average), and so does a 6x6 image at a ratio of 1.5; a one-colour
// 2x2 image grows to 4x4 of that colour.
TEST(ImageFolder, CentreCropAndResize) {
  const auto dir = fresh_dir("images-resize");
  write_png(dir / "1-wide.png", 6, 4, 1,
            image(6, 4, 1, [](int x, int y, int) { return static_cast<uint8_t>(x == 0 || x == 5 ? 255 : 10 * x + y); }));
  write_png(dir / "2-blocks.png", 8, 8, 1,
            image(8, 8, 1, [](int x, int y, int) { return static_cast<uint8_t>(20 * (x / 2) + 60 * (y / 2)); }));
  write_png(dir / "3-small.png", 2, 2, 1, image(2, 2, 1, [](int, int, int) { return uint8_t{77}; }));
  write_png(dir / "4-tall.png", 2, 6, 1,
            image(2, 6, 1, [](int, int y, int) { return static_cast<uint8_t>(y == 0 || y == 5 ? 255 : 100); }));
  write_png(dir / "5-ratio.png", 6, 6, 1, image(6, 6, 1, [](int x, int, int) { return static_cast<uint8_t>(30 * x); }));
  const auto data = open_image_folder(dir.string(), 4, 1);
  ASSERT_EQ(data->size(), 5);
  const auto out = read_all(*data);
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 4; ++x) {
      EXPECT_EQ(out[y * 4 + x], decoded(10 * (x + 1) + y)) << "crop y" << y << " x" << x;
      EXPECT_EQ(out[16 + y * 4 + x], decoded(20 * x + 60 * y)) << "box y" << y << " x" << x;
      EXPECT_EQ(out[32 + y * 4 + x], decoded(77)) << "upsample y" << y << " x" << x;
    }
  // 2x6 crops to the middle 2x2 (rows 2-3), all 100, then grows to 4x4.
  for (int p = 0; p < 16; ++p) EXPECT_EQ(out[48 + p], decoded(100)) << p;
  // 6 -> 4 columns: each output covers 1.5 inputs, e.g. (0 + 30 / 2) / 1.5 = 10, (30 / 2 + 60) / 1.5 = 50.
  const int area[4] = {10, 50, 100, 140};
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 4; ++x) EXPECT_EQ(out[64 + y * 4 + x], decoded(area[x])) << "area y" << y << " x" << x;
}

// Garbage named .png is skipped when the folder is opened, with a warning naming it and the
// count; a PNG whose header reads but whose pixels are cut off is skipped when it is read: the
// next image takes its place and a warning names it once.
TEST(ImageFolder, CorruptFilesAreSkippedWithAWarningNamingThem) {
  const auto dir = fresh_dir("images-corrupt");
  write_png(dir / "a.png", 4, 4, 3, image(4, 4, 3, pattern));
  write_bytes(dir / "b-garbage.png", std::vector<uint8_t>(300, 0x5a));
  write_png(dir / "c-cut.png", 4, 4, 3, image(4, 4, 3, [](int, int, int) { return uint8_t{1}; }));
  fs::resize_file(dir / "c-cut.png", 45);  // signature + IHDR (33 bytes) survive, IDAT does not
  write_jpg(dir / "d.jpg", 4, 4, 3, image(4, 4, 3, [](int, int, int c) { return static_cast<uint8_t>(90 + 50 * c); }));
  Warnings warnings;
  const auto data = open_image_folder(dir.string(), 4, 3, warnings.sink());
  ASSERT_EQ(data->size(), 3) << "a.png, c-cut.png, d.jpg; " << warnings.text();
  ASSERT_EQ(warnings.lines.size(), 1u);
  EXPECT_NE(warnings.lines[0].find("skipped 1 unreadable image(s) of 4"), std::string::npos) << warnings.lines[0];
  EXPECT_NE(warnings.lines[0].find((dir / "b-garbage.png").string()), std::string::npos) << warnings.lines[0];

  std::vector<float> cut(48), next(48);
  const int64_t one = 1, two = 2;
  data->read(&one, 1, cut.data());
  data->read(&two, 1, next.data());
  EXPECT_EQ(cut, next) << "the cut file's slot holds the next readable image";
  data->read(&one, 1, cut.data());
  ASSERT_EQ(warnings.lines.size(), 2u) << "named once, however often it is read";
  EXPECT_NE(warnings.lines[1].find((dir / "c-cut.png").string()), std::string::npos) << warnings.lines[1];
  EXPECT_NE(warnings.lines[1].find((dir / "d.jpg").string()), std::string::npos) << warnings.lines[1];
}

// Only PNG and JPEG files are decoded (a BMP named .png is not), and a header cannot ask for gigabytes.
TEST(ImageFolder, OtherFormatsAndHugeHeadersAreSkipped) {
  const auto dir = fresh_dir("images-hostile");
  write_png(dir / "a.png", 4, 4, 3, image(4, 4, 3, pattern));
  const auto px = image(4, 4, 3, pattern);
  ASSERT_TRUE(stbi_write_bmp((dir / "b-bmp.png").c_str(), 4, 4, 3, px.data()));
  write_png(dir / "c-huge.png", 4, 4, 3, px);
  {  // IHDR's width and height (bytes 16..23, big-endian) say 10000 x 10000, with a valid CRC
    std::fstream f(dir / "c-huge.png", std::ios::in | std::ios::out | std::ios::binary);
    unsigned char chunk[17];  // "IHDR" and its 13 bytes of data
    f.seekg(12);
    f.read(reinterpret_cast<char*>(chunk), 17);
    const unsigned char size[8] = {0, 0, 0x27, 0x10, 0, 0, 0x27, 0x10};
    std::memcpy(chunk + 4, size, 8);
    const uint32_t crc = static_cast<uint32_t>(crc32(0, chunk, 17));
    const unsigned char crc_bytes[4] = {static_cast<unsigned char>(crc >> 24), static_cast<unsigned char>(crc >> 16),
                                        static_cast<unsigned char>(crc >> 8), static_cast<unsigned char>(crc)};
    f.seekp(12);
    f.write(reinterpret_cast<const char*>(chunk), 17);
    f.write(reinterpret_cast<const char*>(crc_bytes), 4);
  }
  Warnings warnings;
  const auto data = open_image_folder(dir.string(), 4, 3, warnings.sink());
  EXPECT_EQ(data->size(), 1) << "only a.png";
  ASSERT_EQ(warnings.lines.size(), 1u);
  EXPECT_NE(warnings.lines[0].find("b-bmp.png"), std::string::npos) << warnings.lines[0];
  EXPECT_NE(warnings.lines[0].find("c-huge.png (10000x10000 pixels, more than the 64-megapixel limit)"),
            std::string::npos) << warnings.lines[0];
}

TEST(ImageFolder, NoReadableImageIsAnErrorNamingTheFolder) {
  const auto empty = fresh_dir("images-empty");
  std::ofstream(empty / "readme.txt") << "x";
  std::string e = error_of([&] { open_image_folder(empty.string(), 8, 3); });
  EXPECT_NE(e.find(empty.string() + ": no readable PNG or JPEG image (0 file(s)"), std::string::npos) << e;

  const auto bad = fresh_dir("images-bad");
  write_bytes(bad / "x.jpg", std::vector<uint8_t>(100, 0));
  e = error_of([&] { open_image_folder(bad.string(), 8, 3); });
  EXPECT_NE(e.find("no readable PNG or JPEG image (1 file(s) named *.png/*.jpg/*.jpeg, 1 unreadable, e.g. " +
                   (bad / "x.jpg").string()),
            std::string::npos)
      << e;

  e = error_of([&] { open_dataset({"images", (empty / "missing").string(), "train"}); });
  EXPECT_NE(e.find((empty / "missing").string() + ": not a folder"), std::string::npos) << e;
}

// hflip works on image records as on CIFAR-10: each delivered image is the file or its mirror,
// and over a few epochs both occur.
TEST(ImageFolder, HflipThroughTheStream) {
  const auto dir = fresh_dir("images-hflip");
  write_png(dir / "a.png", 4, 4, 3, image(4, 4, 3, pattern));
  write_png(dir / "b.png", 4, 4, 3, image(4, 4, 3, [](int x, int y, int c) { return pattern(3 - y, x, c); }));
  DatasetSpec spec{"images", dir.string(), "train"};
  spec.resolution = 4;
  spec.channels = 3;
  std::shared_ptr<const Dataset> data = open_dataset(spec);
  const torch::Tensor files = torch::from_blob(read_all(*data).data(), {2, 3, 4, 4}).clone();
  DataStream stream(data, 2, 0, 1, 5, StreamOptions{2, 2, true});
  int flipped = 0, kept = 0;
  for (int b = 0; b < 16; ++b) {
    const torch::Tensor batch = stream.next();
    for (int i = 0; i < 2; ++i) {
      const torch::Tensor x = batch[i];
      const bool is_a = torch::equal(x, files[0]) || torch::equal(x.flip({2}), files[0]);
      const torch::Tensor file = files[is_a ? 0 : 1];
      if (torch::equal(x, file)) ++kept;
      else if (torch::equal(x, file.flip({2}))) ++flipped;
      else ADD_FAILURE() << "batch " << b << " image " << i << " is neither a file nor its mirror";
    }
  }
  EXPECT_GT(flipped, 0);
  EXPECT_GT(kept, 0);
}

// On a CPU-only LibTorch (or a CPU model) batches are plain host tensors: nothing pinned.
TEST(DataStream, CpuDeviceGivesUnpinnedHostBatches) {
  const auto dir = fresh_dir("images-cpu");
  write_png(dir / "a.png", 4, 4, 3, image(4, 4, 3, pattern));
  write_png(dir / "b.png", 4, 4, 3, image(4, 4, 3, pattern));
  StreamOptions options{1, 1, false};
  options.device = torch::kCPU;
  DataStream stream(open_image_folder(dir.string(), 4, 3), 2, 0, 1, 0, options);
  const torch::Tensor batch = stream.next();
  EXPECT_TRUE(batch.device().is_cpu());
  EXPECT_FALSE(batch.is_pinned());
}

TEST(ImageFolder, ConfigKeys) {
  using gantry::load_config;
  const auto dir = fresh_dir("images-config");
  const fs::path yaml = dir / "run.yaml";
  std::ofstream(yaml) << "data:\n  name: images\n  path: /somewhere\n  resolution: 64\n  channels: 1\n";
  const auto config = load_config(yaml.string(), {});
  EXPECT_EQ(config.data.name, "images");
  EXPECT_EQ(config.data.resolution, 64);
  EXPECT_EQ(config.data.channels, 1);
  std::string e = error_of([&] { load_config(yaml.string(), {"data.channels=2"}); });
  EXPECT_NE(e.find("data.channels: must be 1 or 3, got 2"), std::string::npos) << e;
  e = error_of([&] { load_config(yaml.string(), {"data.resolution=0"}); });
  EXPECT_NE(e.find("data.resolution: must be 1..4096, got 0"), std::string::npos) << e;
}
