// Tests (unit): the Prometheus metrics. Each family's type, labels and values after updates; one
// real GAN step recorded as training records it, with gantry_loss equal to what log.jsonl says;
// non-finite losses counted; /metrics served over HTTP; the file_sd discovery file.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <prometheus/gauge.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "monitoring/exporter.h"
#include "monitoring/metrics.h"
#include "tests/small_models.h"
#include "trainer/augment.h"
#include "trainer/latent.h"
#include "trainer/training_metrics.h"

using namespace gantry;
using prometheus::MetricType;
namespace fs = std::filesystem;

namespace {
comm::Runtime* g_runtime = nullptr;

using Families = std::vector<prometheus::MetricFamily>;

const prometheus::MetricFamily* find_family(const Families& all, const std::string& name) {
  for (const auto& f : all)
    if (f.name == name) return &f;
  return nullptr;
}

std::string label(const prometheus::ClientMetric& m, const std::string& name) {
  for (const auto& l : m.label)
    if (l.name == name) return l.value;
  return "<none>";
}

// The one metric of `family` whose label `key` is `value` (key empty: the family's only metric).
const prometheus::ClientMetric& metric(const Families& all, const std::string& family, const std::string& key = "",
                                       const std::string& value = "") {
  const auto* f = find_family(all, family);
  if (!f) throw std::runtime_error("no family " + family);
  for (const auto& m : f->metric)
    if (key.empty() ? f->metric.size() == 1 : label(m, key) == value) return m;
  throw std::runtime_error("no metric " + family + "{" + key + "=" + value + "}");
}

MetricType type_of(const Families& all, const std::string& family) { return find_family(all, family)->type; }

double now_s() { return static_cast<double>(std::time(nullptr)); }

// A plain HTTP/1.0 GET on loopback: the whole response, status line included.
std::string http_get(int port, const std::string& path) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return "connect failed";
  }
  const std::string request = "GET " + path + " HTTP/1.0\r\nHost: localhost\r\n\r\n";
  ::send(fd, request.data(), request.size(), 0);
  std::string out;
  char buffer[4096];
  for (ssize_t n; (n = ::recv(fd, buffer, sizeof buffer, 0)) > 0;) out.append(buffer, static_cast<size_t>(n));
  ::close(fd);
  return out;
}

Config gaussian_config() {
  Config c;
  c.data.name = "gaussian1d";
  c.model.arch = "mlp";
  c.model.z_dim = 4;
  c.model.mlp.g_hidden = {8};
  c.model.mlp.d_hidden = {8};
  c.optim.g.lr = 1e-3;
  c.optim.d.lr = 3e-4;
  return c;
}

// The line the reporter writes to log.jsonl for `r`, read back as JSON.
nlohmann::json logged_line(const LogRecord& r) {
  const fs::path dir = fs::temp_directory_path() / ("gantry-test-monitoring-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  {
    Reporter reporter(true, dir.string(), 1);
    reporter.log(r);
  }
  std::ifstream in(dir / "log.jsonl");
  std::string line;
  std::getline(in, line);
  fs::remove_all(dir);
  return nlohmann::json::parse(line);  // throws on an empty line: nothing was logged
}

}  // namespace

TEST(RankMetrics, FamiliesTypesLabelsAndValues) {
  prometheus::Registry registry;
  monitoring::RankMetrics rank(registry, {1, 1, 4, "node7", "cpu"});
  monitoring::StepSample s;
  s.phase_seconds = {0.001, 0.002, 0.003, 0.004, 0.005};
  s.images = 32;
  s.bytes_reduced = {1000, 3000};
  const double before = now_s();
  rank.record_step(s);
  s.bytes_reduced = {2500, 3000};  // cumulative: the counters grow by the difference
  rank.record_step(s);
  rank.add_nonfinite(monitoring::kDiscriminator, 3);
  const Families all = registry.Collect();

  EXPECT_EQ(type_of(all, "gantry_steps_total"), MetricType::Counter);
  EXPECT_EQ(metric(all, "gantry_steps_total").counter.value, 2);
  EXPECT_EQ(metric(all, "gantry_images_total").counter.value, 64);
  EXPECT_EQ(type_of(all, "gantry_step_phase_seconds"), MetricType::Histogram);
  EXPECT_EQ(find_family(all, "gantry_step_phase_seconds")->metric.size(), 5u);
  const char* phases[] = {"data", "d_forward_backward", "g_forward_backward", "allreduce", "optimizer"};
  for (int p = 0; p < 5; ++p) {
    const auto& h = metric(all, "gantry_step_phase_seconds", "phase", phases[p]).histogram;
    EXPECT_EQ(h.sample_count, 2u) << phases[p];
    EXPECT_DOUBLE_EQ(h.sample_sum, 2 * s.phase_seconds[p]) << phases[p];
  }
  EXPECT_EQ(type_of(all, "gantry_allreduce_bytes_total"), MetricType::Counter);
  EXPECT_EQ(metric(all, "gantry_allreduce_bytes_total", "network", "generator").counter.value, 2500);
  EXPECT_EQ(metric(all, "gantry_allreduce_bytes_total", "network", "discriminator").counter.value, 3000);
  EXPECT_EQ(type_of(all, "gantry_nonfinite_total"), MetricType::Counter);
  EXPECT_EQ(metric(all, "gantry_nonfinite_total", "network", "discriminator").counter.value, 3);
  EXPECT_EQ(metric(all, "gantry_nonfinite_total", "network", "generator").counter.value, 0);
  EXPECT_EQ(type_of(all, "gantry_last_step_timestamp_seconds"), MetricType::Gauge);
  EXPECT_GE(metric(all, "gantry_last_step_timestamp_seconds").gauge.value, before);
  EXPECT_LE(metric(all, "gantry_last_step_timestamp_seconds").gauge.value, now_s());
  const auto& info = metric(all, "gantry_rank_info");
  EXPECT_EQ(info.gauge.value, 1);
  EXPECT_EQ(label(info, "rank"), "1");
  EXPECT_EQ(label(info, "local_rank"), "1");
  EXPECT_EQ(label(info, "world_size"), "4");
  EXPECT_EQ(label(info, "host"), "node7");
  EXPECT_EQ(label(info, "device"), "cpu");
  // No device memory on a CPU rank, and asking for it is a programming error.
  EXPECT_EQ(find_family(all, "gantry_device_memory_allocated_bytes"), nullptr);
  EXPECT_THROW(rank.set_device_memory(1, 2), std::logic_error);
  // Job statistics are rank 0's alone.
  EXPECT_EQ(find_family(all, "gantry_loss"), nullptr);
}

TEST(RankMetrics, CudaRankExportsDeviceMemory) {
  prometheus::Registry registry;
  monitoring::RankMetrics rank(registry, {0, 0, 1, "h", "cuda:0"});
  rank.set_device_memory(1 << 20, 3 << 20);
  const Families all = registry.Collect();
  EXPECT_EQ(metric(all, "gantry_device_memory_allocated_bytes").gauge.value, 1 << 20);
  EXPECT_EQ(metric(all, "gantry_device_memory_peak_bytes").gauge.value, 3 << 20);
}

TEST(JobMetrics, StatisticsHistogramCheckpointsAndBuildInfo) {
  prometheus::Registry registry;
  const double before = now_s();
  monitoring::JobMetrics job(registry, {"1.2.3", "abcdef"});
  monitoring::JobSample s;
  s.step = 700;
  s.loss = {0.75, 1.25};
  s.learning_rate = {1e-3, 2e-4};
  s.gradient_norm = {0.5, 0.25};
  s.discriminator_score = {0.6, 0.4};
  s.images_per_second = 1234.5;
  job.record(s);
  const size_t n = monitoring::JobMetrics::discriminator_output_buckets().size() + 1;
  std::vector<double> counts(n, 0.0);
  counts[0] = 2;   // <= 0.05
  counts[9] = 5;   // (0.45, 0.5]
  counts[19] = 1;  // (0.95, 1.0]
  job.observe_discriminator_output(monitoring::kReal, counts, 3.3);
  EXPECT_THROW(job.observe_discriminator_output(monitoring::kFake, {1.0}, 0.5), std::invalid_argument);
  Families all = registry.Collect();
  EXPECT_EQ(metric(all, "gantry_checkpoint_last_step").gauge.value, 0);
  EXPECT_GE(metric(all, "gantry_checkpoint_last_success_timestamp_seconds").gauge.value, before);  // training start
  job.checkpoint_saved(600, 0.5);
  job.checkpoint_failed();
  all = registry.Collect();

  EXPECT_EQ(type_of(all, "gantry_loss"), MetricType::Gauge);
  EXPECT_EQ(metric(all, "gantry_loss", "network", "generator").gauge.value, 0.75);
  EXPECT_EQ(metric(all, "gantry_loss", "network", "discriminator").gauge.value, 1.25);
  EXPECT_EQ(metric(all, "gantry_learning_rate", "network", "discriminator").gauge.value, 2e-4);
  EXPECT_EQ(metric(all, "gantry_gradient_norm", "network", "generator").gauge.value, 0.5);
  EXPECT_EQ(metric(all, "gantry_discriminator_score", "input", "real").gauge.value, 0.6);
  EXPECT_EQ(metric(all, "gantry_discriminator_score", "input", "fake").gauge.value, 0.4);
  EXPECT_EQ(metric(all, "gantry_images_per_second").gauge.value, 1234.5);
  EXPECT_EQ(metric(all, "gantry_logged_step").gauge.value, 700);

  EXPECT_EQ(type_of(all, "gantry_discriminator_output"), MetricType::Histogram);
  const auto& h = metric(all, "gantry_discriminator_output", "input", "real").histogram;
  EXPECT_EQ(h.sample_count, 8u);
  EXPECT_DOUBLE_EQ(h.sample_sum, 3.3);
  ASSERT_EQ(h.bucket.size(), n);  // cumulative, `le` upper bounds, +Inf last
  EXPECT_DOUBLE_EQ(h.bucket[0].upper_bound, 0.05);
  EXPECT_EQ(h.bucket[0].cumulative_count, 2u);
  EXPECT_EQ(h.bucket[8].cumulative_count, 2u);
  EXPECT_EQ(h.bucket[9].cumulative_count, 7u);
  EXPECT_DOUBLE_EQ(h.bucket[19].upper_bound, 1.0);
  EXPECT_EQ(h.bucket[19].cumulative_count, 8u);
  EXPECT_EQ(metric(all, "gantry_discriminator_output", "input", "fake").histogram.sample_count, 0u);

  EXPECT_EQ(type_of(all, "gantry_checkpoint_saves_total"), MetricType::Counter);
  EXPECT_EQ(metric(all, "gantry_checkpoint_saves_total", "result", "success").counter.value, 1);
  EXPECT_EQ(metric(all, "gantry_checkpoint_saves_total", "result", "failure").counter.value, 1);
  EXPECT_EQ(type_of(all, "gantry_checkpoint_save_seconds"), MetricType::Histogram);
  EXPECT_EQ(metric(all, "gantry_checkpoint_save_seconds").histogram.sample_count, 1u);
  EXPECT_DOUBLE_EQ(metric(all, "gantry_checkpoint_save_seconds").histogram.sample_sum, 0.5);
  EXPECT_EQ(metric(all, "gantry_checkpoint_last_step").gauge.value, 600);
  const auto& build = metric(all, "gantry_build_info");
  EXPECT_EQ(build.gauge.value, 1);
  EXPECT_EQ(label(build, "version"), "1.2.3");
  EXPECT_EQ(label(build, "config_digest"), "abcdef");

  // eval.frechet_every: no gauge before the first measurement (a 0 would read as a perfect G).
  auto named = [&](const std::string& name) {
    return std::count_if(all.begin(), all.end(), [&](const auto& f) { return f.name == name; });
  };
  EXPECT_EQ(named("gantry_frechet_distance"), 0);
  job.record_frechet_distance(500, 12.5);
  job.record_frechet_distance(1000, 7.25);
  all = registry.Collect();
  EXPECT_EQ(type_of(all, "gantry_frechet_distance"), MetricType::Gauge);
  EXPECT_EQ(metric(all, "gantry_frechet_distance").gauge.value, 7.25);
  EXPECT_EQ(metric(all, "gantry_frechet_distance_step").gauge.value, 1000);

  // train.r1_gamma: no gauge until a sample carries the R1 penalty; an interval without one
  // leaves the last value standing.
  EXPECT_EQ(named("gantry_r1_penalty"), 0);
  s.r1_penalty = 0.375;
  job.record(s);
  s.r1_penalty.reset();
  job.record(s);
  all = registry.Collect();
  EXPECT_EQ(type_of(all, "gantry_r1_penalty"), MetricType::Gauge);
  EXPECT_EQ(metric(all, "gantry_r1_penalty").gauge.value, 0.375);
  // train.cr_weight's penalty likewise, on its own series.
  EXPECT_EQ(named("gantry_cr_penalty"), 0);
  s.cr_penalty = 0.125;
  job.record(s);
  all = registry.Collect();
  EXPECT_EQ(type_of(all, "gantry_cr_penalty"), MetricType::Gauge);
  EXPECT_EQ(metric(all, "gantry_cr_penalty").gauge.value, 0.125);
  EXPECT_EQ(metric(all, "gantry_r1_penalty").gauge.value, 0.375);
}

// One real step on a world of 1, recorded the way train() records it: the registry's loss is
// exactly what the reporter wrote to log.jsonl.
TEST(TrainingMetrics, OneStepMatchesTheLog) {
  auto comm = comm::make_mpi_communicator(*g_runtime);
  const Config c = gaussian_config();
  GanStep gan(make_models(c, {1, 1, 1}), c, *comm);
  prometheus::Registry registry;
  monitoring::RankMetrics rank(registry, {0, 0, 1, "h", "cpu"});
  monitoring::JobMetrics job(registry, {"v", "d"});
  constexpr int64_t kBatch = 16;

  const auto step_start = std::chrono::steady_clock::now();
  const torch::Tensor real = torch::randn({kBatch, 1, 1, 1}) * 1.25 + 4;
  gan.d_update(real, latent_rows(1, random::kLatent, 0, 0, kBatch, 4), uniform_rows(1, random::kPenaltyMix, 0, 0, kBatch));
  gan.g_update(latent_rows(1, random::kLatent, 1, 0, kBatch, 4));
  gan.sync_buffers();
  rank.record_step(step_sample(gan, gan.take_times(), step_start, kBatch));

  torch::Tensor stats = gan.take_stats();
  record_nonfinite(rank, stats);
  comm->all_reduce(stats, comm::ReduceOp::kSum);
  LogRecord r = interval_statistics(stats, 1, /*images=*/false);
  r.img_per_s = 100;
  const nlohmann::json logged = logged_line(r);
  record_log_step(&job, gan, *comm, r);

  const Families all = registry.Collect();
  EXPECT_EQ(metric(all, "gantry_loss", "network", "discriminator").gauge.value, logged["d_loss"].get<double>());
  EXPECT_EQ(metric(all, "gantry_loss", "network", "generator").gauge.value, logged["g_loss"].get<double>());
  EXPECT_EQ(metric(all, "gantry_discriminator_score", "input", "real").gauge.value, logged["d_real"].get<double>());
  EXPECT_EQ(metric(all, "gantry_logged_step").gauge.value, 1);
  EXPECT_EQ(metric(all, "gantry_learning_rate", "network", "generator").gauge.value, 1e-3);
  EXPECT_EQ(metric(all, "gantry_learning_rate", "network", "discriminator").gauge.value, 3e-4);
  // The L2 norm of each network's gradients as they are after its update, computed here apart.
  auto l2 = [](const torch::nn::Module& m) {
    std::vector<torch::Tensor> flat;
    for (const auto& p : m.parameters())
      if (p.grad().defined()) flat.push_back(p.grad().detach().to(torch::kFloat64).flatten());
    return torch::cat(flat).norm().item<double>();
  };
  const double g_norm = l2(*gan.models().g), d_norm = l2(*gan.models().d);
  EXPECT_GT(g_norm, 0);
  EXPECT_NEAR(metric(all, "gantry_gradient_norm", "network", "generator").gauge.value, g_norm, 1e-12 * g_norm);
  EXPECT_NEAR(metric(all, "gantry_gradient_norm", "network", "discriminator").gauge.value, d_norm, 1e-12 * d_norm);

  // D's output histogram holds the batch: every output once per input, the sum D(x) summed.
  const auto& h = metric(all, "gantry_discriminator_output", "input", "real").histogram;
  EXPECT_EQ(h.sample_count, static_cast<uint64_t>(kBatch));
  EXPECT_NEAR(h.sample_sum, gan.last_d_real().sum().item<double>(), 1e-5);
  EXPECT_NEAR(h.sample_sum / kBatch, logged["d_real"].get<double>(), 1e-6);
  EXPECT_EQ(metric(all, "gantry_discriminator_output", "input", "fake").histogram.sample_count, static_cast<uint64_t>(kBatch));

  EXPECT_EQ(metric(all, "gantry_steps_total").counter.value, 1);
  EXPECT_EQ(metric(all, "gantry_allreduce_bytes_total", "network", "generator").counter.value, gan.g_bytes_reduced());
  EXPECT_EQ(metric(all, "gantry_allreduce_bytes_total", "network", "discriminator").counter.value, gan.d_bytes_reduced());
  EXPECT_EQ(gan.d_bytes_reduced(), 0);  // one rank: the local gradient is the average, nothing travels
  for (const char* phase : {"d_forward_backward", "g_forward_backward", "optimizer"})
    EXPECT_GT(metric(all, "gantry_step_phase_seconds", "phase", phase).histogram.sample_sum, 0) << phase;
  EXPECT_EQ(metric(all, "gantry_nonfinite_total", "network", "discriminator").counter.value, 0);
}

// A D update with both of D's penalties (R1 on the reals, bCR's consistency) on the small DCGAN: the
// logged penalties are the means the step accumulated, and the gauges hold exactly what was logged.
TEST(TrainingMetrics, PenaltiesMatchTheLog) {
  auto comm = comm::make_mpi_communicator(*g_runtime);
  Config c = gantry::testing::small_dcgan_config("hinge");
  c.model.dcgan.d_norm = "spectral";
  c.train.r1_gamma = 0.5;
  c.train.cr_weight = 2;
  c.train.cr_shift = 3;
  GanStep gan(make_models(c, {1, 28, 28}), c, *comm);
  prometheus::Registry registry;
  monitoring::JobMetrics job(registry, {"v", "d"});
  constexpr int64_t kBatch = 6;
  const torch::Tensor real = latent_rows(7, random::kLatent, 0, 0, kBatch, 784).tanh().view({kBatch, 1, 28, 28});
  const torch::Tensor z = latent_rows(1, random::kLatent, 0, 0, kBatch, 8);
  const torch::Tensor shifts = uniform_table(1, random::kCrShift, 0, 0, kBatch, 2 * kAugmentDraws);
  ASSERT_TRUE(gan.d_update(real, z, uniform_rows(1, random::kPenaltyMix, 0, 0, kBatch), {}, /*r1=*/true, {}, {}, shifts));
  ASSERT_TRUE(gan.g_update(z));
  torch::Tensor stats = gan.take_stats();
  comm->all_reduce(stats, comm::ReduceOp::kSum);
  const LogRecord r = interval_statistics(stats, 1, /*images=*/true);
  const auto s = stats.accessor<double, 1>();
  ASSERT_TRUE(r.r1_penalty && r.cr_penalty);
  EXPECT_EQ(*r.r1_penalty, s[kR1Sum] / s[kR1Count]);
  EXPECT_EQ(*r.cr_penalty, s[kCRSum] / s[kCRCount]);
  EXPECT_GT(*r.r1_penalty, 0);
  EXPECT_GT(*r.cr_penalty, 0);
  EXPECT_FALSE(r.fake_mean);  // images: no 1-D fake statistics

  const nlohmann::json logged = logged_line(r);
  record_log_step(&job, gan, *comm, r);
  const Families all = registry.Collect();
  EXPECT_EQ(metric(all, "gantry_r1_penalty").gauge.value, logged["r1_penalty"].get<double>());
  EXPECT_EQ(metric(all, "gantry_cr_penalty").gauge.value, logged["cr_penalty"].get<double>());
  EXPECT_EQ(logged["cr_penalty"].get<double>(), *r.cr_penalty);
}

TEST(TrainingMetrics, NonFiniteLossesAreCounted) {
  auto comm = comm::make_mpi_communicator(*g_runtime);
  const Config c = gaussian_config();
  GanStep gan(make_models(c, {1, 1, 1}), c, *comm);
  prometheus::Registry registry;
  monitoring::RankMetrics rank(registry, {0, 0, 1, "h", "cpu"});
  const torch::Tensor nan_batch = torch::full({8, 1, 1, 1}, std::nan(""));
  const torch::Tensor z = latent_rows(1, random::kLatent, 0, 0, 8, 4);
  gan.d_update(nan_batch, z, uniform_rows(1, random::kPenaltyMix, 0, 0, 8));  // D's loss: NaN
  gan.d_update(nan_batch, z, uniform_rows(1, random::kPenaltyMix, 0, 0, 8));
  record_nonfinite(rank, gan.take_stats());
  const Families all = registry.Collect();
  EXPECT_EQ(metric(all, "gantry_nonfinite_total", "network", "discriminator").counter.value, 2);
  EXPECT_EQ(metric(all, "gantry_nonfinite_total", "network", "generator").counter.value, 0);
}

TEST(Exporter, ServesMetricsOverHttp) {
  monitoring::Exporter exporter("127.0.0.1", 0);  // 0: a free port
  ASSERT_GT(exporter.port(), 0);
  prometheus::BuildGauge().Name("gantry_test_value").Help("test").Register(exporter.registry()).Add({}).Set(42);
  const std::string ok = http_get(exporter.port(), "/metrics");
  EXPECT_EQ(ok.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << ok;
  EXPECT_NE(ok.find("Content-Type: text/plain; version=0.0.4"), std::string::npos);
  EXPECT_NE(ok.find("\ngantry_test_value 42\n"), std::string::npos) << ok;
  EXPECT_EQ(http_get(exporter.port(), "/").rfind("HTTP/1.1 404", 0), 0u);
  // A second exporter on the same port fails with a message that names the key to change.
  try {
    monitoring::Exporter clash("127.0.0.1", exporter.port());
    FAIL() << "two exporters on one port";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("monitoring.port"), std::string::npos) << e.what();
  }
}

TEST(Discovery, FileSdListsEveryRankWithRunAndRankLabels) {
  EXPECT_EQ(monitoring::scrape_address("0.0.0.0", "node3", 9401), "node3:9401");
  EXPECT_EQ(monitoring::scrape_address("127.0.0.1", "node3", 9400), "127.0.0.1:9400");
  EXPECT_EQ(monitoring::scrape_address("::1", "node3", 9400), "[::1]:9400");
  const fs::path dir = fs::temp_directory_path() / ("gantry-test-file-sd-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string path = (dir / "prometheus-targets.json").string();
  monitoring::write_file_sd(path, "my-run", {"a:9400", "a:9401", "b:9400"});
  std::ifstream in(path);
  const auto groups = nlohmann::json::parse(in);
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  fs::remove_all(dir);
  ASSERT_EQ(groups.size(), 3u);
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(groups[r]["targets"].size(), 1u);
    EXPECT_EQ(groups[r]["labels"]["run"], "my-run");
    EXPECT_EQ(groups[r]["labels"]["rank"], std::to_string(r));
  }
  EXPECT_EQ(groups[2]["targets"][0], "b:9400");
}

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  comm::Runtime runtime(&argc, &argv);
  g_runtime = &runtime;
  return RUN_ALL_TESTS();
}
