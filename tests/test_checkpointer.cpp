// Tests: the Checkpointer's naming and commit at one rank (a world of size 1 is the same code
// path as N; checkpoint_e2e.sh covers N ranks, crashes and resharding). Steps past 10^8 keep
// being found by `latest`, auto and retention; a failure after the commit's rename says where
// auto will resume; an old checkpoint that retention cannot remove leaves the commit standing;
// a re-saved step sets the earlier copy aside; a checkpoint that did not verify does not count
// for retention; the ranks' errors are joined once each.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "comm/communicator.h"
#include "trainer/checkpoint.h"

using namespace gantry;
namespace fs = std::filesystem;

namespace {
comm::Runtime* g_runtime = nullptr;

checkpoint::StateDict state_at(int64_t step) {
  return {{"w", torch::full({3}, static_cast<float>(step))}, {"step", torch::tensor(step, torch::kInt64)}};
}

fs::path fresh_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("gantry-" + name + "-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  return dir;
}

std::vector<std::string> names(const std::vector<std::string>& dirs) {
  std::vector<std::string> out;
  for (const auto& d : dirs) out.push_back(fs::path(d).filename().string());
  return out;
}

// Sets an environment variable for one scope.
struct ScopedEnv {
  std::string name;
  ScopedEnv(const std::string& n, const std::string& value) : name(n) { ::setenv(n.c_str(), value.c_str(), 1); }
  ~ScopedEnv() { ::unsetenv(name.c_str()); }
};
}  // namespace

TEST(Checkpointer, StepsPastEightDigitsAreFoundByLatestAutoAndRetention) {
  const fs::path root = fresh_dir("ckpt-names");
  auto comm = comm::make_mpi_communicator(*g_runtime);
  checkpoint::Checkpointer ckpt(*comm, {root.string(), 2, 0});
  for (int64_t step : {99'999'999LL, 100'000'000LL, 1'234'567'890LL}) ckpt.save(state_at(step), step, {});

  // Retention kept the two newest and removed the eight-digit one: the longer names sort by step.
  EXPECT_EQ(names(checkpoint::list_checkpoints(root.string())),
            (std::vector<std::string>{"step-1234567890", "step-100000000"}));
  EXPECT_EQ(fs::path(checkpoint::read_latest(root.string())).filename(), "step-1234567890");
  std::vector<std::string> warnings;
  const auto loaded = ckpt.load("auto", [&](const std::string& w) { warnings.push_back(w); });
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(loaded->state.at("step").item<int64_t>(), 1'234'567'890);
  EXPECT_TRUE(warnings.empty()) << warnings.front();

  // Names step_dir_name() would not make are not checkpoints: no padding past 8 digits, 8 below.
  fs::create_directories(root / "step-0100000000");
  fs::create_directories(root / "step-1234567");
  EXPECT_EQ(checkpoint::list_checkpoints(root.string()).size(), 2u);
  std::ofstream(root / "latest") << "step-0100000000\n";
  EXPECT_THROW(checkpoint::read_latest(root.string()), checkpoint::CheckpointError);
  fs::remove_all(root);
}

// When checkpoints exist and none of them loads, --resume auto stops with one error rather than
// starting from scratch, which would let retention delete them.
TEST(Checkpointer, AutoRefusesToStartAfreshOverCheckpointsThatDoNotVerify) {
  const fs::path root = fresh_dir("ckpt-none-verify");
  auto comm = comm::make_mpi_communicator(*g_runtime);
  checkpoint::Checkpointer ckpt(*comm, {root.string(), 3, 0});
  for (int64_t step : {10, 20}) ckpt.save(state_at(step), step, {});
  comm->barrier();
  if (comm->rank() == 0)
    for (const auto& dir : checkpoint::list_checkpoints(root.string()))
      std::ofstream(fs::path(dir) / "manifest.json", std::ios::trunc) << "{ not json";
  comm->barrier();
  std::string what;
  try {
    ckpt.load("auto", [](const std::string&) {});
  } catch (const checkpoint::CheckpointError& e) {
    what = e.what();
  }
  EXPECT_NE(what.find("no checkpoint in " + root.string() + " verifies"), std::string::npos) << what;
  EXPECT_NE(what.find("step-00000010"), std::string::npos) << "each failure is named: " << what;
  EXPECT_EQ(checkpoint::list_checkpoints(root.string()).size(), 2u) << "nothing removed";
  comm->barrier();
  if (comm->rank() == 0) fs::remove_all(root);
}

TEST(Checkpointer, RenamedButLatestUnmovedSaysWhereAutoResumes) {
  const fs::path root = fresh_dir("ckpt-latest");
  auto comm = comm::make_mpi_communicator(*g_runtime);
  checkpoint::Checkpointer ckpt(*comm, {root.string(), 3, 0});
  ckpt.save(state_at(1), 1, {});
  fs::create_directories(root / "latest.tmp");  // `latest` cannot be rewritten: its temp file is a folder
  try {
    ckpt.save(state_at(2), 2, {});
    FAIL() << "the save did not report the failed `latest` update";
  } catch (const checkpoint::CheckpointError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("not committed"), std::string::npos) << what;
    EXPECT_NE(what.find("latest.tmp"), std::string::npos) << what;
    EXPECT_NE(what.find("step-00000002 is complete on disk, but `latest` may still name the previous checkpoint"),
              std::string::npos)
        << what;
  }
  // As the message says: latest names step 1, auto resumes there and warns about step 2.
  EXPECT_EQ(fs::path(checkpoint::read_latest(root.string())).filename(), "step-00000001");
  std::vector<std::string> warnings;
  const auto loaded = ckpt.load("auto", [&](const std::string& w) { warnings.push_back(w); });
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(loaded->state.at("step").item<int64_t>(), 1);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("step-00000002"), std::string::npos) << warnings[0];
  fs::remove_all(root);
}

TEST(Checkpointer, AnOldCheckpointRetentionCannotRemoveLeavesTheCommitStanding) {
  const fs::path root = fresh_dir("ckpt-retention");
  auto comm = comm::make_mpi_communicator(*g_runtime);
  checkpoint::Checkpointer ckpt(*comm, {root.string(), 1, 0});
  ckpt.save(state_at(1), 1, {});
  ckpt.save(state_at(2), 2, {});  // removes step 1
  EXPECT_EQ(ckpt.take_warning(), "");
  std::string dir;
  {
    const ScopedEnv fault("GANTRY_CHECKPOINT_FAULT", "retention:0:3");  // removing step 2 fails
    ASSERT_NO_THROW(dir = ckpt.save(state_at(3), 3, {}));
  }
  EXPECT_EQ(fs::path(dir).filename(), "step-00000003");
  const std::string warning = ckpt.take_warning();
  EXPECT_NE(warning.find("step-00000003 committed, but retention could not remove"), std::string::npos) << warning;
  EXPECT_NE(warning.find("step-00000002 (Permission denied; it may be partly removed)"), std::string::npos) << warning;
  EXPECT_EQ(ckpt.take_warning(), "");  // told once
  EXPECT_EQ(names(checkpoint::list_checkpoints(root.string())),
            (std::vector<std::string>{"step-00000003", "step-00000002"}));
  EXPECT_EQ(fs::path(checkpoint::read_latest(root.string())).filename(), "step-00000003");

  // The next commit's retention removes both leftovers, and the async path reports warnings too.
  ckpt.save(state_at(4), 4, {});
  EXPECT_EQ(names(checkpoint::list_checkpoints(root.string())), (std::vector<std::string>{"step-00000004"}));
  {
    const ScopedEnv fault("GANTRY_CHECKPOINT_FAULT", "retention:0:5");
    ckpt.save_async(state_at(5), 5, {});
    EXPECT_EQ(fs::path(ckpt.wait().value()).filename(), "step-00000005");
  }
  EXPECT_NE(ckpt.take_warning().find("step-00000004 (Permission denied;"), std::string::npos);
  fs::remove_all(root);
}

// Re-saving a step that is already on disk (a resume went back past it, or it did not verify)
// moves the earlier copy aside under a name nothing loads, cleans or retains, and says where.
TEST(Checkpointer, ResavingAStepSetsTheEarlierCopyAsideIntact) {
  const fs::path root = fresh_dir("ckpt-resave");
  auto comm = comm::make_mpi_communicator(*g_runtime);
  checkpoint::Checkpointer ckpt(*comm, {root.string(), 3, 0});
  ckpt.save(state_at(1), 1, {});
  ckpt.save(state_at(2), 2, {});
  const std::string first = checkpoint::digest(checkpoint::read_checkpoint((root / "step-00000002").string()).state);
  for (int k = 1; k <= 2; ++k) {
    checkpoint::StateDict other = state_at(2);
    other["w"].fill_(100.0f + k);
    ckpt.save(other, 2, {});
    const std::string warning = ckpt.take_warning();
    EXPECT_NE(warning.find("it is now " + (root / "step-00000002").string() + ".old-" + std::to_string(k)),
              std::string::npos)
        << warning;
    EXPECT_FLOAT_EQ(checkpoint::read_checkpoint((root / "step-00000002").string()).state.at("w")[0].item<float>(),
                    100.0f + k);
  }
  EXPECT_EQ(checkpoint::digest(checkpoint::read_checkpoint((root / "step-00000002.old-1").string()).state), first);
  ckpt.clean_leftovers();
  EXPECT_TRUE(fs::exists(root / "step-00000002.old-1")) << "leftover cleaning removes only .tmp";
  EXPECT_EQ(names(checkpoint::list_checkpoints(root.string())),
            (std::vector<std::string>{"step-00000002", "step-00000001"}));
  fs::remove_all(root);
}

// A checkpoint that --resume auto skipped takes no place among the last K: with K = 3 it would
// have pushed out a good one at once.
TEST(Checkpointer, ACheckpointThatDidNotVerifyTakesNoPlaceAmongTheLastK) {
  const fs::path root = fresh_dir("ckpt-unverified");
  auto comm = comm::make_mpi_communicator(*g_runtime);
  checkpoint::Checkpointer ckpt(*comm, {root.string(), 3, 0});
  for (int64_t step : {10, 20, 30}) ckpt.save(state_at(step), step, {});
  std::ofstream(root / "step-00000030" / "manifest.json", std::ios::trunc) << "{ not json";
  const auto loaded = ckpt.load("auto", [](const std::string&) {});
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(loaded->state.at("step").item<int64_t>(), 20);
  // The resumed run saves every 15 steps: 35, 50, 65. Step 30 now lies below each commit.
  ckpt.save(state_at(35), 35, {});
  EXPECT_EQ(names(checkpoint::list_checkpoints(root.string())),
            (std::vector<std::string>{"step-00000035", "step-00000030", "step-00000020", "step-00000010"}));
  ckpt.save(state_at(50), 50, {});
  EXPECT_EQ(names(checkpoint::list_checkpoints(root.string())),
            (std::vector<std::string>{"step-00000050", "step-00000035", "step-00000030", "step-00000020"}));
  ckpt.save(state_at(65), 65, {});  // three good ones newer: step 30 goes too
  EXPECT_EQ(names(checkpoint::list_checkpoints(root.string())),
            (std::vector<std::string>{"step-00000065", "step-00000050", "step-00000035"}));
  fs::remove_all(root);
}

// Once a damaged step is saved anew, the new one counts like any other.
TEST(Checkpointer, AStepSavedAnewAfterFailingToVerifyCountsAgain) {
  const fs::path root = fresh_dir("ckpt-unverified-resaved");
  auto comm = comm::make_mpi_communicator(*g_runtime);
  checkpoint::Checkpointer ckpt(*comm, {root.string(), 2, 0});
  for (int64_t step : {10, 20}) ckpt.save(state_at(step), step, {});
  std::ofstream(root / "step-00000020" / "manifest.json", std::ios::trunc) << "{ not json";
  ASSERT_EQ(ckpt.load("auto", [](const std::string&) {})->state.at("step").item<int64_t>(), 10);
  ckpt.save(state_at(20), 20, {});
  EXPECT_TRUE(fs::exists(root / "step-00000020.old-1"));
  ckpt.save(state_at(30), 30, {});
  EXPECT_EQ(names(checkpoint::list_checkpoints(root.string())),
            (std::vector<std::string>{"step-00000030", "step-00000020"}));
  fs::remove_all(root);
}

TEST(Checkpointer, RankErrorsAreJoinedOnceEach) {
  using checkpoint::join_rank_errors;
  EXPECT_EQ(join_rank_errors({"", "", ""}), "");
  EXPECT_EQ(join_rank_errors({"disk full", "disk full", "disk full"}), "disk full");
  EXPECT_EQ(join_rank_errors({"disk full"}), "disk full");
  EXPECT_EQ(join_rank_errors({"disk full", "", "disk full"}), "ranks 0, 2: disk full");
  EXPECT_EQ(join_rank_errors({"a", "b", "a", ""}), "ranks 0, 2: a; rank 1: b");
}

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  comm::Runtime runtime(&argc, &argv);
  g_runtime = &runtime;
  return RUN_ALL_TESTS();
}
