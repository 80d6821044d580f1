// Implements: rank 0's view of training: one console line per log interval (with a progress bar
// on a TTY) and one JSON object per logged step in <run.dir>/log.jsonl. Statistics arrive
// already averaged across ranks.
#pragma once

#include <cstdint>
#include <fstream>
#include <optional>
#include <string>

namespace gantry {

struct LogRecord {
  int64_t step = 0;  // G updates done
  int64_t epoch = 0;
  double d_loss = 0, g_loss = 0, d_real = 0, d_fake = 0;
  double img_per_s = 0;  // real images per second, whole job
  double data_wait_s = 0;  // seconds per step the training thread waited for data (rank average)
  double lr_g = 0, lr_d = 0;  // the learning rates of the last step (optim.schedule)
  std::optional<double> fake_mean, fake_std;  // gaussian1d only
  std::optional<double> r1_penalty;  // train.r1_gamma: mean ||grad_x D(x)||^2 on the reals
  std::optional<double> cr_penalty;  // train.cr_weight: mean consistency penalty, reals' and fakes' summed
};

class Reporter {
 public:
  // Inactive (prints and writes nothing) unless `active`, which is true on rank 0.
  Reporter(bool active, const std::string& run_dir, int64_t total_steps);
  void log(const LogRecord& record);
  void message(const std::string& line);
  void finish();

 private:
  void draw_progress(int64_t step);

  bool active_;
  bool tty_;
  int64_t total_steps_;
  std::string jsonl_path_;
  std::ofstream jsonl_;
  bool bar_drawn_ = false;
};

}  // namespace gantry
