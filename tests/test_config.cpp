// Tests: config parsing and validation. Every kind of mistake names the key and its location.
// Also the default thread count's reading of cgroup CPU quotas (train.threads: 0).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "trainer/config.h"
#include "trainer/train.h"

namespace fs = std::filesystem;
using gantry::Config;
using gantry::ConfigError;
using gantry::load_config;

namespace {

std::string write_yaml(const std::string& name, const std::string& text) {
  const fs::path dir = fs::temp_directory_path() / "gantry-test-config";
  fs::create_directories(dir);
  const fs::path p = dir / name;
  std::ofstream(p) << text;
  return p.string();
}

// The message of the ConfigError that load_config throws, or "" if it throws none.
std::string error_of(const std::string& file, const std::vector<std::string>& overrides = {}) {
  try {
    load_config(file, overrides);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Config, DefaultsAndValuesFromFile) {
  const auto f = write_yaml("ok.yaml",
                            "run:\n  dir: /tmp/x\n  seed: 7\n"
                            "train:\n  steps: 12\n  batch_size: 96\n  loss: hinge\n"
                            "optim:\n  d: {lr: 1.0e-4, beta1: 0.0, beta2: 0.9}\n"
                            "model:\n  arch: mlp\n  mlp:\n    g_hidden: [8, 16]\n");
  const Config c = load_config(f, {});
  EXPECT_EQ(c.run.dir, "/tmp/x");
  EXPECT_EQ(c.run.seed, 7);
  EXPECT_EQ(c.train.steps, 12);
  EXPECT_EQ(c.train.batch_size, 96);
  EXPECT_EQ(c.train.loss, "hinge");
  EXPECT_DOUBLE_EQ(c.optim.d.lr, 1e-4);
  EXPECT_DOUBLE_EQ(c.optim.d.beta1, 0.0);
  EXPECT_DOUBLE_EQ(c.optim.g.lr, 2e-4);  // default
  EXPECT_EQ(c.model.mlp.g_hidden, (std::vector<int64_t>{8, 16}));
  EXPECT_EQ(c.data.path, gantry::kDebianFashionMnistDir);  // fashion-mnist default
  EXPECT_EQ(c.where("train.steps"), f + ":5");
}

TEST(Config, UnknownKeyNamesKeyAndLineAndSuggests) {
  const auto f = write_yaml("unknown.yaml", "train:\n  steps: 3\n  stepz: 4\n");
  const std::string e = error_of(f);
  EXPECT_NE(e.find(f + ":3"), std::string::npos) << e;
  EXPECT_NE(e.find("unknown key 'train.stepz'"), std::string::npos) << e;
  EXPECT_NE(e.find("did you mean 'train.steps'"), std::string::npos) << e;
}

// Found by fuzz_config: a YAML complex key ("? name: x") made yaml-cpp throw past load_config.
TEST(Config, ComplexAndDuplicateKeysNameTheLine) {
  const auto complex = write_yaml("complex.yaml", "run:\n  seed: 1\ndata:\n ? name: x\n");
  std::string e = error_of(complex);
  EXPECT_NE(e.find(complex + ":4: a key must be a plain name, not a mapping"), std::string::npos) << e;
  const auto twice = write_yaml("twice.yaml", "train:\n  steps: 3\n  d_steps: 1\n  steps: 4\n");
  e = error_of(twice);
  EXPECT_NE(e.find(twice + ":4: 'train.steps' is given twice (first at " + twice + ":2)"), std::string::npos) << e;
}

TEST(Config, UnknownSectionIsAnError) {
  const auto f = write_yaml("section.yaml", "run:\n  seed: 1\ntrainer:\n  steps: 3\n");
  const std::string e = error_of(f);
  EXPECT_NE(e.find(f + ":3"), std::string::npos) << e;
  EXPECT_NE(e.find("'trainer'"), std::string::npos) << e;
}

TEST(Config, WrongTypeNamesKeyAndLine) {
  const auto f = write_yaml("type.yaml", "run:\n  seed: 1\ntrain:\n  batch_size: lots\n");
  const std::string e = error_of(f);
  EXPECT_NE(e.find(f + ":4"), std::string::npos) << e;
  EXPECT_NE(e.find("train.batch_size"), std::string::npos) << e;
  EXPECT_NE(e.find("expected an integer, got 'lots'"), std::string::npos) << e;

  const auto g = write_yaml("type2.yaml", "train:\n  steps: 2.5\n");
  EXPECT_NE(error_of(g).find("train.steps: expected an integer, got '2.5'"), std::string::npos);
  const auto h = write_yaml("type3.yaml", "model:\n  mlp:\n    g_hidden: 5\n");
  EXPECT_NE(error_of(h).find(h + ":3: model.mlp.g_hidden: expected a list"), std::string::npos) << error_of(h);
}

TEST(Config, OutOfRangeNamesKeyAndLine) {
  const auto f = write_yaml("range.yaml", "optim:\n  g:\n    lr: -0.1\n");
  const std::string e = error_of(f);
  EXPECT_NE(e.find(f + ":3: optim.g.lr: must be positive"), std::string::npos) << e;
  const auto g = write_yaml("range2.yaml", "train:\n  d_steps: 0\n");
  EXPECT_NE(error_of(g).find(g + ":2: train.d_steps: must be at least 1"), std::string::npos);
  const auto h = write_yaml("range3.yaml", "train:\n  loss: wasserstein\n");
  EXPECT_NE(error_of(h).find("train.loss: must be one of minimax, non-saturating, wgan-gp, hinge"),
            std::string::npos);
  const auto i = write_yaml("range4.yaml", "optim:\n  d:\n    beta2: 1.0\n");
  EXPECT_NE(error_of(i).find(i + ":3: optim.d.beta2: must be in [0, 1)"), std::string::npos) << error_of(i);
  const auto j = write_yaml("range5.yaml", "optim:\n  schedule: cosine\n  decay_start: 1.0\n");
  EXPECT_NE(error_of(j).find(j + ":3: optim.decay_start: must be in [0, 1)"), std::string::npos) << error_of(j);
  const auto k = write_yaml("range6.yaml", "optim:\n  schedule: step\n");
  EXPECT_NE(error_of(k).find(k + ":2: optim.schedule: must be one of constant, linear, cosine"), std::string::npos)
      << error_of(k);
  const auto l = write_yaml("range7.yaml", "optim:\n  final_lr_ratio: 1.5\n");
  EXPECT_NE(error_of(l).find(l + ":2: optim.final_lr_ratio: must be in [0, 1]"), std::string::npos) << error_of(l);
  const auto m = write_yaml("range8.yaml", "optim:\n  decay_start: 0.5\n");  // schedule: constant
  EXPECT_NE(error_of(m).find(m + ":2: optim.decay_start: shapes the decay, and optim.schedule is constant"),
            std::string::npos) << error_of(m);
  // An int64 that would wrap when LibTorch takes it as an int (2^32 + 1 would become 1 thread).
  const auto t = write_yaml("range10.yaml", "train:\n  threads: 4294967297\n");
  EXPECT_NE(error_of(t).find(t + ":2: train.threads: must be in [0, 1024], got 4294967297"), std::string::npos)
      << error_of(t);
  const auto n = write_yaml("range9.yaml", "train:\n  steps: 10\noptim:\n  warmup_steps: 10\n");
  EXPECT_NE(error_of(n).find(n + ":4: optim.warmup_steps: 10 steps of warm-up leave none of the 10"), std::string::npos)
      << error_of(n);
}

TEST(Config, SetOverridesAndItsErrors) {
  const auto f = write_yaml("set.yaml", "train:\n  steps: 3\n");
  const Config c = load_config(f, {"train.steps=300", "model.arch=mlp", "model.mlp.d_hidden=[4, 2]"});
  EXPECT_EQ(c.train.steps, 300);
  EXPECT_EQ(c.model.arch, "mlp");
  EXPECT_EQ(c.model.mlp.d_hidden, (std::vector<int64_t>{4, 2}));
  EXPECT_EQ(c.where("train.steps"), "--set train.steps=300");

  EXPECT_NE(error_of(f, {"train.stpes=3"}).find("--set train.stpes=3: unknown key 'train.stpes' (did you mean 'train.steps'?)"),
            std::string::npos);
  EXPECT_NE(error_of(f, {"train.steps=many"}).find("--set train.steps=many: train.steps: expected an integer"),
            std::string::npos);
  EXPECT_NE(error_of(f, {"train.steps"}).find("expected --set key=value"), std::string::npos);
}

TEST(Config, SyntaxErrorNamesLine) {
  const auto f = write_yaml("syntax.yaml", "train:\n  steps: 3\n  batch_size: [1, 2\n");
  const std::string e = error_of(f);
  EXPECT_NE(e.find(f + ":"), std::string::npos) << e;
  EXPECT_NE(e.find("YAML syntax"), std::string::npos) << e;
  EXPECT_NE(error_of("/nonexistent/run.yaml").find("/nonexistent/run.yaml: cannot open"), std::string::npos);
}

TEST(Config, CrossKeyChecks) {
  const auto f = write_yaml("cross.yaml", "data:\n  name: gaussian1d\nmodel:\n  arch: dcgan\n");
  EXPECT_NE(error_of(f).find(f + ":4: model.arch: gaussian1d data needs model.arch mlp"), std::string::npos)
      << error_of(f);
  const auto g = write_yaml("frechet.yaml", "data:\n  name: images\neval:\n  frechet_every: 100\n");
  EXPECT_NE(error_of(g).find(g + ":4: eval.frechet_every: the Fréchet distance needs a labelled dataset"),
            std::string::npos) << error_of(g);
  const auto h = write_yaml("frechet-ok.yaml", "data:\n  name: mnist\neval:\n  frechet_every: 100\n");
  EXPECT_EQ(load_config(h, {}).eval.frechet_every, 100);
  const auto a = write_yaml("augment.yaml", "data:\n  name: gaussian1d\nmodel:\n  arch: mlp\ntrain:\n  augment: cutout\n");
  EXPECT_NE(error_of(a).find(a + ":6: train.augment: augmentation is for images"), std::string::npos) << error_of(a);
  const auto b = write_yaml("augment-bad.yaml", "train:\n  augment: flip\n");
  EXPECT_NE(error_of(b).find(b + ":2: train.augment: "), std::string::npos) << error_of(b);
  const auto r = write_yaml("r1-wgan.yaml", "train:\n  loss: wgan-gp\n  r1_gamma: 0.1\n");
  EXPECT_NE(error_of(r).find(r + ":3: train.r1_gamma: wgan-gp has its own"), std::string::npos) << error_of(r);
  const auto e = write_yaml("r1-every.yaml", "train:\n  r1_every: 0\n");
  EXPECT_NE(error_of(e).find(e + ":2: train.r1_every: "), std::string::npos) << error_of(e);
  const auto k = write_yaml("topk-zero.yaml", "train:\n  g_topk: 0\n");
  EXPECT_NE(error_of(k).find(k + ":2: train.g_topk: must be in (0, 1], got 0"), std::string::npos) << error_of(k);
  const auto kg = write_yaml("topk-gamma.yaml", "train:\n  g_topk: 0.5\n  g_topk_gamma: 1.5\n");
  EXPECT_NE(error_of(kg).find(kg + ":3: train.g_topk_gamma: must be in [0, 1], got 1.5"), std::string::npos)
      << error_of(kg);
  EXPECT_EQ(load_config(write_yaml("topk-ok.yaml", "train:\n  g_topk: 0.5\n  g_topk_gamma: 0\n"), {}).train.g_topk, 0.5);
  const auto n = write_yaml("dnorm-wgan.yaml", "train:\n  loss: wgan-gp\nmodel:\n  dcgan:\n    d_norm: batch\n");
  EXPECT_NE(error_of(n).find(n + ":5: model.dcgan.d_norm: batch couples"), std::string::npos) << error_of(n);
  const auto l = write_yaml("dnorm-bad.yaml", "model:\n  dcgan:\n    d_norm: layer\n");
  EXPECT_NE(error_of(l).find(l + ":3: model.dcgan.d_norm: must be one of auto, batch, spectral, none, got 'layer'"),
            std::string::npos) << error_of(l);
  const auto p = write_yaml("dropout.yaml", "model:\n  mlp:\n    d_dropout: 1\n");
  EXPECT_NE(error_of(p).find(p + ":3: model.mlp.d_dropout: must be in [0, 1), got 1"), std::string::npos) << error_of(p);
  const auto mo = write_yaml("maxout.yaml", "model:\n  mlp:\n    d_input_dropout: 0.2\n    d_maxout: 0\n");
  EXPECT_NE(error_of(mo).find(mo + ":4: model.mlp.d_maxout: must be 1..64, got 0"), std::string::npos) << error_of(mo);
  const auto ip = write_yaml("input-dropout.yaml", "model:\n  mlp:\n    d_input_dropout: -0.1\n");
  EXPECT_NE(error_of(ip).find(ip + ":3: model.mlp.d_input_dropout: must be in [0, 1), got -0.1"), std::string::npos)
      << error_of(ip);
  const auto cn = write_yaml("class-norm.yaml", "model:\n  dcgan:\n    g_class_norm: true\n");
  EXPECT_NE(error_of(cn).find(cn + ":3: model.dcgan.g_class_norm: a class-conditional BatchNorm needs labels"),
            std::string::npos) << error_of(cn);
  const auto cm = write_yaml("class-norm-mlp.yaml",
                             "model:\n  arch: mlp\n  conditional: true\n  dcgan:\n    g_class_norm: true\n");
  EXPECT_NE(error_of(cm).find(cm + ":5: model.dcgan.g_class_norm: "), std::string::npos) << error_of(cm);
  const auto co = write_yaml("class-norm-ok.yaml", "model:\n  conditional: true\n  dcgan:\n    g_class_norm: true\n");
  EXPECT_TRUE(load_config(co, {}).model.dcgan.g_class_norm);
  const auto cr = write_yaml("cr-shift.yaml", "train:\n  cr_weight: 10\n  cr_shift: 0\n");
  EXPECT_NE(error_of(cr).find(cr + ":3: train.cr_shift: must be 1..8, got 0"), std::string::npos) << error_of(cr);
  const auto cg = write_yaml("cr-gaussian.yaml", "data:\n  name: gaussian1d\nmodel:\n  arch: mlp\ntrain:\n  cr_weight: 1\n");
  EXPECT_NE(error_of(cg).find(cg + ":6: train.cr_weight: consistency under translation is for images"),
            std::string::npos) << error_of(cg);
  const auto db = write_yaml("d-blocks.yaml", "model:\n  dcgan:\n    d_blocks: 9\n");
  EXPECT_NE(error_of(db).find(db + ":3: model.dcgan.d_blocks: must be 0..8, got 9"), std::string::npos) << error_of(db);
  const auto s = write_yaml("dnorm-ok.yaml", "train:\n  loss: wgan-gp\nmodel:\n  dcgan:\n    d_norm: spectral\n");
  EXPECT_EQ(load_config(s, {}).model.dcgan.d_norm, "spectral");
}

TEST(Config, BatchNotDivisibleByWorldNamesKey) {
  const auto f = write_yaml("batch.yaml", "train:\n  batch_size: 95\n");
  const Config c = load_config(f, {});
  EXPECT_NO_THROW(gantry::validate_for_world(c, 1));
  EXPECT_NO_THROW(gantry::validate_for_world(c, 5));
  try {
    gantry::validate_for_world(c, 2);
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find(f + ":2: train.batch_size: 95 is not divisible by the world size 2"),
              std::string::npos)
        << e.what();
  }
}

TEST(Config, ResolvedConfigRoundTrips) {
  const auto f = write_yaml("round.yaml", "train:\n  steps: 5\n  loss: wgan-gp\nmodel:\n  arch: mlp\n");
  const Config a = load_config(f, {"optim.g.lr=0.003"});
  const auto dumped = write_yaml("dumped.yaml", gantry::to_yaml(a));
  const Config b = load_config(dumped, {});
  EXPECT_EQ(gantry::to_yaml(a), gantry::to_yaml(b));
  EXPECT_DOUBLE_EQ(b.optim.g.lr, 0.003);
  EXPECT_EQ(b.train.loss, "wgan-gp");
}

TEST(Config, ShippedConfigsParseAndSwitch) {
  int seen = 0;
  for (const auto& entry : fs::directory_iterator(GANTRY_CONFIG_DIR)) {
    if (entry.path().extension() != ".yaml") continue;
    ++seen;
    const std::string f = entry.path().string();
    EXPECT_NO_THROW(load_config(f, {})) << f;
    if (load_config(f, {}).data.name != "gaussian1d") {
      EXPECT_NO_THROW(load_config(f, {"model.arch=mlp"})) << f;
      EXPECT_NO_THROW(load_config(f, {"model.arch=dcgan"})) << f;
      EXPECT_NO_THROW(load_config(f, {"data.name=mnist"})) << f;
      EXPECT_NO_THROW(load_config(f, {"data.name=cifar10"})) << f;
      EXPECT_EQ(load_config(f, {"data.name=mnist"}).data.path, "data/mnist") << f;
    }
  }
  EXPECT_GE(seen, 2);
}

// train.threads 0 and `--threads 0` take the cores this process may use; a cgroup's CPU quota
// (Docker's --cpus, a Kubernetes limit) caps them. A fake cgroup tree, v2 and v1.
TEST(Threads, CgroupQuotaCapsTheCores) {
  const fs::path root = fs::temp_directory_path() / "gantry-test-cgroup";
  fs::remove_all(root);
  auto put = [&](const fs::path& file, const std::string& text) {
    fs::create_directories((root / file).parent_path());
    std::ofstream(root / file) << text;
  };
  using gantry::cgroup_cpu_limit;
  // v2: no file, "max", then quotas; 1.5 cores round up to 2, and the smallest ancestor wins.
  EXPECT_EQ(cgroup_cpu_limit(root, "0::/\n"), 0);
  put("cpu.max", "max 100000\n");
  EXPECT_EQ(cgroup_cpu_limit(root, "0::/\n"), 0);
  put("job/cpu.max", "150000 100000\n");
  EXPECT_EQ(cgroup_cpu_limit(root, "0::/job\n"), 2);
  put("job/step/cpu.max", "800000 100000\n");
  EXPECT_EQ(cgroup_cpu_limit(root, "0::/job/step\n"), 2);  // the parent's 1.5 cores bind
  put("job/cpu.max", "max 100000\n");
  EXPECT_EQ(cgroup_cpu_limit(root, "0::/job/step\n"), 8);
  EXPECT_EQ(cgroup_cpu_limit(root, "0::/job/step/gone\n"), 8);  // a path the mount lacks: its ancestors
  put("cpu.max", "50000 100000\n");
  EXPECT_EQ(cgroup_cpu_limit(root, "0::/../../etc\n"), 1);  // out of the mount: only its root counts
  put("cpu.max", "garbage\n");
  EXPECT_EQ(cgroup_cpu_limit(root, "0::/\n"), 0);
  fs::remove(root / "cpu.max");
  // v1 (a hybrid host: the v2 line has no cpu.max): the cpu controller's quota, -1 for none.
  const std::string v1 = "4:memory:/x\n2:cpu,cpuacct:/docker/abc\n0::/\n";
  EXPECT_EQ(cgroup_cpu_limit(root, v1), 0);
  put("cpu,cpuacct/cpu.cfs_quota_us", "-1\n");
  put("cpu,cpuacct/cpu.cfs_period_us", "100000\n");
  EXPECT_EQ(cgroup_cpu_limit(root, v1), 0);
  put("cpu,cpuacct/cpu.cfs_quota_us", "300000\n");  // the container's own mount root (the host path is absent)
  EXPECT_EQ(cgroup_cpu_limit(root, v1), 3);
  EXPECT_EQ(cgroup_cpu_limit(root, "not a cgroup line\n"), 0);
  fs::remove_all(root);
  // This process: at least one core, at most its affinity set.
  EXPECT_GE(gantry::available_cores(), 1);
}
