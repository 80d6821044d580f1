// Implements: the `gantry` binary and its subcommands. Library code throws; only this file turns
// errors into messages and exit codes (2: a usage or config mistake, 1: any other failure).
#include <malloc.h>

#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "eval/evaluate.h"
#include "gantry_build.h"
#include "trainer/checkpoint.h"
#include "trainer/config.h"
#include "trainer/inspect.h"
#include "trainer/stop_signals.h"
#include "trainer/train.h"

namespace {

constexpr const char* kUsage =
    "usage: gantry train [--config FILE] [--set key=value]... [--resume auto|CKPT] [--print-config]\n"
    "       gantry inspect CKPT [--against CKPT2]\n"
    "       gantry sample --checkpoint CKPT --out grid.png [--n 64] [--seed S] [--generator G] [--class K]\n"
    "       gantry sample --checkpoint CKPT --out interp.png --interpolate [--rows 8 --cols 10]\n"
    "                     [--seed S] [--generator G] [--class K]\n"
    "       gantry eval --checkpoint CKPT --metric parzen|frechet|fid [--data PATH] [--samples 10000]\n"
    "                   [--seed S] [--inception FILE (fid)] [--generator G]\n"
    "       (sample and eval also take --threads N: intra-op threads, default every core; and\n"
    "        --truncation PSI: samples G(PSI z), the truncation trick, default 1: none)\n"
    "\n"
    "  Trains a GAN, data-parallel over every process of the launch (mpirun -np N, srun, or one\n"
    "  process on its own). Keys are dotted, as in the YAML file: --set train.steps=300.\n"
    "\n"
    "  --config FILE    YAML run configuration (see configs/); without it, the built-in defaults\n"
    "                   (a DCGAN on Fashion-MNIST; --print-config shows them)\n"
    "  --set key=value  override one key; may repeat\n"
    "  --resume auto    continue from the newest checkpoint in <run.dir>/checkpoints that verifies\n"
    "                   (none: start at step 0; none that verifies: an error); --resume CKPT:\n"
    "                   that checkpoint, or fail\n"
    "  --print-config   print the resolved configuration and exit\n"
    "\n"
    "  inspect prints a checkpoint's summary and its digest (the same whatever world size saved\n"
    "  it); --against prints the largest difference per tensor group between two checkpoints.\n"
    "\n"
    "  sample writes a grid of G's samples, or rows of G(z) along lines from z0 to z1 (--interpolate).\n"
    "  A conditional G (model.conditional) draws a row per class, or class K only with --class K.\n"
    "  eval measures a checkpoint against the run's held-out or test records (README: Evaluation)\n"
    "  and appends the result to <run.dir>/eval.jsonl. CKPT may be a run directory (its latest).\n"
    "  --generator G    auto (default): G's moving average when the run kept one (train.g_ema_kimg),\n"
    "                   else G; ema or raw choose.\n";

struct TrainArgs {
  std::string config;
  std::vector<std::string> overrides;
  std::string resume;
  bool print_config = false;
};

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

TrainArgs parse_train_args(int argc, char** argv) {
  TrainArgs args;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](const char* flag) -> std::string {
      if (i + 1 >= argc) throw UsageError(std::string(flag) + " needs a value");
      return argv[++i];
    };
    if (a == "--config") args.config = value("--config");
    else if (a.rfind("--config=", 0) == 0) args.config = a.substr(9);
    else if (a == "--set") args.overrides.push_back(value("--set"));
    else if (a.rfind("--set=", 0) == 0) args.overrides.push_back(a.substr(6));
    else if (a == "--resume") args.resume = value("--resume");
    else if (a.rfind("--resume=", 0) == 0) args.resume = a.substr(9);
    else if (a == "--print-config") args.print_config = true;
    else throw UsageError("unknown argument '" + a + "'");
  }
  return args;
}

// `gantry sample` and `gantry eval` flags, into their options.
void parse_eval_args(int argc, char** argv, gantry::eval::SampleOptions& sample, gantry::eval::EvalOptions& eval,
                     int64_t& threads) {
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw UsageError(a + " needs a value");
      return argv[++i];
    };
    // The next argument, converted whole by `convert` (std::stoll, std::stod), or a usage error.
    auto parsed = [&](auto convert, const char* kind) {
      const std::string v = value();
      try {
        size_t used = 0;
        const auto x = convert(v, &used);
        if (used == v.size()) return x;
      } catch (const std::exception&) {
      }
      throw UsageError(a + " needs " + kind + ", got '" + v + "'");
    };
    auto number = [&] {
      return static_cast<int64_t>(parsed([](const std::string& v, size_t* n) { return std::stoll(v, n); }, "an integer"));
    };
    auto real = [&] { return parsed([](const std::string& v, size_t* n) { return std::stod(v, n); }, "a number"); };
    if (a == "--checkpoint") sample.checkpoint = eval.checkpoint = value();
    else if (a == "--seed") sample.seed = eval.seed = static_cast<uint64_t>(number());
    else if (a == "--generator") sample.generator = eval.generator = value();
    else if (a == "--threads") threads = number();
    else if (a == "--truncation") sample.truncation = eval.truncation = real();
    else if (a == "--out" && !std::strcmp(argv[1], "sample")) sample.out = value();
    else if (a == "--n" && !std::strcmp(argv[1], "sample")) sample.n = number();
    else if (a == "--interpolate" && !std::strcmp(argv[1], "sample")) sample.interpolate = true;
    else if (a == "--rows" && !std::strcmp(argv[1], "sample")) sample.rows = number();
    else if (a == "--cols" && !std::strcmp(argv[1], "sample")) sample.cols = number();
    else if (a == "--class" && !std::strcmp(argv[1], "sample")) {
      sample.label = number();
      if (sample.label < 0)
        throw UsageError("--class must be a class index (0 or more), got " + std::to_string(sample.label));
    }
    else if (a == "--metric" && !std::strcmp(argv[1], "eval")) eval.metric = value();
    else if (a == "--data" && !std::strcmp(argv[1], "eval")) eval.data = value();
    else if (a == "--samples" && !std::strcmp(argv[1], "eval")) eval.samples = number();
    else if (a == "--inception" && !std::strcmp(argv[1], "eval")) eval.inception = value();
    else throw UsageError("unknown argument '" + a + "'");
  }
  if (sample.checkpoint.empty()) throw UsageError(std::string(argv[1]) + " needs --checkpoint CKPT");
  if (threads < 0 || threads > gantry::kMaxThreads)
    throw UsageError("--threads must be 0 (every core) to " + std::to_string(gantry::kMaxThreads) + ", got " +
                     std::to_string(threads));
  if (!std::strcmp(argv[1], "eval") && eval.metric.empty()) throw UsageError("eval needs --metric parzen|frechet|fid");
}

}  // namespace

int main(int argc, char** argv) {
  // Keep freed memory in the heap: glibc's trimming and mmap of large blocks cost a GAN step
  // about a quarter of its time in page faults on these machines.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);

  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  for (int i = 2; i < argc; ++i)  // `gantry train --help`, `gantry eval -h`, ...
    if (!std::strcmp(argv[i], "--help") || !std::strcmp(argv[i], "-h")) {
      std::fputs(kUsage, stdout);
      return 0;
    }
  if (!std::strcmp(argv[1], "--version")) {
    std::printf("gantry %s\n", GANTRY_VERSION);
    return 0;
  }
  if (!std::strcmp(argv[1], "inspect")) {
    try {
      if (argc == 3) {
        gantry::inspect_checkpoint(argv[2], std::cout);
      } else if (argc == 5 && !std::strcmp(argv[3], "--against")) {
        gantry::compare_checkpoints(argv[2], argv[4], std::cout);
      } else {
        std::fputs(kUsage, stderr);
        return 2;
      }
      return 0;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "gantry: error: %s\n", e.what());
      return 1;
    }
  }
  if (!std::strcmp(argv[1], "sample") || !std::strcmp(argv[1], "eval")) {
    try {
      gantry::eval::SampleOptions sample;
      gantry::eval::EvalOptions eval;
      int64_t threads = 0;
      parse_eval_args(argc, argv, sample, eval, threads);
      // LibTorch may start with one intra-op thread; one process here has the machine to itself.
      torch::set_num_threads(threads > 0 ? static_cast<int>(threads) : gantry::available_cores());
      if (!std::strcmp(argv[1], "sample")) gantry::eval::run_sample(sample, std::cout);
      else gantry::eval::run_eval(eval, std::cout);
      return 0;
    } catch (const UsageError& e) {
      std::fprintf(stderr, "gantry: %s\n%s", e.what(), kUsage);
      return 2;
    } catch (const gantry::eval::UsageError& e) {
      std::fprintf(stderr, "gantry: %s\n", e.what());
      return 2;
    } catch (const gantry::ConfigError& e) {
      std::fprintf(stderr, "gantry: %s\n", e.what());
      return 2;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "gantry: error: %s\n", e.what());
      return 1;
    }
  }
  if (std::strcmp(argv[1], "train") != 0) {
    std::fprintf(stderr, "gantry: unknown command '%s'\n%s", argv[1], kUsage);
    return 2;
  }

  // Before MPI, LibTorch or OpenMP start a thread: preemption signals go to one thread of their own.
  gantry::route_stop_signals();
  gantry::comm::Runtime runtime(&argc, &argv);
  const bool rank0 = runtime.info().rank == 0;
  try {
    const TrainArgs args = parse_train_args(argc, argv);
    const gantry::Config config = gantry::load_config(args.config, args.overrides);
    if (args.print_config) {
      if (rank0) std::fputs(gantry::to_yaml(config).c_str(), stdout);
      return 0;
    }
    // eval.frechet_every measures with gantry eval's classifier (rank 0 builds it).
    gantry::train(config, runtime, args.resume, [&config] { return gantry::eval::make_frechet_probe(config, std::cout); });
    return 0;
  } catch (const UsageError& e) {
    if (rank0) std::fprintf(stderr, "gantry: %s\n%s", e.what(), kUsage);
    return 2;
  } catch (const gantry::ConfigError& e) {
    if (rank0) std::fprintf(stderr, "gantry: %s\n", e.what());
    return 2;
  } catch (const gantry::checkpoint::CheckpointError& e) {
    // Raised collectively (every rank agrees), so one line from rank 0 says it.
    if (rank0) std::fprintf(stderr, "gantry: checkpoint error: %s\n", e.what());
    return 1;
  } catch (const gantry::JobError& e) {
    // Every rank knows this error; one line from rank 0 says it.
    if (rank0) std::fprintf(stderr, "gantry: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gantry: rank %d: error: %s\n", runtime.info().rank, e.what());
    std::fflush(stderr);
    if (runtime.info().world_size > 1) runtime.abort(1);  // peers would wait forever otherwise
    return 1;
  }
}
