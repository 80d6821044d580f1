// Implements: Reporter (see reporter.h).
#include "trainer/reporter.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>

namespace gantry {

namespace {

// A progress bar only on a real terminal. mpirun and srun hand ranks a pseudo-terminal even when
// their own output goes to a file, so under a launcher the bar needs GANTRY_PROGRESS=1.
bool want_progress_bar() {
  const char* forced = std::getenv("GANTRY_PROGRESS");
  if (forced) return std::strcmp(forced, "1") == 0;
  if (!isatty(STDOUT_FILENO)) return false;
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "SLURM_PROCID"})
    if (std::getenv(var)) return false;
  return true;
}

}  // namespace

Reporter::Reporter(bool active, const std::string& run_dir, int64_t total_steps)
    : active_(active), tty_(active && want_progress_bar()), total_steps_(total_steps),
      jsonl_path_(run_dir + "/log.jsonl") {}

void Reporter::log(const LogRecord& r) {
  if (!active_) return;
  if (!jsonl_.is_open()) {  // opened at the first record, after a resume has trimmed the file
    jsonl_.open(jsonl_path_, std::ios::app);
    if (!jsonl_) throw std::runtime_error("cannot open " + jsonl_path_ + " for writing");
  }
  nlohmann::json j = {{"step", r.step},       {"epoch", r.epoch},   {"d_loss", r.d_loss},
                      {"g_loss", r.g_loss},   {"d_real", r.d_real}, {"d_fake", r.d_fake},
                      {"img_per_s", r.img_per_s}, {"data_wait_s", r.data_wait_s},
                      {"lr_g", r.lr_g},       {"lr_d", r.lr_d}};
  if (r.fake_mean) j["fake_mean"] = *r.fake_mean;
  if (r.fake_std) j["fake_std"] = *r.fake_std;
  if (r.r1_penalty) j["r1_penalty"] = *r.r1_penalty;
  if (r.cr_penalty) j["cr_penalty"] = *r.cr_penalty;
  jsonl_ << j.dump() << '\n';
  jsonl_.flush();

  char line[256];
  std::snprintf(line, sizeof line,
                "step %6lld/%lld  epoch %3lld  D loss %.4f  G loss %.4f  D(x) %.3f  D(G(z)) %.3f  %.0f img/s",
                static_cast<long long>(r.step), static_cast<long long>(total_steps_),
                static_cast<long long>(r.epoch), r.d_loss, r.g_loss, r.d_real, r.d_fake, r.img_per_s);
  std::string text = line;
  if (r.fake_mean) {
    std::snprintf(line, sizeof line, "  fake mean %.3f std %.3f", *r.fake_mean, *r.fake_std);
    text += line;
  }
  if (r.r1_penalty) {
    std::snprintf(line, sizeof line, "  R1 %.4g", *r.r1_penalty);
    text += line;
  }
  if (r.cr_penalty) {
    std::snprintf(line, sizeof line, "  CR %.4g", *r.cr_penalty);
    text += line;
  }
  message(text);
  draw_progress(r.step);
}

void Reporter::message(const std::string& text) {
  if (!active_) return;
  if (bar_drawn_) std::fputs("\r\033[K", stdout);
  std::fputs(text.c_str(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
  bar_drawn_ = false;
}

void Reporter::draw_progress(int64_t step) {
  if (!tty_) return;
  constexpr int kWidth = 40;
  const double frac = total_steps_ > 0 ? static_cast<double>(step) / total_steps_ : 1.0;
  const int filled = static_cast<int>(frac * kWidth);
  std::string bar(filled, '#');
  bar.resize(kWidth, '.');
  std::printf("[%s] %3.0f%%", bar.c_str(), frac * 100);
  std::fflush(stdout);
  bar_drawn_ = true;
}

void Reporter::finish() {
  if (active_ && bar_drawn_) std::fputc('\n', stdout);
  bar_drawn_ = false;
}

}  // namespace gantry
